//! `ndc up` on the national samples, as a newcomer runs it: everything comes
//! up, every sample service is Ready and every subscription bound, every
//! bucket answers to its tenant's key and every database to its role; and
//! a second start in the same data dir reuses the data. Also as a newcomer
//! types it: a relative data dir, from a directory only its owner may
//! enter (root's home is 0700), and Garage and PostgreSQL going with
//! `ndc up` when it is killed.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::ResourceExt;
use support::NDC;

const UP_DEADLINE: Duration = Duration::from_secs(600);

fn up(dir: &std::path::Path, ready: &std::path::Path, check: bool) -> Result<std::process::Child> {
    let log = std::fs::File::create(dir.join(if check { "up2.log" } else { "up1.log" }))?;
    let mut cmd = Command::new(NDC);
    cmd.arg("up")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0", "--kube-listen", "127.0.0.1:0"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .arg("--ready-file")
        .arg(ready)
        .env("NDC_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if check {
        cmd.arg("--check");
    }
    Ok(cmd.spawn()?)
}

fn wait_ready(
    child: &mut std::process::Child,
    ready: &std::path::Path,
    log: &std::path::Path,
) -> Result<serde_json::Value> {
    support::wait_up_ready(child, ready, log, UP_DEADLINE)
}

fn secret_values(s: &Secret) -> std::collections::BTreeMap<String, String> {
    let mut out = s.string_data.clone().unwrap_or_default();
    for (k, v) in s.data.clone().unwrap_or_default() {
        out.insert(k, String::from_utf8_lossy(&v.0).into_owned());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndc_up_brings_the_national_samples_up_and_reuses_its_data() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ready = dir.path().join("ready.json");
    let mut child = up(dir.path(), &ready, false)?;
    let summary = wait_ready(&mut child, &ready, &dir.path().join("up1.log"))?;
    let pair = |k: &str| (summary[k][0].as_u64(), summary[k][1].as_u64());
    for k in ["services", "subscriptions", "buckets", "databases"] {
        let (r, n) = pair(k);
        assert!(n.unwrap_or(0) > 0 && r == n, "{k}: {summary}");
    }
    assert_eq!(summary["reused_data"], false);
    assert!(summary["tenants"].as_u64().unwrap_or(0) >= 66, "{summary}");

    // Look with kubectl's kubeconfig, as a user would.
    let kubeconfig =
        kube::config::Kubeconfig::read_from(summary["kubeconfig"].as_str().context("kubeconfig")?)?;
    let kube = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?,
    )?;
    let subs: Api<ndc_crds::ServiceSubscription> = Api::all(kube.clone());
    for s in subs.list(&ListParams::default()).await? {
        let st = s.status.clone().context("subscription status")?;
        assert_eq!(st.phase, "Bound", "{}: {st:?}", s.name_any());
    }
    // Every bucket answers to its tenant's key.
    let buckets: Api<ndc_crds::ObjectBucket> = Api::all(kube.clone());
    let mut checked = 0;
    for b in buckets.list(&ListParams::default()).await? {
        let ns = b.namespace().context("namespace")?;
        let name = b
            .status
            .as_ref()
            .and_then(|s| s.secret_name.clone())
            .context("secret name")?;
        let v = secret_values(
            &Api::<Secret>::namespaced(kube.clone(), &ns)
                .get(&name)
                .await?,
        );
        let creds = ndc_storage::S3Credentials {
            access_key_id: v["access_key_id"].clone(),
            secret_access_key: v["secret_access_key"].clone(),
        };
        let s3 = ndc_storage::s3::client(&v["endpoint"], &v["region"], &creds);
        s3.put_object()
            .bucket(&v["bucket"])
            .key("kiem-tra.txt")
            .body(b"ok".to_vec().into())
            .send()
            .await
            .with_context(|| format!("put into {} of {ns}", v["bucket"]))?;
        s3.get_object()
            .bucket(&v["bucket"])
            .key("kiem-tra.txt")
            .send()
            .await?;
        checked += 1;
    }
    assert!(checked > 0);
    // Every database answers to its role.
    let dbs: Api<ndc_crds::Database> = Api::all(kube.clone());
    let mut checked = 0;
    for d in dbs.list(&ListParams::default()).await? {
        let ns = d.namespace().context("namespace")?;
        let name = d
            .status
            .as_ref()
            .and_then(|s| s.secret_name.clone())
            .context("secret name")?;
        let v = secret_values(
            &Api::<Secret>::namespaced(kube.clone(), &ns)
                .get(&name)
                .await?,
        );
        let (client, conn) = tokio_postgres::Config::new()
            .host(&v["host"])
            .port(v["port"].parse()?)
            .dbname(&v["database"])
            .user(&v["user"])
            .password(&v["password"])
            .connect(tokio_postgres::NoTls)
            .await
            .with_context(|| format!("connecting to {} of {ns}", v["database"]))?;
        tokio::spawn(conn);
        client
            .batch_execute("CREATE TABLE IF NOT EXISTS kiem_tra (x int)")
            .await?;
        checked += 1;
    }
    assert!(checked > 0);

    // Ctrl-C (SIGTERM here) stops everything cleanly.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let status = support::wait_exit(&mut child, Duration::from_secs(60), "stop after SIGTERM")?;
    assert!(
        status.success(),
        "{status}: {}",
        support::tail(&dir.path().join("up1.log"))
    );

    // A second start reuses the data and comes up again.
    std::fs::remove_file(&ready)?;
    let mut again = up(dir.path(), &ready, true)?;
    let second = wait_ready(&mut again, &ready, &dir.path().join("up2.log"))?;
    assert_eq!(second["reused_data"], true, "{second}");
    for k in ["services", "subscriptions", "buckets", "databases"] {
        assert_eq!(second[k][0], second[k][1], "{k}: {second}");
    }
    let status = again.wait()?;
    assert!(
        status.success(),
        "{status}: {}",
        support::tail(&dir.path().join("up2.log"))
    );
    eprintln!(
        "first start {:.1}s, second start {:.1}s",
        summary["seconds"].as_f64().unwrap_or(0.0),
        second["seconds"].as_f64().unwrap_or(0.0)
    );
    Ok(())
}

