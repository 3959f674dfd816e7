//! Real servers on this machine, in a directory of the caller's: one
//! Garage node and one PostgreSQL cluster, each on free ports of
//! 127.0.0.1. The tests use them, and so does a local installation.
//!
//! Each launcher stops its server by `stop()`, or when dropped; the
//! directory is the caller's to remove.
//!
//! This module holds what both launchers share: free ports, the state a
//! restart reuses, waiting for a server to answer, and starting it so that
//! it dies with its parent.

mod garage;
mod postgres;

pub use garage::{find_garage, LocalGarage, GARAGE_VERSION, LOCAL_GARAGE_REGION};
pub use postgres::{LocalPostgres, POSTGRES_HOMES};

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::postgres::find_on_path;
use crate::{Error, Result};

/// How long a server may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `n` distinct free TCP ports on 127.0.0.1 (held together while chosen,
/// so they differ; another process may still take one before we bind it).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::backend("finding a free port on 127.0.0.1", e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::backend("finding a free port on 127.0.0.1", e))
}

/// What a local server was started with, kept in its directory so the
/// next start reuses the same ports and secrets (and, for PostgreSQL, the
/// same cluster): clients and stored endpoints stay valid.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Saved {
    ports: Vec<u16>,
    secrets: Vec<String>,
}

const SAVED: &str = "ndc-local.json";

fn load_saved(dir: &Path, ports: usize, secrets: usize) -> Option<Saved> {
    let text = fs::read_to_string(dir.join(SAVED)).ok()?;
    let s: Saved = serde_json::from_str(&text).ok()?;
    (s.ports.len() == ports && s.secrets.len() == secrets).then_some(s)
}

fn store_saved(dir: &Path, s: &Saved) -> Result<()> {
    let path = dir.join(SAVED);
    let text =
        serde_json::to_string(s).map_err(|e| Error::backend("encoding the local state", e))?;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io_error(format!("writing {}", path.display()), e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| io_error(format!("writing {}", path.display()), e))
}

/// The saved ports if they are all free again, else new free ones.
fn reuse_ports(saved: Option<&Saved>, n: usize) -> Result<Vec<u16>> {
    if let Some(s) = saved {
        let free = s
            .ports
            .iter()
            .all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok());
        if free {
            return Ok(s.ports.clone());
        }
    }
    free_ports(n)
}

/// The last `max` bytes of a log file, for error messages.
fn log_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim().to_string()
}

fn io_error(what: impl Into<String>, e: std::io::Error) -> Error {
    Error::backend(what, e)
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| Error::Config(format!("path {} is not UTF-8", p.display())))
}

/// `path` made absolute against the working directory: the servers change
/// directory at start, so a relative path would no longer point anywhere.
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| io_error(format!("resolving {}", path.display()), e))
}

/// A command for `program`, run as `user` when given, and, when
/// `death_signal` is given, sent that signal by the kernel as soon as the
/// thread that started it exits (`setpriv --pdeathsig`, util-linux): a
/// server started here does not outlive its parent, even one killed with
/// SIGKILL. Start servers from a thread that lives as long as they should
/// (the main thread, or a runtime's worker), not from a short-lived one.
/// Without `setpriv` on PATH, `runuser` changes the user and the server
/// may outlive a parent that is killed.
fn server_command(program: &Path, user: Option<&str>, death_signal: Option<&str>) -> Command {
    match find_on_path("setpriv") {
        Some(setpriv) => {
            let mut c = Command::new(setpriv);
            if let Some(u) = user {
                c.arg(format!("--reuid={u}"))
                    .arg(format!("--regid={u}"))
                    .arg("--init-groups");
            }
            if let Some(sig) = death_signal {
                c.arg(format!("--pdeathsig={sig}"));
            }
            c.arg("--").arg(program);
            c
        }
        None => match user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(u).arg("--").arg(program);
                c
            }
            None => Command::new(program),
        },
    }
}

fn signal(child: &Child, signal: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

/// Sends SIGTERM, waits up to `grace`, then kills. Reaps the child.
fn terminate(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// What a server's log says when a port it was given is taken.
const PORT_TAKEN: &str = "Address already in use";

/// Runs `start` again, three times in all at most, while it fails because
/// a port chosen for the server was taken by another process between the
/// choice and the bind (the next start chooses again).
async fn retrying_port_clashes<T, F, Fut>(what: &str, mut start: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 1;
    loop {
        match start().await {
            Err(e) if attempt < 3 && e.to_string().contains(PORT_TAKEN) => {
                tracing::warn!(
                    attempt,
                    "starting {what}: a port was taken before it could bind it; starting again"
                );
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// Polls `ready` with a growing pause (10 ms to 500 ms) until it says
/// yes, the child exits, its log says a port it was given is taken (Garage
/// goes on running without that API), or [`START_TIMEOUT`] passes.
async fn wait_ready<F, Fut>(what: &str, child: &mut Child, log: &Path, mut ready: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    let mut last = String::from("not ready yet");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::backend(
                format!("starting {what}"),
                format!(
                    "it exited ({status}); its log ends with:\n{}",
                    log_tail(log, 4000)
                ),
            ));
        }
        // Read again once it answers: another of its APIs may have failed.
        let ready_now = match ready().await {
            Ok(true) => true,
            Ok(false) => {
                last = "not ready yet".into();
                false
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        };
        if log_tail(log, 16_000).contains(PORT_TAKEN) {
            return Err(Error::backend(
                format!("starting {what}"),
                format!(
                    "a port it was given is taken ({PORT_TAKEN}); its log ends with:\n{}",
                    log_tail(log, 4000)
                ),
            ));
        }
        if ready_now {
            return Ok(());
        }
        if start.elapsed() > START_TIMEOUT {
            return Err(Error::backend(
                format!("starting {what}"),
                format!(
                    "not ready after {}s ({last}); its log ends with:\n{}",
                    START_TIMEOUT.as_secs(),
                    log_tail(log, 4000)
                ),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_port_taken_is_read_from_the_log_of_a_server_still_running() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        fs::write(
            &log,
            "ERROR garage::server: Admin server exited with error: IO error: Address already in use (os error 98)\n",
        )
        .unwrap();
        let mut child = Command::new("sleep").arg("60").spawn().unwrap();
        let e = wait_ready("X", &mut child, &log, || async { Ok(false) })
            .await
            .unwrap_err()
            .to_string();
        let _ = child.kill();
        let _ = child.wait();
        assert!(e.contains("a port it was given is taken"), "{e}");
    }

    #[tokio::test]
    async fn a_start_is_tried_again_after_a_port_clash_only() {
        let clash = || Error::backend("starting X", format!("its log: {PORT_TAKEN}"));
        // Clashes twice, then starts.
        let calls = AtomicUsize::new(0);
        let r = retrying_port_clashes("X", || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n < 3 {
                    Err(clash())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        // Gives up after three clashes.
        let calls = AtomicUsize::new(0);
        let r: Result<()> = retrying_port_clashes("X", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(clash()) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Any other failure is not tried again.
        let calls = AtomicUsize::new(0);
        let r: Result<()> = retrying_port_clashes("X", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(Error::backend("starting X", "it exited (status 1)")) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn free_ports_are_distinct() {
        let mut p = free_ports(6).unwrap();
        p.sort_unstable();
        p.dedup();
        assert_eq!(p.len(), 6);
    }

    #[test]
    fn free_ports_differ() {
        let p = free_ports(3).unwrap();
        assert!(p[0] != p[1] && p[1] != p[2] && p[0] != p[2]);
    }
}
