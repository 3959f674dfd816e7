//! Starting the clusters under test: `ndc server` and `etcd` processes on
//! 127.0.0.1, in a temp dir, stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a cluster may take to come up on a busy machine.
const STARTUP: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(25);

pub struct Procs {
    children: Vec<Child>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub use ndc_storage::local::free_ports;

/// The `ndc` binary: beside this one (same target dir) or on PATH.
pub fn find_ndc(explicit: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let me = std::env::current_exe()?;
    for dir in me.ancestors().skip(1).take(2) {
        let candidate = dir.join("ndc");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Ok(PathBuf::from("ndc"))
}

fn log_file(dir: &Path, name: &str) -> Result<(std::fs::File, std::fs::File)> {
    let f = std::fs::File::create(dir.join(format!("{name}.log")))?;
    Ok((f.try_clone()?, f))
}

/// Starts a 3-node ndc cluster; returns the processes and the addresses,
/// leader first.
pub async fn ndc_cluster(ndc: &Path, dir: &Path) -> Result<(Procs, Vec<String>)> {
    let mut procs = Procs { children: vec![] };
    let mut addrs: Vec<String> = Vec::new();
    for id in 1..=3u64 {
        let ready = dir.join(format!("ndc-{id}.ready"));
        let (out, err) = log_file(dir, &format!("ndc-{id}"))?;
        let mut cmd = Command::new(ndc);
        cmd.arg("server")
            .args(["--id", &id.to_string(), "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.join(format!("ndc-{id}")))
            .arg("--ready-file")
            .arg(&ready)
            .arg("--insecure-no-auth")
            .env("NDC_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if id == 1 {
            cmd.arg("--init");
        } else {
            cmd.arg("--join").arg(&addrs[0]);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", ndc.display()))?;
        procs.children.push(child);
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Ok(a) = std::fs::read_to_string(&ready) {
                addrs.push(a);
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "ndc node {id} did not start; see {}",
                    dir.join(format!("ndc-{id}.log")).display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok((procs, addrs))
}

/// Starts a 3-node etcd cluster with its default durability (WAL fsync);
/// returns the processes and the client URLs.
pub async fn etcd_cluster(etcd: &Path, dir: &Path) -> Result<(Procs, Vec<String>)> {
    let mut procs = Procs { children: vec![] };
    let url = |p: &u16| format!("http://127.0.0.1:{p}");
    let ports = free_ports(6)?;
    let (peers, clients): (Vec<String>, Vec<String>) = (
        ports[..3].iter().map(url).collect(),
        ports[3..].iter().map(url).collect(),
    );
    let initial: Vec<String> = (0..3).map(|i| format!("e{i}={}", peers[i])).collect();
    let initial = initial.join(",");
    for i in 0..3 {
        let (out, err) = log_file(dir, &format!("etcd-{i}"))?;
        let child = Command::new(etcd)
            .args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(dir.join(format!("etcd-{i}")))
            .args([
                "--listen-peer-urls",
                &peers[i],
                "--initial-advertise-peer-urls",
                &peers[i],
            ])
            .args([
                "--listen-client-urls",
                &clients[i],
                "--advertise-client-urls",
                &clients[i],
            ])
            .args([
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
            ])
            .args([
                "--initial-cluster-token",
                "ndc-bench",
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {} (Debian package etcd-server)", etcd.display()))?;
        procs.children.push(child);
    }
    Ok((procs, clients))
}
