//! `ndc-bench rollout`: the national rollout end to end. Every tenant
//! (central bodies, 34 provinces, communes) is created in a 3-node control
//! plane; the operator gives it a namespace on the Kubernetes simulator,
//! and a bucket (Garage), a database (PostgreSQL) and the subscriptions its
//! level allows are asked for. A tenant's latency runs from its creation
//! request until every one of its objects is Ready.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use ndc_api::tenants::tenants_client::TenantsClient;
use ndc_core::{Branch, Level, Quota, TenantSpec};
use ndc_crds::{Database, ObjectBucket, ServiceSubscription, SharedService};

use crate::usage::{self, CpuMeter, CpuUse};
use crate::{report, stats};

const SERVICES: &str = include_str!("../../../samples/national/services.yaml");
const PROVINCES: usize = 34;
const CENTRAL: usize = 19;
const COMMUNES: usize = 3321;
/// The provisioner's passes at once (its `PARALLEL`), for the report.
const PARALLEL_PASSES: usize = 16;

#[derive(clap::Args, Debug)]
pub struct RolloutArgs {
    /// Fraction of the communes (and at least one of each other level) to roll out.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Tenants rolled out at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Give up after this long.
    #[arg(long, default_value_t = 1800)]
    pub timeout_secs: u64,
    /// Where the report goes (default bench/reports/<date>-rollout).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

mod markdown;
mod plan;
mod watch;

use markdown::*;
use plan::*;
use watch::*;

#[derive(Debug, Default, Clone, serde::Serialize)]
struct Sample {
    at_s: f64,
    tenants_ready: usize,
    revision: u64,
    rss_mib: BTreeMap<String, f64>,
}

pub async fn run(args: RolloutArgs) -> Result<()> {
    if !(args.scale > 0.0 && args.scale <= 1.0) {
        bail!("--scale must be in (0, 1], e.g. 0.1 for a tenth of the communes");
    }
    let dir = tempfile::tempdir()?;
    eprintln!("rollout: starting Garage, PostgreSQL, a 3-node control plane, the simulator and the operator");
    let garage = ndc_storage::LocalGarage::start(&dir.path().join("garage")).await?;
    let postgres = ndc_storage::LocalPostgres::start(&dir.path().join("postgres")).await?;
    let mut probe = probe(
        &garage.config(),
        &postgres.config(),
        &dir.path().join("postgres"),
    )
    .await?;
    eprintln!(
        "rollout: measured alone, one Garage admin call takes {:.1} ms; one PostgreSQL database {:.0} ms and {:.1} MiB of disk",
        probe.garage_admin_call_ms, probe.postgres_database_ms, probe.postgres_database_mib
    );
    let key = dir.path().join("secrets.key");
    ndc_server::SecretsKey::create_file(&key)?;
    let mut nodes = Vec::new();
    let mut first_addr = String::new();
    for id in 1..=3u64 {
        let mut cfg = ndc_server::NodeConfig::new(
            id,
            "127.0.0.1:0".parse()?,
            dir.path().join(format!("n{id}")),
        );
        if id == 1 {
            cfg.init = true;
        } else {
            cfg.join = Some(first_addr.clone());
        }
        cfg.secrets = Some(ndc_server::SecretsKey::load(&key).map_err(anyhow::Error::msg)?);
        cfg.provisioning =
            ndc_server::Provisioning::connect(ndc_server::provisioner::BackendsFile {
                garage: Some(garage.config()),
                postgres: Some(postgres.config()),
                backup_bucket: Some("ndc-backups".into()),
            })
            .await
            .map_err(anyhow::Error::msg)?;
        let node = ndc_server::start(cfg).await?;
        if !node.wait_for_leader(Duration::from_secs(60)).await {
            bail!("node {id} saw no leader");
        }
        if id == 1 {
            first_addr = node.addr.clone();
        }
        nodes.push(node);
    }
    let endpoints: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let sim = ndc_kube_sim::Simulator::new().start().await?;
    let kube = kube::Client::try_from(kube::Config::new(sim.url().parse()?))?;
    let pp = PatchParams::apply("ndc-bench").force();
    let crds: Api<ndc_crds::CustomResourceDefinition> = Api::all(kube.clone());
    for (_, crd) in ndc_crds::all() {
        crds.patch(&crd.name_any(), &pp, &Patch::Apply(&crd))
            .await?;
    }
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let op_client = ndc_api::Client::connect(&endpoints, None).await?;
    let op_kube = kube.clone();
    let op_metrics = ndc_operator::metrics::Metrics::new();
    let options = ndc_operator::Options {
        metrics: op_metrics.clone(),
        ..Default::default()
    };
    let operator = tokio::spawn(async move {
        ndc_operator::run_with(op_kube, op_client, options, async {
            let _ = stop_rx.await;
        })
        .await
    });

    // The root and the catalogue.
    let mut tc = TenantsClient::new(ndc_api::client::channel(&endpoints[0])?);
    let all = tenants(args.scale);
    let root = TenantSpec {
        id: "vn".into(),
        display_name: "Việt Nam".into(),
        level: Level::Central,
        branch: Branch::State,
        parent: None,
        admin_code: None,
        security_level: 4,
        labels: BTreeMap::new(),
        quota: quota(1_000_000, 1_000_000),
        deletion_protection: true,
    };
    tc.create(ndc_api::tenants::CreateTenantRequest {
        spec: Some(ndc_api::convert::spec_to_pb(&root)),
        decision: String::new(),
    })
    .await?;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(SERVICES)?;
    let services: Vec<SharedService> = docs
        .into_iter()
        .filter(|d| d["kind"] == "SharedService")
        .map(serde_json::from_value)
        .collect::<std::result::Result<_, _>>()?;
    let ss_api: Api<SharedService> = Api::all(kube.clone());
    for s in &services {
        ss_api.patch(&s.name_any(), &pp, &Patch::Apply(s)).await?;
    }
    let objects_per_level: HashMap<Level, usize> =
        [Level::Central, Level::Province, Level::Commune]
            .into_iter()
            .map(|l| (l, 2 + allowed(&services, l).len()))
            .collect();
    let total_objects: usize = all.iter().map(|t| objects_per_level[&t.level]).sum();
    eprintln!(
        "rollout: {} tenants ({} objects: a bucket, a database and the subscriptions each level allows)",
        all.len(),
        total_objects
    );

    // Per tenant: when it was asked for, when everything of it was Ready.
    let started: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let done: Arc<Mutex<HashMap<String, Duration>>> = Arc::default();
    let t0 = Instant::now();
    // CPU time from here to the last tenant Ready, by process.
    let cpu = Arc::new(Mutex::new(CpuMeter::start()));
    let deadline = t0 + Duration::from_secs(args.timeout_secs);
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let not_ready: Arc<Mutex<Vec<String>>> = Arc::default();
    let first_revision = ndc_revision(&endpoints[0]).await.unwrap_or(0);

    // The monitor: every second, which tenants have every object Ready,
    // from watches on the three kinds (a list a second would cost more than
    // the work measured, at full scale).
    let objects: Arc<Mutex<Readiness>> = Arc::default();
    let watches = vec![
        tokio::spawn(follow::<ObjectBucket>(
            kube.clone(),
            "objectbucket",
            objects.clone(),
            |o| o.status.as_ref().map(|s| s.conditions.clone()),
        )),
        tokio::spawn(follow::<Database>(
            kube.clone(),
            "database",
            objects.clone(),
            |o| o.status.as_ref().map(|s| s.conditions.clone()),
        )),
        tokio::spawn(follow::<ServiceSubscription>(
            kube.clone(),
            "servicesubscription",
            objects.clone(),
            |o| o.status.as_ref().map(|s| s.conditions.clone()),
        )),
    ];
    let peak: Arc<Mutex<BTreeMap<String, f64>>> = Arc::default();
    let monitor = {
        let objects = objects.clone();
        let peak_shared = peak.clone();
        let (started, done, samples) = (started.clone(), done.clone(), samples.clone());
        let not_ready = not_ready.clone();
        let want = objects_per_level.clone();
        let levels: HashMap<String, Level> = all.iter().map(|t| (t.id.clone(), t.level)).collect();
        let addr = endpoints[0].clone();
        let total = all.len();
        let cpu = cpu.clone();
        tokio::spawn(async move {
            let peak = peak_shared;
            loop {
                let (ready, waiting) = objects.lock().unwrap_or_else(|e| e.into_inner()).tally();
                let now = Instant::now();
                {
                    let started = started.lock().unwrap_or_else(|e| e.into_inner());
                    let mut done = done.lock().unwrap_or_else(|e| e.into_inner());
                    for (ns, n) in &ready {
                        let Some(level) = levels.get(ns) else {
                            continue;
                        };
                        if *n >= want[level] && !done.contains_key(ns) {
                            if let Some(s) = started.get(ns) {
                                done.insert(ns.clone(), now - *s);
                            }
                        }
                    }
                }
                let mut rss = BTreeMap::new();
                let procs = usage::processes();
                for p in &procs {
                    if let Some(k) = usage::rss_kib(p.pid) {
                        *rss.entry(p.name.clone()).or_insert(0.0) += k as f64 / 1024.0;
                    }
                }
                {
                    let mut peak = peak.lock().unwrap_or_else(|e| e.into_inner());
                    for (k, v) in &rss {
                        let p = peak.entry(k.clone()).or_insert(0.0);
                        *p = p.max(*v);
                    }
                }
                cpu.lock().unwrap_or_else(|e| e.into_inner()).sample(&procs);
                let n_done = done.lock().map(|d| d.len()).unwrap_or(0);
                let sample = Sample {
                    at_s: t0.elapsed().as_secs_f64(),
                    tenants_ready: n_done,
                    revision: ndc_revision(&addr).await.unwrap_or(0),
                    rss_mib: rss,
                };
                eprintln!(
                    "  {:>6.1}s  tenants ready {n_done}/{total}  revision {}",
                    sample.at_s, sample.revision
                );
                samples
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(sample);
                *not_ready.lock().unwrap_or_else(|e| e.into_inner()) = waiting;
                if n_done >= total {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    // The rollout itself.
    let namespaces: Arc<Namespaces> = Arc::default();
    let namespace_watch = tokio::spawn(namespaces.clone().follow(kube.clone()));
    let namespaces_ref = &*namespaces;
    let kube_ref = &kube;
    let endpoints_ref = &endpoints;
    let services_ref = &services;
    // Parents first (central bodies and provinces), then the communes.
    let mut results: Vec<Result<()>> = Vec::new();
    for phase in [
        all.iter()
            .filter(|t| t.level != Level::Commune)
            .cloned()
            .collect::<Vec<_>>(),
        all.iter()
            .filter(|t| t.level == Level::Commune)
            .cloned()
            .collect(),
    ] {
        let r: Vec<Result<()>> = futures::stream::iter(phase)
            .map(|t| {
                let started = started.clone();
                async move {
                    started
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(t.id.clone(), Instant::now());
                    roll_out(
                        kube_ref,
                        namespaces_ref,
                        &endpoints_ref[0],
                        services_ref,
                        &t,
                    )
                    .await
                    .map(|_| ())
                }
            })
            .buffer_unordered(args.concurrency)
            .collect()
            .await;
        results.extend(r);
    }
    let errors: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err())
        .map(|e| format!("{e:#}"))
        .collect();
    if !errors.is_empty() {
        eprintln!(
            "rollout: {} tenant(s) failed, first: {}",
            errors.len(),
            errors[0]
        );
    }
    let requested = t0.elapsed();
    let mut monitor = monitor;
    let finished = tokio::select! {
        _ = &mut monitor => true,
        _ = tokio::time::sleep_until(deadline.into()) => {
            monitor.abort();
            false
        }
    };
    let total_time = t0.elapsed();
    let cpu_use = {
        let mut meter = cpu.lock().unwrap_or_else(|e| e.into_inner());
        meter.sample(&usage::processes());
        meter.usage()
    };
    // One more commune, alone on a quiet system: how long one tenant takes
    // without a queue in front of it.
    if finished && errors.is_empty() {
        // Alone means on a quiet control plane: wait until no change has
        // been written for a second (the operator may still be at work).
        let quiet_from = Instant::now();
        let mut last = ndc_revision(&endpoints[0]).await.unwrap_or(0);
        while quiet_from.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = ndc_revision(&endpoints[0]).await.unwrap_or(0);
            if now == last {
                break;
            }
            last = now;
        }
        probe.quiet_after_s = Some(quiet_from.elapsed().as_secs_f64());
        let want = objects_per_level[&Level::Commune];
        match one_alone(
            &kube,
            namespaces_ref,
            &endpoints[0],
            &services,
            &objects,
            want,
        )
        .await
        {
            Ok((accepted, namespace, ready)) => {
                eprintln!(
                    "rollout: one more commune alone: accepted after {:.2} s, namespace after {:.2} s, every object Ready after {:.2} s",
                    accepted.as_secs_f64(),
                    namespace.as_secs_f64(),
                    ready.as_secs_f64()
                );
                probe.alone_accepted_s = Some(accepted.as_secs_f64());
                probe.alone_namespace_s = Some(namespace.as_secs_f64());
                probe.alone_ready_s = Some(ready.as_secs_f64());
            }
            Err(e) => eprintln!("rollout: one more commune alone: not measured: {e:#}"),
        }
    }
    namespace_watch.abort();
    for w in &watches {
        w.abort();
    }
    let peak = peak.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let last_revision = ndc_revision(&endpoints[0]).await.unwrap_or(0);

    let latencies: Vec<Duration> = done
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .copied()
        .collect();
    let figures = stats::figures(latencies.clone(), all.len() - latencies.len(), total_time);
    // Where the work went: the provisioners (only a leader's works) and
    // the requests the simulated API server answered.
    let provisioner = nodes
        .iter()
        .map(|n| n.provisioner_stats())
        .fold(ndc_server::ProvisionerStats::default(), add_stats);
    let requests = sim.simulator().request_counts();
    let reconciles = op_metrics.all_reconciles();
    let proposals = nodes.iter().map(|n| n.proposal_stats()).fold(
        ndc_server::ProposalStats::default(),
        |mut a, b| {
            a.entries += b.entries;
            for (k, v) in b.requests {
                *a.requests.entry(k).or_default() += v;
            }
            a
        },
    );
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let writes_per_sec =
        (last_revision.saturating_sub(first_revision)) as f64 / total_time.as_secs_f64();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("bench/reports/{}-rollout", report::today())));
    write_report(
        &out,
        &args,
        all.len(),
        total_objects,
        &figures,
        requested,
        writes_per_sec,
        &peak,
        &samples,
        &latencies,
        &errors,
        &not_ready.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        &provisioner,
        &requests,
        &reconciles,
        &probe,
        &cpu_use,
        &proposals,
    )?;
    eprintln!("rollout: report in {}", out.display());

    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), operator).await;
    let _ = sim.stop().await;
    for n in nodes {
        let _ = n.shutdown().await;
    }
    let (mut postgres, mut garage) = (postgres, garage);
    postgres.stop().await;
    garage.stop().await;
    Ok(())
}

