//! `ndc-agent` against a real `ndc server`: hosts register, report, expire to
//! NotReady when the agent stops, come back when it returns; cordon and
//! remove through the `ndc` CLI.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ndc`, built beside `ndc-agent` by a workspace build.
fn ndc_bin() -> PathBuf {
    let agent = PathBuf::from(env!("CARGO_BIN_EXE_ndc-agent"));
    let ndc = agent.with_file_name("ndc");
    assert!(
        ndc.is_file(),
        "{} not built: run the workspace's tests",
        ndc.display()
    );
    ndc
}

fn ndc(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(ndc_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ndc");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[derive(Debug, Clone)]
struct Host {
    name: String,
    state: String,
    cordoned: bool,
    simulated: bool,
}

fn hosts(addr: &str) -> Vec<Host> {
    let (code, out, err) = ndc(&["--endpoints", addr, "-o", "json", "node", "list"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON host list");
    v.as_array()
        .expect("an array")
        .iter()
        .map(|h| Host {
            name: h["name"].as_str().unwrap_or_default().to_string(),
            state: h["state"].as_str().unwrap_or_default().to_string(),
            cordoned: h["cordoned"].as_bool().unwrap_or_default(),
            simulated: h["simulated"].as_bool().unwrap_or_default(),
        })
        .collect()
}

use ndc_testkit::wait_until_blocking as wait_until;

fn server(dir: &std::path::Path, host_timeout_ms: &str) -> (Killed, String) {
    let ready = dir.join("ready");
    let log = std::fs::File::create(dir.join("server.log")).expect("log");
    let child = Killed(
        Command::new(ndc_bin())
            .args([
                "server",
                "--id",
                "1",
                "--listen",
                "127.0.0.1:0",
                "--init",
                "--insecure-no-auth",
            ])
            .args(["--host-timeout-ms", host_timeout_ms])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--ready-file")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start ndc server"),
    );
    wait_until("the server", || ready.is_file());
    let addr = std::fs::read_to_string(&ready).expect("address");
    (child, addr)
}

fn agent(addr: &str) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_ndc-agent"))
            .args([
                "--endpoints",
                addr,
                "--insecure-no-token",
                "--simulate",
                "3",
            ])
            .args(["--zone", "hn-1", "--rack", "r01", "--interval-ms", "100"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ndc-agent"),
    )
}

#[test]
fn hosts_register_expire_and_return() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, addr) = server(dir.path(), "800");

    let mut a = agent(&addr);
    wait_until("3 ready simulated hosts", || {
        let h = hosts(&addr);
        h.len() == 3 && h.iter().all(|h| h.state == "ready" && h.simulated)
    });

    // The agent stops (SIGTERM: a clean exit): the leader marks its hosts not ready.
    let pid = a.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success());
    let status = a.0.wait().expect("agent exit");
    assert!(
        status.success(),
        "the agent stops cleanly on SIGTERM: {status}"
    );
    drop(a);
    wait_until("hosts not ready", || {
        hosts(&addr).iter().all(|h| h.state == "not-ready")
    });
    // It comes back: ready again.
    a = agent(&addr);
    wait_until("hosts ready again", || {
        hosts(&addr).iter().all(|h| h.state == "ready")
    });

    let name = hosts(&addr)[0].name.clone();
    let (code, out, err) = ndc(&["--endpoints", &addr, "node", "cordon", &name]);
    assert!(code == 0 && out.contains("cordoned"), "{code} {out} {err}");
    assert!(hosts(&addr).iter().any(|h| h.name == name && h.cordoned));
    let (code, _, _) = ndc(&["--endpoints", &addr, "node", "uncordon", &name]);
    assert_eq!(code, 0);
    assert!(hosts(&addr).iter().all(|h| !h.cordoned));

    // Removed while its agent is stopped, a host is gone.
    drop(a);
    let (code, out, err) = ndc(&["--endpoints", &addr, "node", "remove", &name]);
    assert!(code == 0 && out.contains("removed"), "{code} {out} {err}");
    assert!(hosts(&addr).iter().all(|h| h.name != name));
    let (code, _, err) = ndc(&["--endpoints", &addr, "node", "cordon", &name]);
    assert!(code == 1 && err.contains("not found"), "{code} {err}");

    // Registrations and decisions are in the audit log; heartbeats are not.
    let (code, out, _) = ndc(&["--endpoints", &addr, "audit", "list"]);
    assert_eq!(code, 0);
    assert_eq!(out.matches("node.register").count(), 6, "{out}");
    assert!(
        out.contains("node.not-ready")
            && out.contains("node.cordon")
            && out.contains("node.remove"),
        "{out}"
    );
    assert!(!out.contains("node.heartbeat"), "{out}");
}

