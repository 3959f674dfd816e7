//! `ndc-bench scale`: the control plane alone at national scale.
//!
//! One control-plane node is started in this process (`ndc_server::start`,
//! open auth, a secrets key, no provisioning backends) and filled over gRPC
//! with a national hierarchy of tenants and their bucket and database
//! claims. Then: resident memory, list and watch latency at that size, a
//! snapshot built through the store API, and the time a new node takes to
//! install it and catch up. Everything is written as `report.md`,
//! `figures.json` and SVG charts.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use ndc_api::claims::claims_client::ClaimsClient;
use ndc_api::claims::{create_claim_request, CreateClaimRequest, ListClaimsRequest};
use ndc_api::cluster::cluster_client::ClusterClient;
use ndc_api::cluster::{AddLearnerRequest, StatusRequest, StatusResponse};
use ndc_api::kv::kv_client::KvClient;
use ndc_api::kv::WatchRequest;
use ndc_api::tenants::tenants_client::TenantsClient;
use ndc_api::tenants::{CreateTenantRequest, ListTenantsRequest};
use ndc_tenants::{Branch, Level, Quota, TenantSpec};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use tonic::transport::Channel;

use crate::report::{self, bytes, line_chart, thousands, Series};
use crate::stats::{figures, Figures};

/// The national tenants of the samples: the central bodies and provinces
/// are taken from here (names, codes, branches, labels).
const SAMPLE_TENANTS: &str = include_str!("../../samples/national/tenants.yaml");

/// Tenants and claims at `--scale 1`.
const FULL_TENANTS: f64 = 100_000.0;
const FULL_CLAIMS: f64 = 1_000_000.0;
/// Five-digit commune codes 00001-99999.
const MAX_COMMUNES: u64 = 99_999;
/// Separate HTTP/2 connections the requests are spread over.
const CONNECTIONS: usize = 4;
/// Largest list answer the benchmark accepts.
const MAX_MESSAGE: usize = 1 << 31;
const GIB: u64 = 1 << 30;
const STARTUP: Duration = Duration::from_secs(120);
/// Time after which a list case stops repeating (once it has 3 calls).
const LIST_BUDGET: Duration = Duration::from_secs(60);
/// Claims per page when every claim is listed page by page.
const CLAIMS_PAGE: u32 = 10_000;

#[derive(clap::Args, Debug, Clone)]
#[command(
    after_help = "Examples:\n  ndc-bench scale --scale 0.1\n  ndc-bench scale                      # 100,000 tenants, 1,000,000 claims\n  ndc-bench scale --scale 0.001 --out /tmp/scale"
)]
pub struct ScaleArgs {
    /// Fraction of the national scale (100,000 tenants, 1,000,000 claims).
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Report directory (default: bench/reports/<date>-scale).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Requests in flight while the state is built.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub concurrency: u64,
    /// Calls per list case (fewer, but at least 3, if a case takes over a minute).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub list_calls: u64,
    /// Writes timed from the write to the watcher.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_writes: u64,
    /// Where the nodes keep their data (default: a temp dir, removed after).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Internal: run one stage in this process, on the state in --state-dir.
    #[arg(long, hide = true, value_enum)]
    pub stage: Option<Stage>,
    #[arg(long, hide = true)]
    pub state_dir: Option<PathBuf>,
    /// Internal: when the run started (Unix seconds), so stages share a clock.
    #[arg(long, hide = true, default_value_t = 0.0)]
    pub t0: f64,
    /// Internal: stop when standard input closes, that is when the run that
    /// started this stage is gone (however it was stopped).
    #[arg(long, hide = true)]
    pub until_stdin_closes: bool,
}

/// The parts of a run, each in a process of its own.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum Stage {
    /// Start node 1, build the state, time lists and watches.
    Build,
    /// Build a snapshot, restart node 1, install on node 2.
    Install,
}

// ---------------------------------------------------------------------------
// The tenants and claims to create.

#[derive(serde::Deserialize)]
struct SampleDoc {
    kind: String,
    #[serde(default)]
    spec: Option<serde_json::Value>,
}

/// Syllables of generated commune names: (Vietnamese, ASCII for the id).
const SYLLABLES: [(&str, &str); 32] = [
    ("An", "an"),
    ("Bình", "binh"),
    ("Tân", "tan"),
    ("Phú", "phu"),
    ("Hòa", "hoa"),
    ("Long", "long"),
    ("Thạnh", "thanh"),
    ("Phước", "phuoc"),
    ("Đông", "dong"),
    ("Tây", "tay"),
    ("Nam", "nam"),
    ("Bắc", "bac"),
    ("Trung", "trung"),
    ("Hưng", "hung"),
    ("Thịnh", "thinh"),
    ("Vĩnh", "vinh"),
    ("Quang", "quang"),
    ("Minh", "minh"),
    ("Hải", "hai"),
    ("Sơn", "son"),
    ("Lộc", "loc"),
    ("Phong", "phong"),
    ("Mỹ", "my"),
    ("Thuận", "thuan"),
    ("Hiệp", "hiep"),
    ("Lợi", "loi"),
    ("Đức", "duc"),
    ("Nghĩa", "nghia"),
    ("Khánh", "khanh"),
    ("Thành", "thanh"),
    ("Cẩm", "cam"),
    ("Giang", "giang"),
];

/// The whole state to build, generated by index so it costs no memory.
///
/// Order (parents first): the root `vn`; the central bodies of the samples
/// under it; the provinces of the samples under it; communes with unique
/// 5-digit codes spread evenly over the provinces; and, beyond the 99,999
/// codes there are, central-level agencies under the central bodies.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tenants: u64,
    pub claims: u64,
    central: Vec<TenantSpec>,
    provinces: Vec<TenantSpec>,
    pub communes: u64,
    pub agencies: u64,
    /// Most claims one tenant gets.
    pub per_tenant: u64,
    /// Claims the watch test adds to the root.
    pub watch: u64,
}

impl Plan {
    pub fn new(scale: f64, watch: u64) -> Result<Plan> {
        if !(scale.is_finite() && scale > 0.0) {
            bail!("--scale must be a positive fraction, such as 0.1 or 1");
        }
        let tenants = ((FULL_TENANTS * scale).round() as u64).max(1);
        let claims = (FULL_CLAIMS * scale).round() as u64;
        let docs: Vec<SampleDoc> =
            serde_saphyr::from_multiple(SAMPLE_TENANTS).context("parsing the sample tenants")?;
        let mut central = Vec::new();
        let mut provinces = Vec::new();
        for d in docs.into_iter().filter(|d| d.kind == "Tenant") {
            let Some(spec) = d.spec else { continue };
            let spec: TenantSpec =
                serde_json::from_value(spec).context("a sample tenant's spec")?;
            match spec.level {
                Level::Central => central.push(spec),
                Level::Province => provinces.push(spec),
                Level::Commune => {} // generated instead, with codes of our own
            }
        }
        let mut left = tenants - 1;
        central.truncate(left as usize);
        left -= central.len() as u64;
        provinces.truncate(left as usize);
        left -= provinces.len() as u64;
        let communes = if provinces.is_empty() {
            0
        } else {
            left.min(MAX_COMMUNES)
        };
        left -= communes;
        if left > 0 && central.is_empty() {
            bail!("no central body in the samples to hang agencies under");
        }
        Ok(Plan {
            tenants,
            claims,
            central,
            provinces,
            communes,
            agencies: left,
            per_tenant: claims.div_ceil(tenants),
            watch,
        })
    }

