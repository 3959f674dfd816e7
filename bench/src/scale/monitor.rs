//! This process's memory and CPU from /proc, the sampling every second
//! with its progress line, and the nodes and clients of a run.

use super::*;

#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Mem {
    pub rss_bytes: u64,
    pub hwm_bytes: u64,
}

pub(super) fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub fn mem() -> Mem {
    Mem {
        rss_bytes: proc_status_kib("VmRSS:") * 1024,
        hwm_bytes: proc_status_kib("VmHWM:") * 1024,
    }
}

/// Resets VmHWM to the current RSS, so each phase reports its own peak.
/// Returns whether the kernel allowed it.
pub(super) fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU seconds this process has used (user + system).
pub(super) fn cpu_seconds() -> f64 {
    // Fields 14 and 15 of /proc/self/stat, after the command in parentheses;
    // clock ticks are 1/100 s on Linux.
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let u: f64 = f.get(11)?.parse().ok()?;
            let k: f64 = f.get(12)?.parse().ok()?;
            Some((u + k) / 100.0)
        })
        .unwrap_or(0.0)
}

/// Bytes under a directory (or of a file).
pub(crate) fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

// ---------------------------------------------------------------------------
// Sampling every second, and the progress line.

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    /// Seconds since the benchmark started.
    pub t: f64,
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
    /// Creates acknowledged so far (tenants, claims, watch writes).
    pub writes: u64,
    /// The leader's applied log index and last snapshot index (0 while it
    /// is restarting).
    pub applied_index: u64,
    pub snapshot_index: u64,
}

pub(super) struct Monitor {
    pub(super) started: Instant,
    /// Seconds between the run's start and this process's.
    pub(super) offset: f64,
    pub(super) writes: AtomicU64,
    pub(super) stop: AtomicBool,
    /// The node whose status is sampled.
    pub(super) leader: Mutex<Option<String>>,
    /// What the progress line says: phase, done, total.
    pub(super) phase: Mutex<(String, u64, u64)>,
    pub(super) samples: Mutex<Vec<Sample>>,
    pub(super) markers: Mutex<Vec<(f64, String)>>,
}

impl Monitor {
    pub(super) fn elapsed(&self) -> f64 {
        self.offset + self.started.elapsed().as_secs_f64()
    }

    pub(super) fn phase(&self, name: &str, total: u64) {
        if let Ok(mut p) = self.phase.lock() {
            *p = (name.to_string(), self.writes.load(Ordering::Relaxed), total);
        }
        if let Ok(mut m) = self.markers.lock() {
            m.push((self.elapsed(), name.to_string()));
        }
        eprintln!("[{:>6.1}s] {name}", self.elapsed());
    }

    pub(super) fn set_leader(&self, addr: Option<String>) {
        if let Ok(mut l) = self.leader.lock() {
            *l = addr;
        }
    }
}

pub(super) async fn status(addr: &str) -> Result<StatusResponse> {
    Ok(ClusterClient::new(ndc_api::client::channel(addr)?)
        .status(StatusRequest {})
        .await?
        .into_inner())
}

pub(super) async fn sample_loop(m: Arc<Monitor>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_print = 0.0;
    let (mut applied, mut snap) = (0, 0);
    while !m.stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let addr = m.leader.lock().ok().and_then(|l| l.clone());
        if let Some(a) = addr {
            if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(1), status(&a)).await {
                applied = s.applied_index;
                snap = s.snapshot_index;
            }
        }
        let t = m.elapsed();
        let mem = mem();
        let writes = m.writes.load(Ordering::Relaxed);
        if let Ok(mut s) = m.samples.lock() {
            s.push(Sample {
                t,
                rss_bytes: mem.rss_bytes,
                cpu_seconds: cpu_seconds(),
                writes,
                applied_index: applied,
                snapshot_index: snap,
            });
        }
        if t - last_print >= 5.0 {
            last_print = t;
            let (name, base, total) = m.phase.lock().map(|p| p.clone()).unwrap_or_default();
            let done = writes.saturating_sub(base);
            let rate = m
                .samples
                .lock()
                .ok()
                .and_then(|s| {
                    let n = s.len();
                    (n > 5).then(|| {
                        (s[n - 1].writes - s[n - 6].writes) as f64 / (s[n - 1].t - s[n - 6].t)
                    })
                })
                .unwrap_or(0.0);
            let progress = if total > 0 {
                format!(
                    "{}/{} ({rate:.0} writes/s) · ",
                    thousands(done),
                    thousands(total)
                )
            } else {
                String::new()
            };
            eprintln!(
                "[{t:>6.1}s]   {name}: {progress}RSS {} · applied index {} · snapshot at {}",
                bytes(mem.rss_bytes),
                thousands(applied),
                thousands(snap)
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Nodes and clients.

pub(super) fn node_config(
    id: u64,
    dir: &Path,
    key: &ndc_server::SecretsKey,
    init: bool,
) -> Result<ndc_server::NodeConfig> {
    let mut c = ndc_server::NodeConfig::new(id, "127.0.0.1:0".parse()?, dir.to_path_buf());
    c.init = init;
    c.auth = ndc_server::Auth::Open;
    c.secrets = Some(key.clone());
    Ok(c)
}

pub(super) async fn start_leader(cfg: ndc_server::NodeConfig) -> Result<ndc_server::RunningNode> {
    let node = ndc_server::start(cfg).await?;
    let deadline = Instant::now() + STARTUP;
    while !node.is_leader() {
        if Instant::now() > deadline {
            bail!("node {} did not become leader", node.id());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(node)
}

pub(super) async fn channels(addr: &str) -> Result<Vec<Channel>> {
    let mut out = Vec::new();
    for _ in 0..CONNECTIONS {
        out.push(
            tonic::transport::Endpoint::from_shared(ndc_api::client::endpoint_uri(addr))?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    Ok(out)
}

/// Runs `n` requests, `concurrency` at a time; returns their latencies.
/// Stops at the first failure.
pub(super) async fn drive<F, Fut>(
    m: &Monitor,
    n: u64,
    concurrency: u64,
    make: F,
) -> Result<(Vec<Duration>, Duration)>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let started = Instant::now();
    let mut lat = Vec::with_capacity(n as usize);
    let mut results = futures::stream::iter(0..n)
        .map(|i| {
            let f = make(i);
            async move {
                let t = Instant::now();
                f.await.map(|()| t.elapsed())
            }
        })
        .buffer_unordered(concurrency as usize);
    while let Some(r) = results.next().await {
        lat.push(r?);
        m.writes.fetch_add(1, Ordering::Relaxed);
    }
    Ok((lat, started.elapsed()))
}
