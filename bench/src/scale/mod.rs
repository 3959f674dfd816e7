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
use ndc_core::{Branch, Level, Quota, TenantSpec};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use tonic::transport::Channel;

use crate::report::{self, bytes, line_chart, thousands, Series};
use crate::stats::{figures, Figures};

/// The national tenants of the samples: the central bodies and provinces
/// are taken from here (names, codes, branches, labels).
const SAMPLE_TENANTS: &str = include_str!("../../../samples/national/tenants.yaml");

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

mod markdown;
mod monitor;
mod plan;
mod stages;

use markdown::*;
pub(crate) use monitor::dir_size;
use monitor::*;
use plan::*;
use stages::*;

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