/// The processes whose parent is `pid`, with their command names.
fn children_of(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head
            .split_once('(')
            .map(|(_, c)| c)
            .unwrap_or("")
            .to_string();
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) && state != "Z" {
            out.push((child, comm));
        }
    }
    out
}

/// Whether `pid` is still running (a zombie waiting for its reaper is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

#[test]
fn ndc_up_takes_a_relative_data_dir_in_a_private_directory_and_its_servers_die_with_it(
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // The working directory is only its owner's, as root's home is.
    let home = tempfile::tempdir()?;
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700))?;
    let base = |check: bool, log: &str| -> Result<Command> {
        let log = std::fs::File::create(home.path().join(log))?;
        let mut cmd = Command::new(NDC);
        cmd.current_dir(home.path())
            .args(["up", "--data-dir", "ndc-data", "--no-samples"])
            .args(["--listen", "127.0.0.1:0", "--kube-listen", "127.0.0.1:0"])
            .args(["--metrics-addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if check {
            cmd.arg("--check");
        }
        Ok(cmd)
    };

    // --check with a relative data dir: up, report, stop, exit 0.
    let mut check = base(true, "check.log")?.spawn()?;
    let status = support::wait_exit(&mut check, UP_DEADLINE, "finish ndc up --check")?;
    let out = support::tail(&home.path().join("check.log"));
    assert!(status.success(), "{status}: {out}");
    assert!(
        out.contains("National Data Centre in a box, up in"),
        "{out}"
    );
    // Logs go to the data dir's log file, not between the progress lines.
    assert!(!out.contains(" INFO "), "{out}");
    assert!(!out.contains('\u{1b}'), "ANSI codes in {out}");
    let logged = std::fs::read_to_string(home.path().join("ndc-data/logs/ndc-up.log"))?;
    assert!(logged.contains(" INFO "), "{logged}");

    // Killed with SIGKILL, it takes Garage and PostgreSQL with it.
    let ready = home.path().join("ready.json");
    let mut up = base(false, "up.log")?
        .arg("--ready-file")
        .arg(&ready)
        .spawn()?;
    wait_ready(&mut up, &ready, &home.path().join("up.log"))?;
    let children = children_of(up.id());
    let names: Vec<&str> = children.iter().map(|(_, c)| c.as_str()).collect();
    assert!(
        names.iter().any(|c| c.starts_with("garage"))
            && names.iter().any(|c| c.starts_with("postgres")),
        "children of ndc up: {children:?}"
    );
    up.kill()?;
    up.wait()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: Vec<_> = children.iter().filter(|(pid, _)| alive(*pid)).collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("still running 60 s after ndc up was killed: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // The data dir is reused by the next start, still relative.
    let mut again = base(true, "again.log")?.spawn()?;
    let status = again.wait()?;
    let out = support::tail(&home.path().join("again.log"));
    assert!(status.success(), "{status}: {out}");
    assert!(out.contains("(data reused)"), "{out}");

    // As root, the postgres user cannot enter this 0700 directory: the
    // cluster lives in a directory of its own, linked from the data dir.
    let link = home.path().join("ndc-data/postgres/cluster");
    if nix::unistd::geteuid().is_root() {
        let cluster = std::fs::read_link(&link).context("the link to the cluster")?;
        assert!(cluster.join("data/PG_VERSION").exists(), "{cluster:?}");
        std::fs::remove_dir_all(&cluster)?;
    }
    Ok(())
}