/// Capacity and admission against a fixture computed by hand: three
/// simulated hosts of 64 cores, 512 GiB and 8 TiB, overcommit 4×, 1.5×, 1×.
#[test]
fn capacity_and_admission_by_hand() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_server, addr) = server(dir.path(), "60000");
    let _a = agent(&addr);
    wait_until("3 ready hosts", || {
        hosts(&addr).iter().filter(|h| h.state == "ready").count() == 3
    });
    let cli = |args: &[&str]| ndc(&[&["--endpoints", addr.as_str()][..], args].concat());

    // 3 × 64 cores × 4 = 768 cores; 3 × 512 GiB × 1.5 = 2304 GiB; 3 × 8 TiB.
    let at = ["--cpu", "768", "--memory", "2304Gi", "--storage", "24Ti"];
    let (code, _, err) = cli(&[
        &[
            "tenant",
            "create",
            "--id",
            "vn",
            "--name",
            "Việt Nam",
            "--level",
            "central",
        ][..],
        &at,
    ]
    .concat());
    assert_eq!(code, 0, "exactly at the limit is admitted: {err}");
    // One millicore more is refused, naming the resource, the zone and the limit.
    let (code, _, err) = cli(&["tenant", "update", "vn", "--cpu", "768001m"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cpu") && err.contains("all zones") && err.contains("768000"),
        "{err}"
    );
    // Quotas carved from the root need no capacity of their own.
    let (code, _, err) = cli(&[
        "tenant",
        "create",
        "--id",
        "ha-noi",
        "--name",
        "Hà Nội",
        "--level",
        "province",
        "--parent",
        "vn",
        "--code",
        "01",
        "--cpu",
        "100",
        "--memory",
        "100Gi",
    ]);
    assert_eq!(code, 0, "{err}");
    // A second root just above the headroom (which is now zero) is refused.
    let (code, _, err) = cli(&[
        "tenant",
        "create",
        "--id",
        "quoc-hoi",
        "--name",
        "Quốc hội",
        "--level",
        "central",
        "--branch",
        "national-assembly",
        "--cpu",
        "1m",
    ]);
    assert!(code == 1 && err.contains("cpu"), "{code} {err}");

    let report = |args: &[&str]| -> serde_json::Value {
        let (code, out, err) = cli(&[&["-o", "json", "capacity"][..], args].concat());
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).expect("JSON report")
    };
    let r = report(&[]);
    assert_eq!(r["total"]["capacity"]["cpu_millis"], 192_000);
    assert_eq!(r["total"]["grantable"]["cpu_millis"], 768_000);
    assert_eq!(r["total"]["grantable"]["memory_bytes"], 2304u64 << 30);
    assert_eq!(r["granted"]["cpu_millis"], 768_000);
    assert_eq!(r["headroom"]["cpu_millis"], 0);
    assert_eq!(r["headroom"]["storage_bytes"], 0);
    assert_eq!(r["zones"][0]["zone"], "hn-1");
    assert_eq!(r["zones"][0]["ready"], 3);
    assert_eq!(r["largest"][0]["name"], "ha-noi");
    let level = |name: &str| {
        r["by_level"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name).cloned())
    };
    assert_eq!(
        level("province").map(|s| s["quota"]["cpu_millis"].clone()),
        Some(100_000.into())
    );
    assert_eq!(
        level("central").map(|s| s["quota"]["cpu_millis"].clone()),
        Some(768_000.into())
    );

    // A cordoned host no longer counts.
    let name = hosts(&addr)[0].name.clone();
    assert_eq!(cli(&["node", "cordon", &name]).0, 0);
    let r = report(&[]);
    assert_eq!(r["total"]["capacity"]["cpu_millis"], 128_000);
    assert_eq!(r["total"]["grantable"]["cpu_millis"], 512_000);
    assert_eq!(r["total"]["cordoned"], 1);

    // Operators set the ratios; they are replicated and audited.
    let (code, out, err) = cli(&[
        "capacity",
        "overcommit",
        "--cpu",
        "6",
        "--memory",
        "1.5",
        "--storage",
        "1",
    ]);
    assert!(
        code == 0 && out.contains("overcommit set"),
        "{code} {out} {err}"
    );
    let r = report(&[]);
    assert_eq!(r["total"]["grantable"]["cpu_millis"], 768_000);
    assert_eq!(r["overcommit"], "cpu 6.000x, memory 1.500x, storage 1.000x");
    let (code, _, err) = cli(&[
        "capacity",
        "overcommit",
        "--cpu",
        "0.5",
        "--memory",
        "1",
        "--storage",
        "1",
    ]);
    assert!(
        code == 1 && err.contains("between 1 and 100"),
        "{code} {err}"
    );
    let (_, out, _) = cli(&["audit", "list", "--action", "capacity.overcommit"]);
    assert_eq!(out.matches("capacity.overcommit").count(), 1, "{out}");
}
