//! `ndc-agent` against a real `ndc server`: hosts register, report, expire to
//! NotReady when the agent stops, come back when it returns; cordon and
//! remove through the `ndc` CLI.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(25);

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

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
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
    let ready = dir.path().join("ready");
    let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
    let _server = Killed(
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
            .args(["--host-timeout-ms", "800"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
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

    let mut a = agent(&addr);
    wait_until("3 ready simulated hosts", || {
        let h = hosts(&addr);
        h.len() == 3 && h.iter().all(|h| h.state == "ready" && h.simulated)
    });

    // The agent stops: the leader marks its hosts not ready.
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