/// What one backend call costs here with nothing else running (medians).
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Probe {
    /// One call to Garage's admin API (`GetClusterHealth`). Garage checks
    /// the admin token of every call with Argon2, which costs CPU.
    garage_admin_call_ms: f64,
    /// One database with its role created.
    postgres_database_ms: f64,
    /// What the data directory grows by per empty database (a copy of
    /// the template, and its WAL until a checkpoint).
    postgres_database_mib: f64,
    /// One more commune rolled out alone once the rollout is done: seconds
    /// from the request until the control plane accepted it, until its
    /// namespace exists and its objects are asked for, and until every
    /// object is Ready. None if not measured.
    alone_accepted_s: Option<f64>,
    alone_namespace_s: Option<f64>,
    /// How long the control plane took to be quiet (no write for a
    /// second) once every tenant was Ready, before that commune.
    quiet_after_s: Option<f64>,
    alone_ready_s: Option<f64>,
}

async fn probe(
    garage: &ndc_storage::GarageConfig,
    postgres: &ndc_storage::PostgresConfig,
    postgres_dir: &std::path::Path,
) -> Result<Probe> {
    use ndc_storage::DatabaseStore;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut admin = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        ndc_storage::garage::is_healthy(garage).await?;
        admin.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let pg = ndc_storage::PostgresStore::connect(postgres.clone()).await?;
    let mut dbs = Vec::new();
    const PROBES: u64 = 5;
    let before = crate::scale::dir_size(postgres_dir);
    let names: Vec<String> = (0..PROBES).map(|i| format!("ndc_probe_{i}")).collect();
    for name in &names {
        let t = Instant::now();
        pg.ensure_database(&ndc_storage::DatabaseRequest {
            name: name.clone(),
            role: name.clone(),
            password: ndc_storage::generate_password()?,
            connection_limit: 0,
        })
        .await?;
        dbs.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let grown = crate::scale::dir_size(postgres_dir).saturating_sub(before);
    for name in &names {
        pg.drop_database(name, name).await?;
    }
    Ok(Probe {
        garage_admin_call_ms: median(admin),
        postgres_database_ms: median(dbs),
        postgres_database_mib: grown as f64 / PROBES as f64 / (1 << 20) as f64,
        alone_accepted_s: None,
        alone_namespace_s: None,
        quiet_after_s: None,
        alone_ready_s: None,
    })
}

fn add_stats(
    a: ndc_server::ProvisionerStats,
    b: ndc_server::ProvisionerStats,
) -> ndc_server::ProvisionerStats {
    ndc_server::ProvisionerStats {
        full_scans: a.full_scans + b.full_scans,
        passes: a.passes + b.passes,
        failed_passes: a.failed_passes + b.failed_passes,
        status_writes: a.status_writes + b.status_writes,
        pass_seconds: a.pass_seconds + b.pass_seconds,
        bucket_passes: a.bucket_passes + b.bucket_passes,
        object_store_seconds: a.object_store_seconds + b.object_store_seconds,
        database_passes: a.database_passes + b.database_passes,
        database_seconds: a.database_seconds + b.database_seconds,
        status_write_seconds: a.status_write_seconds + b.status_write_seconds,
        max_queue: a.max_queue.max(b.max_queue),
    }
}

async fn ndc_revision(addr: &str) -> Result<u64> {
    let ch = ndc_api::client::channel(addr)?;
    let s = ndc_api::cluster::cluster_client::ClusterClient::new(ch)
        .status(ndc_api::cluster::StatusRequest {})
        .await?
        .into_inner();
    Ok(s.applied_index)
}

/// One tenant: created, its namespace awaited, its objects asked for.
/// Rolls out one more commune (under the first province) and waits until
/// every object of it is Ready. Returns the time until the control plane
/// accepted it, until its namespace existed and its objects were asked
/// for, and until all were Ready.
async fn one_alone(
    kube: &kube::Client,
    namespaces: &Namespaces,
    addr: &str,
    services: &[SharedService],
    objects: &Mutex<Readiness>,
    want: usize,
) -> Result<(Duration, Duration, Duration)> {
    let t = spec(
        "xa-do-rieng".into(),
        "Xã đo riêng".into(),
        Level::Commune,
        "tinh-00",
        Some("99999".into()),
        quota(4, 8),
    );
    let start = Instant::now();
    let accepted = roll_out(kube, namespaces, addr, services, &t).await?;
    let asked = start.elapsed();
    loop {
        let (ready, _) = objects.lock().unwrap_or_else(|e| e.into_inner()).tally();
        if ready.get(&t.id).copied().unwrap_or(0) >= want {
            return Ok((accepted, asked, start.elapsed()));
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("not every object Ready after 120 s");
        }
        // The watches fill `objects`; a short poll keeps the figure close.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn roll_out(
    kube: &kube::Client,
    namespaces: &Namespaces,
    addr: &str,
    services: &[SharedService],
    t: &TenantSpec,
) -> Result<Duration> {
    let mut tc = TenantsClient::new(ndc_api::client::channel(addr)?);
    let asked = Instant::now();
    tc.create(ndc_api::tenants::CreateTenantRequest {
        spec: Some(ndc_api::convert::spec_to_pb(t)),
        decision: String::new(),
    })
    .await
    .with_context(|| format!("creating tenant {}", t.id))?;
    let accepted = asked.elapsed();
    namespaces
        .wait(&t.id, Instant::now() + Duration::from_secs(300))
        .await?;
    let pp = PatchParams::apply("ndc-bench").force();
    let mut b = ObjectBucket::new(
        "tai-lieu",
        ndc_crds::ObjectBucketSpec {
            size: "1Gi".into(),
            versioning: false,
            retention_days: None,
            deletion_policy: ndc_crds::DeletionPolicy::Retain,
            purge_on_delete: false,
        },
    );
    b.metadata.namespace = Some(t.id.clone());
    Api::<ObjectBucket>::namespaced(kube.clone(), &t.id)
        .patch("tai-lieu", &pp, &Patch::Apply(&b))
        .await?;
    let mut d = Database::new(
        "du-lieu",
        ndc_crds::DatabaseSpec {
            size: "1Gi".into(),
            connection_limit: 10,
            deletion_policy: ndc_crds::DeletionPolicy::Retain,
        },
    );
    d.metadata.namespace = Some(t.id.clone());
    Api::<Database>::namespaced(kube.clone(), &t.id)
        .patch("du-lieu", &pp, &Patch::Apply(&d))
        .await?;
    for s in allowed(services, t.level) {
        let mut sub =
            ServiceSubscription::new(&s, ndc_crds::ServiceSubscriptionSpec { service: s.clone() });
        sub.metadata.namespace = Some(t.id.clone());
        Api::<ServiceSubscription>::namespaced(kube.clone(), &t.id)
            .patch(&s, &pp, &Patch::Apply(&sub))
            .await?;
    }
    Ok(accepted)
}