    /// Index ranges created one after the other (each after its parents).
    pub fn waves(&self) -> Vec<(&'static str, std::ops::Range<u64>)> {
        let c = 1 + self.central.len() as u64;
        let p = c + self.provinces.len() as u64;
        vec![
            ("root", 0..1),
            ("central bodies", 1..c),
            ("provinces", c..p),
            ("communes and agencies", p..self.tenants),
        ]
    }

    /// What one tenant with no children may hold: room for its claims.
    fn unit(&self) -> Quota {
        let k = self.per_tenant.max(1);
        Quota {
            cpu_millis: 4_000,
            memory_bytes: 8 * GIB,
            storage_bytes: k * 10 * GIB,
            buckets: k,
            databases: k,
            namespaces: 2,
        }
    }

    fn times(q: Quota, n: u64) -> Quota {
        Quota {
            cpu_millis: q.cpu_millis * n,
            memory_bytes: q.memory_bytes * n,
            storage_bytes: q.storage_bytes * n,
            buckets: q.buckets * n,
            databases: q.databases * n,
            namespaces: q.namespaces * n,
        }
    }

    /// (province index, first commune index) of commune `j`.
    fn commune_province(&self, j: u64) -> usize {
        let n = self.provinces.len() as u64;
        let base = self.communes / n;
        let extra = self.communes % n;
        let p = if j < extra * (base + 1) {
            j / (base + 1)
        } else {
            extra + (j - extra * (base + 1)) / base.max(1)
        };
        p as usize
    }

    fn communes_of(&self, p: usize) -> u64 {
        let n = self.provinces.len() as u64;
        self.communes / n + u64::from((p as u64) < self.communes % n)
    }

    fn agencies_of(&self, b: usize) -> u64 {
        let n = self.central.len() as u64;
        if n == 0 {
            return 0;
        }
        self.agencies / n + u64::from((b as u64) < self.agencies % n)
    }

    /// The spec of tenant `i`.
    pub fn spec(&self, i: u64) -> TenantSpec {
        let unit = self.unit();
        let c = self.central.len() as u64;
        let p = self.provinces.len() as u64;
        if i == 0 {
            let mut quota = Self::times(unit, self.tenants);
            quota.buckets += self.watch;
            quota.storage_bytes += self.watch * GIB;
            return TenantSpec {
                id: "vn".into(),
                display_name: "Cộng hòa Xã hội Chủ nghĩa Việt Nam".into(),
                level: Level::Central,
                branch: Branch::State,
                parent: None,
                admin_code: None,
                security_level: 4,
                labels: Default::default(),
                quota,
                deletion_protection: true,
            };
        }
        if i <= c {
            let b = (i - 1) as usize;
            let mut s = self.central[b].clone();
            s.parent = Some("vn".into());
            s.quota = Self::times(unit, 1 + self.agencies_of(b));
            return s;
        }
        if i <= c + p {
            let k = (i - 1 - c) as usize;
            let mut s = self.provinces[k].clone();
            s.parent = Some("vn".into());
            s.quota = Self::times(unit, 1 + self.communes_of(k));
            return s;
        }
        let j = i - 1 - c - p;
        if j < self.communes {
            let prov = &self.provinces[self.commune_province(j)];
            let code = format!("{:05}", j + 1);
            let (a, a_id) = SYLLABLES[(j % 32) as usize];
            let (b, b_id) = SYLLABLES[((j / 32 + 7 * (j % 5)) % 32) as usize];
            let ward = j.is_multiple_of(4);
            let (kind, kind_id) = if ward {
                ("Phường", "phuong")
            } else {
                ("Xã", "xa")
            };
            return TenantSpec {
                id: format!("{kind_id}-{a_id}-{b_id}-{code}"),
                display_name: format!("{kind} {a} {b}"),
                level: Level::Commune,
                branch: Branch::State,
                parent: Some(prov.id.clone()),
                admin_code: Some(code),
                security_level: 2,
                labels: [(
                    "unit-kind".to_string(),
                    if ward { "ward" } else { "commune" }.to_string(),
                )]
                .into(),
                quota: unit,
                deletion_protection: false,
            };
        }
        let a = j - self.communes;
        let body = &self.central[(a % c) as usize];
        TenantSpec {
            id: format!("co-quan-{:06}", a + 1),
            display_name: format!("Cơ quan trực thuộc {} số {}", body.display_name, a + 1),
            level: Level::Central,
            branch: body.branch,
            parent: Some(body.id.clone()),
            admin_code: None,
            security_level: 3,
            labels: [("body-kind".to_string(), "agency".to_string())].into(),
            quota: unit,
            deletion_protection: false,
        }
    }

    /// The create request of claim `j`: claims go round the tenants, a
    /// bucket then a database, so neighbours in time hit different tenants.
    fn claim(&self, j: u64, ids: &[String]) -> CreateClaimRequest {
        let tenant = ids[(j % self.tenants) as usize].clone();
        let round = j / self.tenants;
        let n = round / 2 + 1;
        let (name, spec) = if round.is_multiple_of(2) {
            (
                format!("bucket-{n}"),
                create_claim_request::Spec::Bucket(ndc_api::claims::BucketSpec {
                    size_bytes: 10 * GIB,
                    versioning: false,
                    retention_days: 0,
                }),
            )
        } else {
            (
                format!("db-{n}"),
                create_claim_request::Spec::Database(ndc_api::claims::DatabaseSpec {
                    size_bytes: 5 * GIB,
                    connection_limit: 0,
                }),
            )
        };
        CreateClaimRequest {
            tenant,
            name,
            spec: Some(spec),
            deletion_policy: String::new(),
        }
    }
}

// ---------------------------------------------------------------------------
// This process: memory and CPU from /proc.

#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Mem {
    pub rss_bytes: u64,
    pub hwm_bytes: u64,
}

