//! Real `ndc server` processes for tests: temp data dirs, ports from the OS,
//! logs to files, waits on conditions with deadlines.

#![allow(dead_code)]

pub mod tenancy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ndc_api::cluster::cluster_client::ClusterClient;
use ndc_api::cluster::{StatusRequest, StatusResponse};
use ndc_api::kv::kv_client::KvClient;
use ndc_api::kv::{Consistency, ListRequest};

pub const NDC: &str = env!("CARGO_BIN_EXE_ndc");
/// Generous: the machine may be busy building while tests run.
#[allow(unused_imports)]
pub use ndc_testkit::{DEADLINE, POLL};

pub struct Proc {
    pub id: u64,
    pub addr: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: BTreeMap<u64, Proc>,
    /// Extra flags given to every `ndc server`.
    pub flags: Vec<String>,
}

pub enum Start<'a> {
    Init,
    Join(&'a str),
    Bare,
}

#[allow(unused_imports)]
pub use ndc_testkit::wait_for;

/// A node's status; the operator token of the tenancy fixture is sent, so
/// this works on clusters with and without an auth file.
pub async fn status(addr: &str) -> Option<StatusResponse> {
    let ch = ndc_api::client::channel(addr).ok()?;
    let auth = ndc_api::client::Auth::new(Some(tenancy::OPERATOR)).ok()?;
    ClusterClient::with_interceptor(ch, auth)
        .status(StatusRequest {})
        .await
        .ok()
        .map(|r| r.into_inner())
}

/// Every key under `prefix` as node `addr` has it (stale read: that node's own state).
pub async fn keys_on(addr: &str, prefix: &str) -> Result<Vec<String>> {
    let ch = ndc_api::client::channel(addr)?;
    let r = KvClient::new(ch)
        .max_decoding_message_size(64 * 1024 * 1024)
        .list(ListRequest {
            prefix: prefix.into(),
            start_after: String::new(),
            limit: 0,
            consistency: Consistency::Stale as i32,
        })
        .await?
        .into_inner();
    Ok(r.objects.into_iter().map(|o| o.key).collect())
}

impl Cluster {
    pub fn new(flags: &[&str]) -> Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir()?,
            nodes: BTreeMap::new(),
            flags: flags.iter().map(|s| s.to_string()).collect(),
        })
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("n{id}"))
    }

    /// Starts node `id` on `listen` (use "127.0.0.1:0" for a new node) and
    /// waits until it reports ready.
    pub async fn start(&mut self, id: u64, listen: &str, how: Start<'_>) -> Result<String> {
        let data_dir = self.data_dir(id);
        let ready = self.dir.path().join(format!("n{id}.ready"));
        let _ = std::fs::remove_file(&ready);
        let log = self.dir.path().join(format!("n{id}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let mut cmd = Command::new(NDC);
        cmd.arg("server")
            .arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--ready-file")
            .arg(&ready)
            .args(&self.flags)
            .args(if self.flags.iter().any(|f| f == "--auth-file") {
                None
            } else {
                Some("--insecure-no-auth")
            })
            .env("NDC_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        match how {
            Start::Init => {
                cmd.arg("--init");
            }
            Start::Join(via) => {
                cmd.arg("--join").arg(via);
            }
            Start::Bare => {}
        }
        let mut child = cmd.spawn().context("spawning ndc server")?;
        let deadline = Instant::now() + DEADLINE;
        let addr = loop {
            if let Ok(a) = std::fs::read_to_string(&ready) {
                break a;
            }
            if let Some(code) = child.try_wait()? {
                bail!(
                    "node {id} exited with {code} before it was ready; log:\n{}",
                    tail(&log)
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("node {id} not ready in time; log:\n{}", tail(&log));
            }
            tokio::time::sleep(POLL).await;
        };
        self.nodes.insert(
            id,
            Proc {
                id,
                addr: addr.clone(),
                data_dir,
                log,
                child,
            },
        );
        Ok(addr)
    }

    pub fn addr(&self, id: u64) -> String {
        self.nodes[&id].addr.clone()
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(|p| p.addr.clone()).collect()
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill9(&mut self, id: u64) -> Result<String> {
        let mut p = self.nodes.remove(&id).context("no such node")?;
        p.child.kill()?;
        p.child.wait()?;
        Ok(p.addr.clone())
    }

    /// SIGTERM, then wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self, id: u64) -> Result<std::process::ExitStatus> {
        let mut p = self.nodes.remove(&id).context("no such node")?;
        let pid = p.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = p.child.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!(
                    "node {id} did not stop after SIGTERM; log:\n{}",
                    tail(&p.log)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until some node is leader and every running node agrees on it.
    pub async fn leader(&self) -> Result<u64> {
        self.leader_other_than(None).await
    }

    /// Like [`Cluster::leader`], but the leader must not be `old` (a node
    /// that was just stopped, which survivors may still name for a while).
    pub async fn leader_other_than(&self, old: Option<u64>) -> Result<u64> {
        let addrs = self.endpoints();
        wait_for("an agreed leader", || {
            let addrs = addrs.clone();
            async move {
                let mut leader = None;
                for a in &addrs {
                    let s = status(a).await?;
                    let l = s.leader_id?;
                    if leader.is_some_and(|x| x != l) {
                        return None;
                    }
                    leader = Some(l);
                }
                leader.filter(|l| Some(*l) != old)
            }
        })
        .await
    }

    /// Waits until the leader sees exactly these voters and no joint config.
    pub async fn wait_voters(&self, want: &[u64]) -> Result<()> {
        let addrs = self.endpoints();
        let want: Vec<u64> = want.to_vec();
        wait_for(&format!("voters {want:?}"), || {
            let addrs = addrs.clone();
            let want = want.clone();
            async move {
                for a in &addrs {
                    if let Some(s) = status(a).await {
                        if s.state == "leader" && !s.joint {
                            let mut voters: Vec<u64> =
                                s.members.iter().filter(|m| m.voter).map(|m| m.id).collect();
                            voters.sort();
                            return (voters == want).then_some(());
                        }
                    }
                }
                None
            }
        })
        .await
    }

    /// Waits until node `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64) -> Result<()> {
        let addr = self.addr(id);
        wait_for(&format!("node {id} to apply {index}"), || {
            let addr = addr.clone();
            async move {
                status(&addr)
                    .await
                    .filter(|s| s.applied_index >= index)
                    .map(|_| ())
            }
        })
        .await
    }
}

/// Waits for `child` to exit within `limit`; past it, kills it and fails
/// saying it did not `what`.
pub fn wait_exit(
    child: &mut Child,
    limit: Duration,
    what: &str,
) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("it did not {what} within {limit:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until `ndc up` (`child`, logging to `log`) writes its summary to
/// `ready`, and returns it; fails if it exits first or `limit` passes.
pub fn wait_up_ready(
    child: &mut Child,
    ready: &Path,
    log: &Path,
    limit: Duration,
) -> Result<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(ready) {
            if let Ok(v) = serde_json::from_str(&text) {
                return Ok(v);
            }
        }
        if let Some(code) = child.try_wait()? {
            bail!(
                "ndc up exited with {code} before it was ready:\n{}",
                tail(log)
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("ndc up was not ready in time:\n{}", tail(log));
        }
        std::thread::sleep(POLL);
    }
}

pub fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Runs the `ndc` CLI; returns (exit code, stdout, stderr).
pub fn ndc(args: &[&str]) -> Result<(i32, String, String)> {
    let out = Command::new(NDC).args(args).stdin(Stdio::null()).output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}