fn proc_status_kib(field: &str) -> u64 {
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
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
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

struct Monitor {
    started: Instant,
    /// Seconds between the run's start and this process's.
    offset: f64,
    writes: AtomicU64,
    stop: AtomicBool,
    /// The node whose status is sampled.
    leader: Mutex<Option<String>>,
    /// What the progress line says: phase, done, total.
    phase: Mutex<(String, u64, u64)>,
    samples: Mutex<Vec<Sample>>,
    markers: Mutex<Vec<(f64, String)>>,
}

impl Monitor {
    fn elapsed(&self) -> f64 {
        self.offset + self.started.elapsed().as_secs_f64()
    }

    fn phase(&self, name: &str, total: u64) {
        if let Ok(mut p) = self.phase.lock() {
            *p = (name.to_string(), self.writes.load(Ordering::Relaxed), total);
        }
        if let Ok(mut m) = self.markers.lock() {
            m.push((self.elapsed(), name.to_string()));
        }
        eprintln!("[{:>6.1}s] {name}", self.elapsed());
    }

    fn set_leader(&self, addr: Option<String>) {
        if let Ok(mut l) = self.leader.lock() {
            *l = addr;
        }
    }
}

async fn status(addr: &str) -> Result<StatusResponse> {
    Ok(ClusterClient::new(ndc_api::client::channel(addr)?)
        .status(StatusRequest {})
        .await?
        .into_inner())
}

async fn sample_loop(m: Arc<Monitor>) {
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

fn node_config(
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

async fn start_leader(cfg: ndc_server::NodeConfig) -> Result<ndc_server::RunningNode> {
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

async fn channels(addr: &str) -> Result<Vec<Channel>> {
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
async fn drive<F, Fut>(
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

// ---------------------------------------------------------------------------
// The figures.

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BuildFigures {
    pub what: String,
    pub creates: Figures,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ListFigures {
    pub what: String,
    pub items: u64,
    pub response_bytes: u64,
    pub latency: Figures,
}

/// What the build stage measured: one process that starts node 1, fills
/// it, then times lists and watches.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BuildStage {
    pub creates: Vec<BuildFigures>,
    pub seconds: f64,
    pub writes_per_sec: f64,
    pub cpu_seconds: f64,
    pub log_entries_applied: u64,
    /// Snapshots node 1 built by itself (its policy) during the build, as
    /// seen by sampling its status every second.
    pub policy_snapshots: u64,
    pub mem_after_build: Mem,
    pub hwm_reset_supported: bool,
    pub data_dir_bytes: u64,
    pub lists: Vec<ListFigures>,
    pub list_peak_bytes: u64,
    /// Claims by phase, as the last full claims list saw them (with no
    /// provisioning backend the provisioner marks them Failed).
    pub claim_phases: std::collections::BTreeMap<String, u64>,
    pub watch_delivery: Figures,
    pub watch_write_ack: Figures,
    pub samples: Vec<Sample>,
    pub markers: Vec<(f64, String)>,
}

/// What the install stage measured: a fresh process that builds a snapshot
/// of node 1's data through the store API, restarts node 1 on it, and adds
/// node 2 as a learner.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct InstallStage {
    /// How the snapshot was built.
    pub snapshot_method: String,
    /// `ndc_store::open` on the data (RocksDB open with WAL replay, and
    /// the tenants loaded into memory).
    pub open_store_seconds: f64,
    pub snapshot_build_seconds: f64,
    pub snapshot_bytes: u64,
    pub snapshot_file_bytes: u64,
    pub snapshot_last_log_index: u64,
    pub rss_store_open_bytes: u64,
    pub snapshot_peak_bytes: u64,
    /// Node 1 started again on the state, until it is leader.
    pub leader_restart_seconds: f64,
    /// The restarted node left alone for IDLE: its memory and CPU.
    pub idle_seconds: f64,
    pub idle_mem: Mem,
    pub idle_cpu_percent: f64,
    /// Whether the restarted leader stopped writing (no applied entry for
    /// QUIET_FOR seconds) before node 2 was added, how long that took, and
    /// the entries it wrote by itself meanwhile (provisioner reports).
    pub quiet: bool,
    pub quiet_wait_seconds: f64,
    pub entries_written_after_restart: u64,
    pub quiet_mem: Mem,
    /// The AddLearner call.
    pub add_learner_seconds: f64,
    /// From the AddLearner call until the learner's applied index reached
    /// the leader's.
    pub caught_up_seconds: f64,
    pub learner_snapshot_index: u64,
    pub learner_applied_index: u64,
    pub leader_applied_index: u64,
    /// Tenants the learner lists from its own state afterwards.
    pub learner_tenants: u64,
    /// Both nodes in this process after the install.
    pub mem_after_install: Mem,
    pub samples: Vec<Sample>,
    pub markers: Vec<(f64, String)>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Output {
    pub date: String,
    pub profile: &'static str,
    pub scale: f64,
    pub tenants: u64,
    pub claims: u64,
    pub central_bodies: u64,
    pub provinces: u64,
    pub communes: u64,
    pub agencies: u64,
    pub concurrency: u64,
    pub node_config: serde_json::Value,
    pub build: BuildStage,
    pub install: InstallStage,
}

/// How long the restarted node is left alone before its memory and CPU
/// are read.
const IDLE: Duration = Duration::from_secs(15);
/// Seconds without a new entry after which the leader counts as quiet, and
/// the longest wait for it.
const QUIET_FOR: u32 = 10;
const QUIET_WAIT: Duration = Duration::from_secs(900);

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------

/// Runs the benchmark: each stage in a child process of its own (so each
/// reports its own memory, and the build's garbage does not crowd the
/// install), then writes the report.
pub async fn run(args: ScaleArgs) -> Result<()> {
    if let Some(stage) = args.stage {
        return stage_main(args, stage).await;
    }
    let plan = Plan::new(args.scale, args.watch_writes)?;
    let out_dir = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("reports")
            .join(format!("{}-scale", report::today()))
    });
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let work = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir()?,
    };
    eprintln!(
        "ndc-bench scale {}: {} tenants ({} central bodies, {} provinces, {} communes, {} agencies), {} claims, {} in flight; nodes in {}",
        args.scale,
        thousands(plan.tenants),
        plan.central.len() + 1,
        plan.provinces.len(),
        thousands(plan.communes),
        thousands(plan.agencies),
        thousands(plan.claims),
        args.concurrency,
        work.path().display()
    );
    ndc_server::SecretsKey::create_file(&work.path().join("secrets.key"))?;
    let defaults = node_config(
        1,
        work.path(),
        &ndc_server::SecretsKey::load(&work.path().join("secrets.key"))
            .map_err(anyhow::Error::msg)?,
        true,
    )?;
    let t0 = unix_now();
    let me = std::env::current_exe()?;
    for stage in ["build", "install"] {
        let mut child = tokio::process::Command::new(&me)
            .arg("scale")
            .args(["--scale", &args.scale.to_string()])
            .args(["--concurrency", &args.concurrency.to_string()])
            .args(["--list-calls", &args.list_calls.to_string()])
            .args(["--watch-writes", &args.watch_writes.to_string()])
            .args(["--stage", stage, "--t0", &t0.to_string()])
            .arg("--state-dir")
            .arg(work.path())
            .arg("--until-stdin-closes")
            // The stage stops when this end closes: when this process ends,
            // even by a signal that runs no clean-up.
            .stdin(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the {stage} stage ({})", me.display()))?;
        // Held while waiting (`wait` would close it if left in `child`).
        let _pipe = child.stdin.take();
        let status = child
            .wait()
            .await
            .with_context(|| format!("waiting for the {stage} stage"))?;
        if !status.success() {
            bail!("the {stage} stage failed ({status})");
        }
    }
    let read = |name: &str| -> Result<serde_json::Value> {
        let p = work.path().join(format!("{name}.json"));
        serde_json::from_slice(
            &std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("parsing {}", p.display()))
    };
    let out = Output {
        date: report::today(),
        profile: if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        },
        scale: args.scale,
        tenants: plan.tenants,
        claims: plan.claims,
        central_bodies: plan.central.len() as u64 + 1,
        provinces: plan.provinces.len() as u64,
        communes: plan.communes,
        agencies: plan.agencies,
        concurrency: args.concurrency,
        node_config: serde_json::json!({
            "snapshot_every": defaults.snapshot_every,
            "keep_logs": defaults.keep_logs,
            "history": defaults.history,
            "provisioning_backends": "none",
        }),
        build: serde_json::from_value(read("build")?)?,
        install: serde_json::from_value(read("install")?)?,
    };
    write_outputs(&out_dir, &out)?;
    eprintln!("report: {}", out_dir.join("report.md").display());
    Ok(())
}

/// One stage, in this process: samples every second meanwhile and writes
/// its figures to `<state dir>/<stage>.json`.
async fn stage_main(args: ScaleArgs, stage: Stage) -> Result<()> {
    let plan = Plan::new(args.scale, args.watch_writes)?;
    let dir = args
        .state_dir
        .clone()
        .context("a stage needs --state-dir")?;
    let key = ndc_server::SecretsKey::load(&dir.join("secrets.key")).map_err(anyhow::Error::msg)?;
    if args.until_stdin_closes {
        std::thread::spawn(|| {
            use std::io::Read;
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            eprintln!("the benchmark that started this stage is gone: stopping");
            std::process::exit(1);
        });
    }
    let m = Arc::new(Monitor {
        started: Instant::now(),
        offset: if args.t0 > 0.0 {
            (unix_now() - args.t0).max(0.0)
        } else {
            0.0
        },
        writes: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        leader: Mutex::new(None),
        phase: Mutex::new(Default::default()),
        samples: Mutex::new(Vec::new()),
        markers: Mutex::new(Vec::new()),
    });
    let sampler = tokio::spawn(sample_loop(m.clone()));
    let taken = |m: &Monitor| {
        (
            m.samples.lock().map(|s| s.clone()).unwrap_or_default(),
            m.markers.lock().map(|s| s.clone()).unwrap_or_default(),
        )
    };
    let (name, json) = match stage {
        Stage::Build => {
            let r = stage_build(&args, &plan, &m, &key, &dir).await;
            m.stop.store(true, Ordering::Relaxed);
            let _ = sampler.await;
            let mut r = r?;
            (r.samples, r.markers) = taken(&m);
            ("build", serde_json::to_vec_pretty(&r)?)
        }
        Stage::Install => {
            let r = stage_install(&m, &key, &dir).await;
            m.stop.store(true, Ordering::Relaxed);
            let _ = sampler.await;
            let mut r = r?;
            (r.samples, r.markers) = taken(&m);
            ("install", serde_json::to_vec_pretty(&r)?)
        }
    };
    std::fs::write(dir.join(format!("{name}.json")), json)?;
    // Exit now: a task the node started may still be busy (a provisioner
    // pass over every claim does not yield), and the runtime would wait for
    // it. Everything acknowledged is already in the node's synced WAL.
    std::process::exit(0)
}

async fn stage_build(
    args: &ScaleArgs,
    plan: &Plan,
    m: &Arc<Monitor>,
    key: &ndc_server::SecretsKey,
    dir: &Path,
) -> Result<BuildStage> {
    let dir1 = dir.join("node-1");
    let cfg1 = node_config(1, &dir1, key, true)?;
    let hwm_reset = reset_peak();

    // 1. Build the state.
    m.phase("start node 1", 0);
    let node1 = start_leader(cfg1.clone()).await?;
    m.set_leader(Some(node1.addr.clone()));
    let chans = channels(&node1.addr).await?;
    let build_started = Instant::now();
    let cpu0 = cpu_seconds();
    let applied0 = status(&node1.addr).await?.applied_index;
    let mut build = Vec::new();
    let mut tenant_lat = Vec::new();
    let mut tenant_time = Duration::ZERO;
    for (name, range) in plan.waves() {
        if range.is_empty() {
            continue;
        }
        m.phase(&format!("tenants: {name}"), range.end - range.start);
        let (lat, took) = drive(m, range.end - range.start, args.concurrency, |i| {
            let mut c = TenantsClient::new(chans[i as usize % CONNECTIONS].clone());
            let spec = ndc_api::convert::spec_to_pb(&plan.spec(range.start + i));
            async move {
                c.create(CreateTenantRequest {
                    spec: Some(spec),
                    decision: String::new(),
                })
                .await
                .context("creating a tenant")?;
                Ok(())
            }
        })
        .await?;
        tenant_lat.extend(lat);
        tenant_time += took;
    }
    build.push(BuildFigures {
        what: "tenants".into(),
        creates: figures(tenant_lat, 0, tenant_time),
    });

    let ids: Vec<String> = (0..plan.tenants).map(|i| plan.spec(i).id).collect();
    m.phase("claims", plan.claims);
    let (lat, took) = drive(m, plan.claims, args.concurrency, |j| {
        let mut c = ClaimsClient::new(chans[j as usize % CONNECTIONS].clone());
        let req = plan.claim(j, &ids);
        async move {
            c.create(req).await.context("creating a claim")?;
            Ok(())
        }
    })
    .await?;
    build.push(BuildFigures {
        what: "claims".into(),
        creates: figures(lat, 0, took),
    });
    drop(ids);
    let build_seconds = build_started.elapsed().as_secs_f64();
    let build_cpu_seconds = cpu_seconds() - cpu0;
    let st = status(&node1.addr).await?;
    let mem_after_build = mem();
    let data_dir_bytes_after_build = dir_size(&dir1);
    let writes = plan.tenants + plan.claims;
    eprintln!(
        "built: {} writes in {build_seconds:.1} s ({:.0}/s), RSS {} (peak {}), {} on disk",
        thousands(writes),
        writes as f64 / build_seconds,
        bytes(mem_after_build.rss_bytes),
        bytes(mem_after_build.hwm_bytes),
        bytes(data_dir_bytes_after_build)
    );
    let policy_snapshots = {
        let s = m.samples.lock().map(|s| s.clone()).unwrap_or_default();
        let mut n = 0;
        let mut last = 0;
        for x in s {
            if x.snapshot_index > last {
                if last > 0 || x.snapshot_index > 0 {
                    n += 1;
                }
                last = x.snapshot_index;
            }
        }
        n
    };

    // 2. Lists at this size.
    reset_peak();
    m.phase("lists", 0);
    let big = |ch: &Channel| {
        (
            TenantsClient::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE),
            ClaimsClient::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE),
        )
    };
    let (tc, cc) = big(&chans[0]);
    let one_province = plan
        .provinces
        .first()
        .map(|p| p.id.clone())
        .unwrap_or_else(|| "vn".into());
    let one_tenant = plan.spec(plan.tenants - 1).id;
    let mut lists = Vec::new();
    let phases = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    type Call<'a> = Box<
        dyn FnMut() -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<(u64, u64)>> + Send + 'a>,
            > + 'a,
    >;
    let cases: Vec<(String, Call<'_>)> = vec![
        (
            "tenants: all".into(),
            Box::new(|| {
                let mut c = tc.clone();
                Box::pin(async move {
                    let r = c.list(ListTenantsRequest::default()).await?.into_inner();
                    Ok((
                        r.tenants.len() as u64,
                        prost::Message::encoded_len(&r) as u64,
                    ))
                })
            }),
        ),
        (
            format!("tenants: children of {one_province}"),
            Box::new(|| {
                let mut c = tc.clone();
                let parent = one_province.clone();
                Box::pin(async move {
                    let r = c
                        .list(ListTenantsRequest {
                            parent,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    Ok((
                        r.tenants.len() as u64,
                        prost::Message::encoded_len(&r) as u64,
                    ))
                })
            }),
        ),
        (
            format!("claims: one tenant ({one_tenant})"),
            Box::new(|| {
                let mut c = cc.clone();
                let tenant = one_tenant.clone();
                Box::pin(async move {
                    let r = c
                        .list(ListClaimsRequest {
                            tenant,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    Ok((
                        r.claims.len() as u64,
                        prost::Message::encoded_len(&r) as u64,
                    ))
                })
            }),
        ),
        (
            format!("claims: all, in pages of {}", thousands(CLAIMS_PAGE as u64)),
            Box::new(|| {
                let mut c = cc.clone();
                Box::pin(async move {
                    let (mut items, mut size) = (0u64, 0u64);
                    let mut start_after = String::new();
                    loop {
                        let r = c
                            .list(ListClaimsRequest {
                                limit: CLAIMS_PAGE,
                                start_after,
                                ..Default::default()
                            })
                            .await?
                            .into_inner();
                        items += r.claims.len() as u64;
                        size += prost::Message::encoded_len(&r) as u64;
                        if r.next_after.is_empty() {
                            break;
                        }
                        start_after = r.next_after;
                    }
                    Ok((items, size))
                })
            }),
        ),
        (
            "claims: all, in one answer".into(),
            Box::new(|| {
                let mut c = cc.clone();
                let phases = phases.clone();
                Box::pin(async move {
                    let r = c.list(ListClaimsRequest::default()).await?.into_inner();
                    let mut count = std::collections::BTreeMap::new();
                    for claim in &r.claims {
                        *count.entry(claim.phase.clone()).or_insert(0u64) += 1;
                    }
                    if let Ok(mut p) = phases.lock() {
                        *p = count;
                    }
                    Ok((
                        r.claims.len() as u64,
                        prost::Message::encoded_len(&r) as u64,
                    ))
                })
            }),
        ),
    ];
    for (what, mut call) in cases {
        let started = Instant::now();
        let mut lat = Vec::new();
        let (mut items, mut size) = (0, 0);
        // Slow cases stop after LIST_BUDGET, with at least 3 calls.
        while (lat.len() as u64) < args.list_calls
            && (lat.len() < 3 || started.elapsed() < LIST_BUDGET)
        {
            let t = Instant::now();
            (items, size) = call().await.with_context(|| format!("list {what}"))?;
            lat.push(t.elapsed());
        }
        let f = figures(lat, 0, started.elapsed());
        eprintln!(
            "  {what}: {} items, {}, p50 {:.1} ms, p99 {:.1} ms",
            thousands(items),
            bytes(size),
            f.p50_ms,
            f.p99_ms
        );
        lists.push(ListFigures {
            what,
            items,
            response_bytes: size,
            latency: f,
        });
    }
    let list_peak_bytes = mem().hwm_bytes;
    let claim_phases = phases.lock().map(|p| p.clone()).unwrap_or_default();
    let mut cc = ClaimsClient::new(chans[0].clone());

    // 3. Watch latency: from a claim's create to a watcher on the claims.
    m.phase("watch", args.watch_writes);
    let mut kv = KvClient::new(chans[1].clone());
    let mut stream = kv
        .watch(WatchRequest {
            prefix: ndc_store::claims::CLAIMS_PREFIX.into(),
            start_revision: 0,
        })
        .await?
        .into_inner();
    // The first message says the watch is established.
    stream.message().await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watcher = tokio::spawn(async move {
        while let Ok(Some(msg)) = stream.message().await {
            let at = Instant::now();
            for e in msg.events {
                if let Some(o) = e.object {
                    if tx.send((o.key, at)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let (mut delivery, mut ack) = (Vec::new(), Vec::new());
    let watch_started = Instant::now();
    for i in 0..args.watch_writes {
        let t = Instant::now();
        let r = cc
            .create(CreateClaimRequest {
                tenant: "vn".into(),
                name: format!("watch-{}", i + 1),
                spec: Some(create_claim_request::Spec::Bucket(
                    ndc_api::claims::BucketSpec {
                        size_bytes: GIB,
                        versioning: false,
                        retention_days: 0,
                    },
                )),
                deletion_policy: String::new(),
            })
            .await
            .context("a watched write")?
            .into_inner();
        ack.push(t.elapsed());
        m.writes.fetch_add(1, Ordering::Relaxed);
        let uid = r.claim.map(|c| c.uid).unwrap_or_default();
        let want = ndc_store::claims::claim_key(&uid);
        let seen = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some((k, at)) = rx.recv().await {
                if k == want {
                    return Some(at);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .context("the watcher did not see a write within 30 s")?;
        delivery.push(seen.saturating_duration_since(t));
    }
    let watch_took = watch_started.elapsed();
    watcher.abort();
    let watch_delivery = figures(delivery, 0, watch_took);
    let watch_write_ack = figures(ack, 0, watch_took);
    eprintln!(
        "  watch: delivery p50 {:.2} ms, p99 {:.2} ms (write acknowledged p50 {:.2} ms)",
        watch_delivery.p50_ms, watch_delivery.p99_ms, watch_write_ack.p50_ms
    );
    drop(cc);
    drop(chans);

    m.phase("stop node 1", 0);
    m.set_leader(None);
    node1.shutdown().await?;
    let build_writes_per_sec = (plan.tenants + plan.claims) as f64 / build_seconds;
    Ok(BuildStage {
        creates: build,
        seconds: build_seconds,
        writes_per_sec: build_writes_per_sec,
        cpu_seconds: build_cpu_seconds,
        log_entries_applied: st.applied_index.saturating_sub(applied0),
        policy_snapshots,
        mem_after_build,
        hwm_reset_supported: hwm_reset,
        data_dir_bytes: data_dir_bytes_after_build,
        lists,
        list_peak_bytes,
        claim_phases,
        watch_delivery,
        watch_write_ack,
        samples: Vec::new(),
        markers: Vec::new(),
    })
}

async fn stage_install(
    m: &Arc<Monitor>,
    key: &ndc_server::SecretsKey,
    dir: &Path,
) -> Result<InstallStage> {
    let dir1 = dir.join("node-1");
    let cfg1 = node_config(1, &dir1, key, true)?;

    // A snapshot, built through the store API on node 1's data.
    m.phase("snapshot", 0);
    reset_peak();
    let t = Instant::now();
    let mut store = ndc_store::open(&dir1, cfg1.history).context("opening node 1's store")?;
    let open_store_seconds = t.elapsed().as_secs_f64();
    let rss_store_open_bytes = mem().rss_bytes;
    let t = Instant::now();
    let mut builder = store.state_machine.get_snapshot_builder().await;
    let snap = builder
        .build_snapshot()
        .await
        .map_err(|e| anyhow::anyhow!("building a snapshot: {e}"))?;
    let snapshot_build_seconds = t.elapsed().as_secs_f64();
    let snapshot_bytes = snap
        .snapshot
        .metadata()
        .await
        .context("reading the snapshot's size")?
        .len();
    let snapshot_last_log_index = snap.meta.last_log_id.map(|l| l.index).unwrap_or(0);
    let snapshot_peak_bytes = mem().hwm_bytes;
    // The meta file and the bodies on disk (the current one, normally).
    let snapshot_file_bytes = std::fs::metadata(dir1.join("snapshot.meta"))
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::read_dir(dir1.join("snapshots"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum::<u64>()
            })
            .unwrap_or(0);
    eprintln!(
        "  snapshot: {} built in {snapshot_build_seconds:.1} s (store opened in {open_store_seconds:.1} s), up to index {}",
        bytes(snapshot_bytes),
        thousands(snapshot_last_log_index)
    );
    drop(snap);
    drop(builder);
    drop(store);

    // Node 1 again, on that state; left alone for a while.
    m.phase("restart node 1", 0);
    let t = Instant::now();
    let node1 = loop {
        match start_leader(cfg1.clone()).await {
            Ok(n) => break n,
            // The store's last handles may still be closing.
            Err(_) if t.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("restarting node 1"),
        }
    };
    let leader_restart_seconds = t.elapsed().as_secs_f64();
    m.set_leader(Some(node1.addr.clone()));
    reset_peak();
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    tokio::time::sleep(IDLE).await;
    let idle_seconds = t.elapsed().as_secs_f64();
    let idle_cpu_percent = (cpu_seconds() - cpu0) / idle_seconds * 100.0;
    let idle_mem = mem();
    eprintln!(
        "  restarted in {leader_restart_seconds:.1} s; alone for {idle_seconds:.0} s: RSS {} (peak {}), CPU {idle_cpu_percent:.0} % of a core",
        bytes(idle_mem.rss_bytes),
        bytes(idle_mem.hwm_bytes)
    );

    // The restarted leader may write by itself (its provisioner reports on
    // claims); a learner cannot catch up with a leader that snapshots and
    // purges faster than it installs. Wait until it is quiet.
    m.phase("wait for the leader to be quiet", 0);
    let t = Instant::now();
    let restart_index = status(&node1.addr).await?.applied_index;
    let (mut last, mut still) = (restart_index, 0);
    while still < QUIET_FOR && t.elapsed() < QUIET_WAIT {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = status(&node1.addr).await?.applied_index;
        if now == last {
            still += 1;
        } else {
            (last, still) = (now, 0);
        }
    }
    let quiet_wait_seconds = t.elapsed().as_secs_f64();
    let quiet = still >= QUIET_FOR;
    let entries_written_after_restart = last.saturating_sub(restart_index);
    let quiet_mem = mem();
    eprintln!(
        "  leader {} after {quiet_wait_seconds:.0} s, having written {} entries by itself; RSS {} (peak {})",
        if quiet { "quiet" } else { "still writing" },
        thousands(entries_written_after_restart),
        bytes(quiet_mem.rss_bytes),
        bytes(quiet_mem.hwm_bytes)
    );

    // Node 2, empty, added as a learner: time until it has caught up.
    m.phase("install on a new node", 0);
    reset_peak();
    let node2 = ndc_server::start(node_config(2, &dir.join("node-2"), key, false)?).await?;
    let t = Instant::now();
    ClusterClient::new(ndc_api::client::channel(&node1.addr)?)
        .add_learner(AddLearnerRequest {
            id: 2,
            addr: node2.addr.clone(),
        })
        .await
        .context("adding node 2 as a learner")?;
    let add_learner_seconds = t.elapsed().as_secs_f64();
    let leader_applied_index = status(&node1.addr).await?.applied_index;
    let learner = loop {
        let s = status(&node2.addr).await?;
        if s.applied_index >= leader_applied_index {
            break s;
        }
        if t.elapsed() > Duration::from_secs(1800) {
            bail!("node 2 did not catch up in 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let caught_up_seconds = t.elapsed().as_secs_f64();
    let learner_tenants = TenantsClient::new(ndc_api::client::channel(&node2.addr)?)
        .max_decoding_message_size(MAX_MESSAGE)
        .list(ListTenantsRequest {
            stale: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .tenants
        .len() as u64;
    let mem_after_install = mem();
    eprintln!(
        "  install: learner caught up in {caught_up_seconds:.1} s (snapshot index {}, {} tenants)",
        thousands(learner.snapshot_index),
        thousands(learner_tenants)
    );
    m.phase("done", 0);
    m.set_leader(None);
    node2.shutdown().await?;
    node1.shutdown().await?;
    Ok(InstallStage {
        snapshot_method: "store API on node 1's data while it is stopped: ndc_store::open, then the state machine's snapshot builder (RunningNode does not expose openraft's trigger)".into(),
        open_store_seconds,
        snapshot_build_seconds,
        snapshot_bytes,
        snapshot_file_bytes,
        snapshot_last_log_index,
        rss_store_open_bytes,
        snapshot_peak_bytes,
        leader_restart_seconds,
        idle_seconds,
        idle_mem,
        idle_cpu_percent,
        quiet,
        quiet_wait_seconds,
        entries_written_after_restart,
        quiet_mem,
        add_learner_seconds,
        caught_up_seconds,
        learner_snapshot_index: learner.snapshot_index,
        learner_applied_index: learner.applied_index,
        leader_applied_index,
        learner_tenants,
        mem_after_install,
        samples: Vec::new(),
        markers: Vec::new(),
    })
}

// ---------------------------------------------------------------------------
// The report.

fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

type Points = Vec<(f64, f64)>;

fn rates(s: &[Sample]) -> (Points, Points, Points) {
    // Per second over a 5-sample window: creates, log entries, CPU %.
    let (mut creates, mut entries, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    for i in 1..s.len() {
        let j = i.saturating_sub(5);
        let dt = s[i].t - s[j].t;
        if dt <= 0.0 {
            continue;
        }
        creates.push((s[i].t, s[i].writes.saturating_sub(s[j].writes) as f64 / dt));
        if s[i].applied_index > 0 && s[j].applied_index > 0 {
            entries.push((
                s[i].t,
                s[i].applied_index.saturating_sub(s[j].applied_index) as f64 / dt,
            ));
        }
        cpu.push((s[i].t, (s[i].cpu_seconds - s[j].cpu_seconds) / dt * 100.0));
    }
    (creates, entries, cpu)
}

fn write_outputs(dir: &Path, o: &Output) -> Result<()> {
    std::fs::write(dir.join("figures.json"), serde_json::to_vec_pretty(o)?)?;
    let (b, i) = (&o.build, &o.install);
    let (creates, entries, build_cpu) = rates(&b.samples);
    let (_, _, install_cpu) = rates(&i.samples);
    let mut markers: Vec<(f64, String)> = Vec::new();
    for (t, n) in b.markers.iter().chain(&i.markers) {
        let n = if n.starts_with("tenants") {
            "tenants"
        } else {
            n.as_str()
        };
        let skip = ["done", "start node 1", "stop node 1"].contains(&n);
        if !skip && markers.last().is_none_or(|(_, l)| l != n) {
            markers.push((*t, n.to_string()));
        }
    }
    std::fs::write(
        dir.join("writes.svg"),
        line_chart(
            &format!(
                "Creates and log entries per second ({} tenants, {} claims)",
                thousands(o.tenants),
                thousands(o.claims)
            ),
            "seconds since start",
            "per second (5 s window)",
            &[
                Series {
                    name: "creates acknowledged".into(),
                    points: creates,
                },
                Series {
                    name: "log entries applied".into(),
                    points: entries,
                },
            ],
            &markers,
        ),
    )?;
    let mib = |s: &[Sample]| -> Vec<(f64, f64)> {
        s.iter()
            .map(|x| (x.t, x.rss_bytes as f64 / (1024.0 * 1024.0)))
            .collect()
    };
    std::fs::write(
        dir.join("memory.svg"),
        line_chart(
            "Resident memory (VmRSS, sampled every second)",
            "seconds since start",
            "MiB",
            &[
                Series {
                    name: "build process (node 1)".into(),
                    points: mib(&b.samples),
                },
                Series {
                    name: "install process (nodes 1, 2)".into(),
                    points: mib(&i.samples),
                },
            ],
            &markers,
        ),
    )?;
    std::fs::write(
        dir.join("cpu.svg"),
        line_chart(
            "CPU used (user + system; 2 cores = 200 %)",
            "seconds since start",
            "% of one core (5 s window)",
            &[
                Series {
                    name: "build process".into(),
                    points: build_cpu,
                },
                Series {
                    name: "install process".into(),
                    points: install_cpu,
                },
            ],
            &markers,
        ),
    )?;
    std::fs::write(dir.join("report.md"), markdown(o))?;
    Ok(())
}

fn markdown(o: &Output) -> String {
    use std::fmt::Write as _;
    let (b, i) = (&o.build, &o.install);
    let mut r = String::new();
    let gib = |x: u64| x as f64 / GIB as f64;
    let _ = writeln!(r, "# Scale benchmark, {}\n", o.date);
    let _ = writeln!(
        r,
        "`ndc-bench scale --scale {}` ({} build) on this machine. Two stages, each in a process \
         of its own: **build** starts one control-plane node in process (`ndc_server::start`, \
         open auth, a secrets key, no provisioning backends), fills it over gRPC on 127.0.0.1 with \
         {} requests in flight over {} connections, then times lists and a watch; **install** \
         builds a snapshot of that node's data, restarts the node on it and adds an empty second \
         node as a learner. Node settings as shipped: snapshot after at least {} entries and a tenth \
         as many entries as objects, {} entries kept \
         behind it, {} revisions of watch history. Raw figures: `figures.json`.\n",
        o.scale,
        o.profile,
        o.concurrency,
        CONNECTIONS,
        o.node_config["snapshot_every"],
        o.node_config["keep_logs"],
        o.node_config["history"],
    );
    let _ = writeln!(
        r,
        "State: {} tenants ({} central bodies with the root `vn`, {} provinces, {} communes with \
         unique 5-digit codes, {} central-level agencies), {} claims (buckets and databases, {} \
         per tenant at most).\n",
        thousands(o.tenants),
        o.central_bodies,
        o.provinces,
        thousands(o.communes),
        thousands(o.agencies),
        thousands(o.claims),
        o.claims.div_ceil(o.tenants.max(1)),
    );

    let _ = writeln!(r, "## Building the state\n");
    let _ = writeln!(
        r,
        "| creates | count | seconds | creates/s | p50 ms | p99 ms | max ms |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|");
    for c in &b.creates {
        let f = &c.creates;
        let _ = writeln!(
            r,
            "| {} | {} | {:.1} | {:.0} | {} | {} | {} |",
            c.what,
            thousands(f.ops as u64),
            f.seconds,
            f.ops_per_sec,
            ms(f.p50_ms),
            ms(f.p99_ms),
            ms(f.max_ms)
        );
    }
    let _ = writeln!(
        r,
        "| **all** | {} | {:.1} | {:.0} | | | |\n",
        thousands(o.tenants + o.claims),
        b.seconds,
        b.writes_per_sec
    );
    let _ = writeln!(
        r,
        "The node applied {} log entries meanwhile and built {} snapshots by its policy; the \
         process used {:.0} CPU seconds ({:.0} % of the 2 cores).\n",
        thousands(b.log_entries_applied),
        b.policy_snapshots,
        b.cpu_seconds,
        b.cpu_seconds / b.seconds.max(1e-9) * 50.0
    );
    let _ = writeln!(r, "![creates per second](writes.svg)\n");

    let _ = writeln!(r, "## Memory and disk\n");
    let _ = writeln!(r, "| process, when | resident (VmRSS) | peak (VmHWM) |");
    let _ = writeln!(r, "|---|---:|---:|");
    let _ = writeln!(
        r,
        "| build: node 1 and the clients, after the build | {} | {} |",
        bytes(b.mem_after_build.rss_bytes),
        bytes(b.mem_after_build.hwm_bytes)
    );
    let _ = writeln!(
        r,
        "| build: during the lists | | {} |",
        bytes(b.list_peak_bytes)
    );
    let _ = writeln!(
        r,
        "| install: store opened, then a snapshot built | {} | {} |",
        bytes(i.rss_store_open_bytes),
        bytes(i.snapshot_peak_bytes)
    );
    let _ = writeln!(
        r,
        "| install: node 1 restarted on the state, left alone {:.0} s ({:.0} % of a core meanwhile) | {} | {} |",
        i.idle_seconds,
        i.idle_cpu_percent,
        bytes(i.idle_mem.rss_bytes),
        bytes(i.idle_mem.hwm_bytes)
    );
    let _ = writeln!(
        r,
        "| install: node 1 {} after {:.0} s more, having written {} entries by itself | {} | {} |",
        if i.quiet { "quiet" } else { "still writing" },
        i.quiet_wait_seconds,
        thousands(i.entries_written_after_restart),
        bytes(i.quiet_mem.rss_bytes),
        bytes(i.quiet_mem.hwm_bytes)
    );
    let _ = writeln!(
        r,
        "| install: nodes 1 and 2 after the install | {} | {} |\n",
        bytes(i.mem_after_install.rss_bytes),
        bytes(i.mem_after_install.hwm_bytes)
    );
    let _ = writeln!(
        r,
        "Peaks are per row{}. Node 1's data directory after the build: {}.\n",
        if b.hwm_reset_supported {
            " (VmHWM reset through /proc/self/clear_refs as each phase starts)"
        } else {
            " (VmHWM could not be reset: each is the peak since the process started)"
        },
        bytes(b.data_dir_bytes)
    );
    let _ = writeln!(r, "![resident memory](memory.svg)\n");
    let _ = writeln!(r, "![CPU](cpu.svg)\n");

    let _ = writeln!(r, "## Snapshot\n");
    let _ = writeln!(r, "| figure | value |");
    let _ = writeln!(r, "|---|---:|");
    let _ = writeln!(r, "| snapshot size | {} |", bytes(i.snapshot_bytes));
    let _ = writeln!(
        r,
        "| snapshot file on disk | {} |",
        bytes(i.snapshot_file_bytes)
    );
    let _ = writeln!(
        r,
        "| up to log index | {} |",
        thousands(i.snapshot_last_log_index)
    );
    let _ = writeln!(
        r,
        "| time to build it | {:.1} s |",
        i.snapshot_build_seconds
    );
    let _ = writeln!(
        r,
        "| time to open the store before (RocksDB with WAL replay, tenants loaded) | {:.1} s |",
        i.open_store_seconds
    );
    let _ = writeln!(
        r,
        "| restart of node 1 on this state, until leader | {:.1} s |",
        i.leader_restart_seconds
    );
    let _ = writeln!(
        r,
        "| restarted leader: entries it wrote by itself before it was quiet{} | {} in {:.0} s |",
        if i.quiet { "" } else { " (it was not)" },
        thousands(i.entries_written_after_restart),
        i.quiet_wait_seconds
    );
    let _ = writeln!(
        r,
        "| **install on a new node**: AddLearner until caught up | **{:.1} s** |",
        i.caught_up_seconds
    );
    let _ = writeln!(
        r,
        "| of which the AddLearner call | {:.1} s |",
        i.add_learner_seconds
    );
    let _ = writeln!(
        r,
        "| new node: snapshot index, applied index (leader's) | {}, {} ({}) |",
        thousands(i.learner_snapshot_index),
        thousands(i.learner_applied_index),
        thousands(i.leader_applied_index)
    );
    let _ = writeln!(
        r,
        "| tenants the new node lists from its own state | {} |\n",
        thousands(i.learner_tenants)
    );
    let _ = writeln!(r, "How it was built: {}.\n", i.snapshot_method);

    let _ = writeln!(r, "## List and watch latency at this size\n");
    let _ = writeln!(
        r,
        "| call | items | response | calls | p50 ms | p99 ms | max ms |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|");
    for l in &b.lists {
        let _ = writeln!(
            r,
            "| list {} | {} | {} | {} | {} | {} | {} |",
            l.what,
            thousands(l.items),
            bytes(l.response_bytes),
            l.latency.ops,
            ms(l.latency.p50_ms),
            ms(l.latency.p99_ms),
            ms(l.latency.max_ms)
        );
    }
    let (w, a) = (&b.watch_delivery, &b.watch_write_ack);
    let _ = writeln!(
        r,
        "| watch /ndc/claims/: create to event, one write at a time | | | {} | {} | {} | {} |",
        w.ops,
        ms(w.p50_ms),
        ms(w.p99_ms),
        ms(w.max_ms)
    );
    let _ = writeln!(
        r,
        "| (the same creates, until acknowledged) | | | {} | {} | {} | {} |\n",
        a.ops,
        ms(a.p50_ms),
        ms(a.p99_ms),
        ms(a.max_ms)
    );
    let _ = writeln!(
        r,
        "Calls are made one at a time; a case stops repeating after {} s once it has 3 calls. \
         Claims by phase in the last full list: {}.\n",
        LIST_BUDGET.as_secs(),
        b.claim_phases
            .iter()
            .map(|(k, v)| format!("{} {k}", thousands(*v)))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let _ = writeln!(r, "## Goals\n");
    let full = o.tenants >= FULL_TENANTS as u64 && o.claims >= FULL_CLAIMS as u64;
    let worst = b.mem_after_build.rss_bytes.max(i.idle_mem.rss_bytes);
    let _ = writeln!(r, "| goal | measured | met |");
    let _ = writeln!(r, "|---|---:|---|");
    let _ = writeln!(
        r,
        "| 100k tenants / 1M claims in under 2 GiB resident | {} after the build ({} peak during it); {} for the node restarted on the state (at {} tenants, {} claims) | {} |",
        bytes(b.mem_after_build.rss_bytes),
        bytes(b.mem_after_build.hwm_bytes),
        bytes(i.idle_mem.rss_bytes),
        thousands(o.tenants),
        thousands(o.claims),
        match (full, gib(worst) < 2.0) {
            (false, _) => "not measured at this scale",
            (true, true) => "yes",
            (true, false) => "no",
        }
    );
    let _ = writeln!(
        r,
        "| a snapshot installed on a new node in under 30 s | {:.1} s | {} |",
        i.caught_up_seconds,
        if i.learner_snapshot_index == 0 {
            "not measured: no snapshot was needed (the log was replayed)"
        } else if !full {
            if i.caught_up_seconds < 30.0 {
                "yes at this scale; not measured at full scale"
            } else {
                "no, already at this scale"
            }
        } else if i.caught_up_seconds < 30.0 {
            "yes"
        } else {
            "no"
        }
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_at_full_scale_is_valid() {
        let p = Plan::new(1.0, 200).expect("plan");
        assert_eq!(p.tenants, 100_000);
        assert_eq!(p.claims, 1_000_000);
        assert_eq!(p.per_tenant, 10);
        assert_eq!(1 + p.central.len() as u64 + p.provinces.len() as u64, 54);
        assert_eq!(p.communes, 100_000 - 54);
        assert_eq!(p.agencies, 0);
        let mut ids = std::collections::HashSet::new();
        let mut codes = std::collections::HashSet::new();
        let mut children = std::collections::HashMap::<String, Quota>::new();
        for i in 0..p.tenants {
            let s = ndc_tenants::validate_spec(p.spec(i)).expect("valid spec");
            assert!(ids.insert(s.id.clone()), "duplicate id {}", s.id);
            if let Some(c) = &s.admin_code {
                assert!(codes.insert((s.level, c.clone())), "duplicate code {c}");
            }
            if let Some(parent) = &s.parent {
                assert!(ids.contains(parent), "{} before its parent", s.id);
                let e = children.entry(parent.clone()).or_default();
                *e = e.checked_add(&s.quota).expect("no overflow");
            }
        }
        // Every parent's quota covers its children's plus its own claims.
        for i in 0..p.tenants {
            let s = p.spec(i);
            let given = children.get(&s.id).copied().unwrap_or_default();
            let own = given.checked_add(&p.unit()).expect("no overflow");
            assert!(own.first_excess(&s.quota).is_none(), "{}", s.id);
        }
    }

    #[test]
    fn plan_beyond_the_code_space_adds_agencies() {
        let p = Plan::new(1.2, 0).expect("plan");
        assert_eq!(p.communes, MAX_COMMUNES);
        assert_eq!(p.agencies, 120_000 - 54 - MAX_COMMUNES);
        let last = ndc_tenants::validate_spec(p.spec(p.tenants - 1)).expect("valid");
        assert_eq!(last.level, Level::Central);
        let tiny = Plan::new(0.0001, 0).expect("plan");
        assert_eq!(tiny.tenants, 10);
        assert_eq!(tiny.communes, 0);
        assert!(Plan::new(0.0, 0).is_err());
    }
}
