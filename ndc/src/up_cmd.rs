//! `ndc up`: ndc's main job on embedded defaults. One process brings up a
//! National Data Centre in a box: Garage and a private PostgreSQL as child
//! processes, a one-node control plane, the Kubernetes API simulator (with
//! a kubeconfig for `kubectl`), the operator, and the national samples
//! (tenants, the framework's shared services, example claims and
//! subscriptions). A second run in the same data dir reuses everything.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use ndc_crds::{Database, ObjectBucket, ServiceSubscription, SharedService};
use ndc_server::NodeConfig;
use serde::de::DeserializeOwned;

use crate::output::CliError;
use crate::server_cmd::shutdown_signal;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  ndc up
  ndc up --data-dir /tmp/ndc --listen 127.0.0.1:0 --kube-listen 127.0.0.1:0 --check
  ndc up --samples ./my-samples   # a directory with tenants.yaml, services.yaml, claims.yaml

Garage (S3) and PostgreSQL run as child processes with their data under the data dir;
Ctrl-C stops everything. A second run in the same data dir reuses it and comes up faster.")]
pub struct UpArgs {
    /// Where everything keeps its data (control plane, Garage, PostgreSQL, keys).
    #[arg(long, env = "NDC_DATA_DIR", default_value = "ndc-data")]
    pub data_dir: PathBuf,
    /// gRPC address of the control plane.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// Address of the Kubernetes API simulator.
    #[arg(long, default_value = "127.0.0.1:16443")]
    pub kube_listen: SocketAddr,
    /// The operator's /metrics, /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_addr: SocketAddr,
    /// Samples to load: a directory with tenants.yaml, services.yaml and claims.yaml
    /// (default: the national samples built into ndc).
    #[arg(long, conflicts_with = "no_samples")]
    pub samples: Option<PathBuf>,
    /// Load no samples: the control plane and Kubernetes only.
    #[arg(long)]
    pub no_samples: bool,
    /// How long to wait for the samples to be ready.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Write the summary as JSON to this file once everything is up.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// Bring everything up, report, then stop (exit 1 if something was not ready).
    #[arg(long)]
    pub check: bool,
    /// Show every log line on the terminal too (they always go to <data-dir>/logs/ndc-up.log;
    /// without this flag only warnings and errors are shown).
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

/// Where `ndc up` writes its log, under the data dir.
const LOG_FILE: &str = "logs/ndc-up.log";

/// Makes the data dir absolute (PostgreSQL and Garage change directory, so
/// every path handed to them must be), creates it, and sends logs to
/// `<data-dir>/logs/ndc-up.log`, with warnings and errors (everything with
/// `--verbose`) also on stderr, coloured only when stderr is a terminal.
pub fn prepare(args: &mut UpArgs) -> Result<(), CliError> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    args.data_dir = std::path::absolute(&args.data_dir).map_err(|e| {
        failed(format!(
            "cannot resolve the data dir {}: {e}",
            args.data_dir.display()
        ))
    })?;
    let log_path = args.data_dir.join(LOG_FILE);
    if let Some(dir) = log_path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| failed(format!("cannot create {}: {e}", dir.display())))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| failed(format!("cannot open {}: {e}", log_path.display())))?;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_env("NDC_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"))
    };
    let to_file = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(std::sync::Arc::new(file))
        .with_filter(filter());
    let to_terminal = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(if args.verbose {
            filter()
        } else {
            tracing_subscriber::EnvFilter::new("warn")
        });
    tracing_subscriber::registry()
        .with(to_file)
        .with(to_terminal)
        .try_init()
        .map_err(|e| failed(format!("cannot set up logging: {e}")))
}

/// Progress and the summary, on stdout. A reader that went away does not
/// stop what `ndc up` runs, so write errors are ignored here.
macro_rules! say {
    () => {
        let _ = $crate::output::write_out(format_args!("\n"));
    };
    ($($arg:tt)*) => {
        let _ = $crate::output::write_out(format_args!("{}\n", format_args!($($arg)*)));
    };
}

const NATIONAL_TENANTS: &str = include_str!("../../samples/national/tenants.yaml");
const NATIONAL_SERVICES: &str = include_str!("../../samples/national/services.yaml");
const NATIONAL_CLAIMS: &str = include_str!("../../samples/national/claims.yaml");

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(anyhow::anyhow!("{e}"))
}

fn random_hex() -> Result<String, CliError> {
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw).map_err(|e| {
        failed(format!(
            "cannot read the operating system's random generator: {e}"
        ))
    })?;
    Ok(hex::encode(raw))
}

/// The operator token of this data dir: read from `operator.token`, or made
/// (with the auth file that admits it) on the first start.
fn operator_token(data_dir: &Path) -> Result<(String, PathBuf), CliError> {
    let token_file = data_dir.join("operator.token");
    let auth_file = data_dir.join("auth.yaml");
    let io = |what: &str, e: std::io::Error| {
        CliError::Failed(anyhow::anyhow!(e).context(format!("cannot {what}")))
    };
    std::fs::create_dir_all(data_dir).map_err(|e| io("create the data dir", e))?;
    if let (Ok(t), true) = (std::fs::read_to_string(&token_file), auth_file.exists()) {
        return Ok((t.trim().to_string(), auth_file));
    }
    let token = random_hex()?;
    let yaml = format!(
        "# Made by `ndc up`: one operator for this local control plane.\nusers:\n  - name: local-operator\n    token_sha256: \"{}\"\n    roles: [dc-operator]\n",
        ndc_server::auth::sha256_hex(&token)
    );
    std::fs::write(&auth_file, yaml).map_err(|e| io("write auth.yaml", e))?;
    write_private(&token_file, &token).map_err(|e| io("write operator.token", e))?;
    Ok((token, auth_file))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

struct Step {
    n: usize,
    of: usize,
    started: Instant,
}

impl Step {
    fn say(&mut self, what: &str) {
        self.n += 1;
        say!(
            "[{}/{}] {what} ({:.1}s)",
            self.n,
            self.of,
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// What came up, for the summary and `--ready-file`.
#[derive(Debug, Default, serde::Serialize)]
struct Summary {
    tenants: usize,
    namespaces: usize,
    services: (usize, usize),
    subscriptions: (usize, usize),
    buckets: (usize, usize),
    databases: (usize, usize),
    control_plane: String,
    kubeconfig: String,
    operator_token_file: String,
    reused_data: bool,
    seconds: f64,
    not_ready: Vec<String>,
}

impl Summary {
    fn all_ready(&self) -> bool {
        [
            self.services,
            self.subscriptions,
            self.buckets,
            self.databases,
        ]
        .iter()
        .all(|(r, n)| r == n)
    }

    fn line(&self) -> String {
        format!(
            "services {}/{} ready · subscriptions {}/{} bound · buckets {}/{} · databases {}/{} · namespaces {}",
            self.services.0,
            self.services.1,
            self.subscriptions.0,
            self.subscriptions.1,
            self.buckets.0,
            self.buckets.1,
            self.databases.0,
            self.databases.1,
            self.namespaces
        )
    }
}

/// Parses multi-document YAML into objects of one kind, skipping the others.
fn documents<K: DeserializeOwned>(text: &str, kind: &str) -> Result<Vec<K>, CliError> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| failed(format!("samples: {e}")))?;
    docs.into_iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| serde_json::from_value(d).map_err(|e| failed(format!("samples ({kind}): {e}"))))
        .collect()
}

/// Server-side applies cluster-scoped objects (`ns` None) or namespaced
/// ones, each in its own namespace.
async fn apply_each<K, F>(objects: Vec<K>, api: F) -> Result<usize, CliError>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + DeserializeOwned,
    F: Fn(&K) -> Api<K>,
{
    let n = objects.len();
    let pp = PatchParams::apply("ndc-up").force();
    for o in objects {
        api(&o)
            .patch(&o.name_any(), &pp, &Patch::Apply(&o))
            .await
            .map_err(|e| failed(format!("applying {} {}: {e}", K::kind(&()), o.name_any())))?;
    }
    Ok(n)
}

async fn apply_all<K>(client: &kube::Client, objects: Vec<K>) -> Result<usize, CliError>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + DeserializeOwned,
{
    apply_each(objects, |_| Api::all(client.clone())).await
}

async fn apply_namespaced<K>(client: &kube::Client, objects: Vec<K>) -> Result<usize, CliError>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + DeserializeOwned,
{
    apply_each(objects, |o| {
        Api::namespaced(client.clone(), &o.namespace().unwrap_or_default())
    })
    .await
}

fn ready<'a>(
    conds: impl IntoIterator<Item = &'a ndc_crds::Condition>,
) -> Option<&'a ndc_crds::Condition> {
    conds.into_iter().find(|c| c.type_ == "Ready")
}

async fn count(client: &kube::Client, summary: &mut Summary) -> Result<(), kube::Error> {
    let lp = ListParams::default();
    summary.not_ready.clear();
    let services = Api::<SharedService>::all(client.clone()).list(&lp).await?;
    let mut n = 0;
    for s in &services {
        match s.status.as_ref().and_then(|st| ready(&st.conditions)) {
            Some(c) if c.status == "True" => n += 1,
            c => summary_note(
                &mut summary.not_ready,
                &format!("sharedservice/{}", s.name_any()),
                c,
            ),
        }
    }
    summary.services = (n, services.items.len());
    let subs = Api::<ServiceSubscription>::all(client.clone())
        .list(&lp)
        .await?;
    let mut n = 0;
    for s in &subs {
        match s.status.as_ref().and_then(|st| ready(&st.conditions)) {
            Some(c) if c.status == "True" => n += 1,
            c => summary_note(
                &mut summary.not_ready,
                &format!(
                    "servicesubscription/{} -n {}",
                    s.name_any(),
                    s.namespace().unwrap_or_default()
                ),
                c,
            ),
        }
    }
    summary.subscriptions = (n, subs.items.len());
    let buckets = Api::<ObjectBucket>::all(client.clone()).list(&lp).await?;
    let mut n = 0;
    for b in &buckets {
        match b.status.as_ref().and_then(|st| ready(&st.conditions)) {
            Some(c) if c.status == "True" => n += 1,
            c => summary_note(
                &mut summary.not_ready,
                &format!(
                    "objectbucket/{} -n {}",
                    b.name_any(),
                    b.namespace().unwrap_or_default()
                ),
                c,
            ),
        }
    }
    summary.buckets = (n, buckets.items.len());
    let dbs = Api::<Database>::all(client.clone()).list(&lp).await?;
    let mut n = 0;
    for d in &dbs {
        match d.status.as_ref().and_then(|st| ready(&st.conditions)) {
            Some(c) if c.status == "True" => n += 1,
            c => summary_note(
                &mut summary.not_ready,
                &format!(
                    "database/{} -n {}",
                    d.name_any(),
                    d.namespace().unwrap_or_default()
                ),
                c,
            ),
        }
    }
    summary.databases = (n, dbs.items.len());
    let nss = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .list(&ListParams::default().labels(&format!(
            "{}={}",
            ndc_crds::labels::MANAGED_BY,
            ndc_crds::labels::OPERATOR
        )))
        .await?;
    summary.namespaces = nss.items.len();
    Ok(())
}

fn summary_note(out: &mut Vec<String>, what: &str, c: Option<&ndc_crds::Condition>) {
    out.push(match c {
        Some(c) => format!("{what}: {} ({})", c.message, c.reason),
        None => format!("{what}: not reconciled yet"),
    });
}

/// Starts the one-node control plane on the local Garage and PostgreSQL,
/// and waits for it to lead.
async fn start_control_plane(
    args: &UpArgs,
    garage: &ndc_storage::LocalGarage,
    postgres: &ndc_storage::LocalPostgres,
    secrets: ndc_server::SecretsKey,
    auth_file: &Path,
) -> Result<ndc_server::RunningNode, CliError> {
    let mut config = NodeConfig::new(1, args.listen, args.data_dir.join("node-1"));
    config.init = true;
    config.auth = ndc_server::Auth::load(auth_file).map_err(failed)?;
    config.secrets = Some(secrets);
    config.provisioning =
        ndc_server::Provisioning::connect(ndc_server::provisioner::BackendsFile {
            garage: Some(garage.config()),
            postgres: Some(postgres.config()),
            backup_bucket: Some("ndc-backups".into()),
        })
        .await
        .map_err(failed)?;
    let node = ndc_server::start(config)
        .await
        .context("the control plane could not start")?;
    if !node.wait_for_leader(Duration::from_secs(30)).await {
        node.shutdown().await.ok();
        return Err(failed("no leader was elected within 30 s"));
    }
    node.refresh_own_address()
        .await
        .context("cannot record the node's new address")?;
    Ok(node)
}

/// The simulator's pieces `ndc up` keeps: its URL, the kubeconfig naming
/// it, a client, and how to stop it.
type Simulator = (
    String,
    PathBuf,
    kube::Client,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
);

/// Starts the Kubernetes API simulator and writes a kubeconfig for it.
async fn start_simulator(args: &UpArgs) -> Result<Simulator, CliError> {
    let (sim_stop, sim_stopped) = tokio::sync::oneshot::channel::<()>();
    let (kube_addr, sim_task) = ndc_kube_sim::Simulator::new()
        .ready_delay(Duration::from_millis(500))
        .serve(args.kube_listen, async {
            let _ = sim_stopped.await;
        })
        .await
        .map_err(|e| {
            failed(format!(
                "the Kubernetes simulator cannot listen on {}: {e}",
                args.kube_listen
            ))
        })?;
    let kube_url = format!("http://{kube_addr}");
    let kubeconfig = args.data_dir.join("kubeconfig");
    ndc_kube_sim::write_kubeconfig(&kubeconfig, &kube_url)
        .map_err(|e| failed(format!("cannot write {}: {e}", kubeconfig.display())))?;
    let kube = kube::Client::try_from(kube::Config::new(
        kube_url
            .parse()
            .map_err(|e| failed(format!("{kube_url}: {e}")))?,
    ))
    .map_err(failed)?;
    Ok((kube_url, kubeconfig, kube, sim_stop, sim_task))
}

/// With everything up: the summary, the ready file, then (unless
/// `--check`) running until Ctrl-C. Under `--check`, refused unless every
/// sample became ready.
async fn finish(summary: &Summary, args: &UpArgs, kubeconfig: &Path) -> Result<(), CliError> {
    report(summary, args, kubeconfig);
    if let Some(p) = &args.ready_file {
        let json = serde_json::to_string_pretty(summary).unwrap_or_default();
        std::fs::write(p, json)
            .map_err(|e| failed(format!("cannot write {}: {e}", p.display())))?;
    }
    if !args.check {
        say!("Press Ctrl-C to stop everything.");
        shutdown_signal().await;
    }
    if args.check && !summary.all_ready() {
        Err(CliError::Refused(anyhow::anyhow!(
            "not everything was ready: {}",
            summary.line()
        )))
    } else {
        Ok(())
    }
}

pub async fn run(args: UpArgs) -> Result<(), CliError> {
    let started = Instant::now();
    let mut step = Step {
        n: 0,
        of: 7,
        started,
    };
    let data_dir = &args.data_dir;
    say!("logs: {}", data_dir.join(LOG_FILE).display());
    let reused = data_dir.join("node-1").exists();
    let (token, auth_file) = operator_token(data_dir)?;
    let key_file = data_dir.join("secrets.key");
    if !key_file.exists() {
        ndc_server::SecretsKey::create_file(&key_file)
            .map_err(|e| failed(format!("cannot write {}: {e}", key_file.display())))?;
    }
    let secrets = ndc_server::SecretsKey::load(&key_file).map_err(failed)?;
    step.say(&format!(
        "data dir {}{}",
        data_dir.display(),
        if reused {
            " (reusing its data)"
        } else {
            " (new)"
        }
    ));

    let garage = ndc_storage::LocalGarage::start(&data_dir.join("garage"))
        .await
        .map_err(|e| failed(format!("Garage (the S3 object store) could not start: {e}")))?;
    let postgres = ndc_storage::LocalPostgres::start(&data_dir.join("postgres"))
        .await
        .map_err(|e| failed(format!("PostgreSQL could not start: {e}")))?;
    step.say(&format!(
        "Garage at {} and PostgreSQL at 127.0.0.1:{} are up",
        garage.config().s3_endpoint,
        postgres.config().port
    ));

    let node = start_control_plane(&args, &garage, &postgres, secrets, &auth_file).await?;
    let conn = crate::output::Conn {
        endpoints: vec![node.addr.clone()],
        token: Some(token.clone()),
    };
    let client = crate::output::client(&conn).await?;
    ensure_root(&client).await?;
    step.say(&format!(
        "control plane ready at {} (one node, leader)",
        node.addr
    ));

    let (kube_url, kubeconfig, kube, sim_stop, sim_task) = start_simulator(&args).await?;
    apply_all(&kube, ndc_crds::all().into_iter().map(|(_, c)| c).collect()).await?;
    step.say(&format!(
        "Kubernetes API simulator at {kube_url} (kubeconfig {}), CRDs installed",
        kubeconfig.display()
    ));

    let (op_stop, op_stopped) = tokio::sync::oneshot::channel::<()>();
    let op_client = crate::output::client(&conn).await?;
    let op_kube = kube.clone();
    let metrics_addr = args.metrics_addr;
    let operator = tokio::spawn(async move {
        ndc_operator::run_with(
            op_kube,
            op_client,
            ndc_operator::Options {
                metrics_addr: Some(metrics_addr),
                ..Default::default()
            },
            async {
                let _ = op_stopped.await;
            },
        )
        .await
    });
    step.say(&if metrics_addr.port() == 0 {
        "operator running (metrics on a free port)".to_string()
    } else {
        format!("operator running (metrics at http://{metrics_addr}/metrics)")
    });

    let mut summary = Summary {
        control_plane: node.addr.clone(),
        kubeconfig: kubeconfig.display().to_string(),
        operator_token_file: data_dir.join("operator.token").display().to_string(),
        reused_data: reused,
        ..Summary::default()
    };
    let outcome = if args.no_samples {
        step.say("no samples loaded (--no-samples)");
        Ok(())
    } else {
        load_samples(&args, &client, &kube, &mut step, &mut summary).await
    };
    summary.seconds = started.elapsed().as_secs_f64();

    let result = match outcome {
        Ok(()) => finish(&summary, &args, &kubeconfig).await,
        Err(e) => Err(e),
    };

    say!("stopping: operator, Kubernetes simulator, control plane, PostgreSQL, Garage");
    let _ = op_stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), operator).await;
    let _ = sim_stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), sim_task).await;
    node.shutdown().await.context("clean shutdown failed")?;
    let mut postgres = postgres;
    postgres.stop().await;
    drop(client);
    let mut garage = garage;
    garage.stop().await;
    say!("stopped");
    result
}

async fn load_samples(
    args: &UpArgs,
    client: &ndc_api::Client,
    kube: &kube::Client,
    step: &mut Step,
    summary: &mut Summary,
) -> Result<(), CliError> {
    let read = |name: &str, embedded: &'static str| -> Result<String, CliError> {
        match &args.samples {
            Some(dir) => std::fs::read_to_string(dir.join(name))
                .map_err(|e| failed(format!("cannot read {}: {e}", dir.join(name).display()))),
            None => Ok(embedded.to_string()),
        }
    };
    let source = args
        .samples
        .as_ref()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "the national samples".into());
    let tenants = read("tenants.yaml", NATIONAL_TENANTS)?;
    let applied = crate::apply_cmd::apply_text(client, &tenants, "tenants.yaml", false).await?;
    let total = applied.created + applied.updated + applied.unchanged;
    summary.tenants = total + 1;

    // Claims go into tenant namespaces, which the operator makes.
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(kube.clone());
    let managed = ListParams::default().labels(&format!(
        "{}={}",
        ndc_crds::labels::MANAGED_BY,
        ndc_crds::labels::OPERATOR
    ));
    loop {
        let n = nss.list(&managed).await.map(|l| l.items.len()).unwrap_or(0);
        if n >= summary.tenants {
            summary.namespaces = n;
            break;
        }
        if Instant::now() > deadline {
            return Err(failed(format!(
                "only {n} of {} tenant namespaces appeared in time",
                summary.tenants
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    step.say(&format!(
        "{} tenants from {source} ({} new, {} updated, {} unchanged) and their namespaces",
        summary.tenants, applied.created, applied.updated, applied.unchanged
    ));

    let services = read("services.yaml", NATIONAL_SERVICES)?;
    let claims = read("claims.yaml", NATIONAL_CLAIMS)?;
    let s = apply_all(
        kube,
        documents::<SharedService>(&services, "SharedService")?,
    )
    .await?;
    let b = apply_namespaced(kube, documents::<ObjectBucket>(&claims, "ObjectBucket")?).await?;
    let d = apply_namespaced(kube, documents::<Database>(&claims, "Database")?).await?;
    let u = apply_namespaced(
        kube,
        documents::<ServiceSubscription>(&claims, "ServiceSubscription")?,
    )
    .await?;
    say!(
        "      applied {s} shared services, {b} buckets, {d} databases, {u} subscriptions; waiting for them"
    );
    let mut last = String::new();
    loop {
        count(kube, summary).await.map_err(failed)?;
        let line = summary.line();
        if line != last {
            say!("      {line}");
            last = line;
        }
        let settled = summary.all_ready();
        if settled || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    step.say(if summary.all_ready() {
        "everything is ready"
    } else {
        "not everything became ready in time"
    });
    Ok(())
}

fn report(summary: &Summary, args: &UpArgs, kubeconfig: &Path) {
    say!();
    say!(
        "National Data Centre in a box, up in {:.1}s{}",
        summary.seconds,
        if summary.reused_data {
            " (data reused)"
        } else {
            ""
        }
    );
    say!("  tenants        {}", summary.tenants);
    say!("  namespaces     {}", summary.namespaces);
    say!(
        "  services       {}/{} ready",
        summary.services.0,
        summary.services.1
    );
    say!(
        "  subscriptions  {}/{} bound",
        summary.subscriptions.0,
        summary.subscriptions.1
    );
    say!(
        "  buckets        {}/{} ready",
        summary.buckets.0,
        summary.buckets.1
    );
    say!(
        "  databases      {}/{} ready",
        summary.databases.0,
        summary.databases.1
    );
    for n in summary.not_ready.iter().take(20) {
        say!("  not ready: {n}");
    }
    say!();
    say!("Look around (in another terminal):");
    say!(
        "  export NDC_ENDPOINTS={} NDC_TOKEN=$(cat {})",
        summary.control_plane,
        args.data_dir.join("operator.token").display()
    );
    say!("  ndc tenant tree");
    say!("  ndc catalog");
    say!("  ndc bucket list && ndc database list");
    say!("  ndc audit verify");
    say!(
        "  kubectl --kubeconfig {} get tenants,sharedservices,ns",
        kubeconfig.display()
    );
    say!(
        "  kubectl --kubeconfig {} get objectbuckets,databases,servicesubscriptions -A",
        kubeconfig.display()
    );
}

const ROOT_ID: &str = "vn";

/// The root's quota stands for the data centre's first site until node
/// agents report real capacity.
const ROOT_QUOTA: ndc_core::Quota = ndc_core::Quota {
    cpu_millis: 100_000_000,
    memory_bytes: 400 << 40,
    storage_bytes: 50 << 50,
    buckets: 100_000,
    databases: 50_000,
    namespaces: 50_000,
};

/// The root of the hierarchy: the national level, which the data centre serves.
async fn ensure_root(client: &ndc_api::Client) -> Result<(), CliError> {
    if crate::tenant_cmd::get(client, ROOT_ID).await?.is_some() {
        return Ok(());
    }
    let spec = ndc_core::TenantSpec {
        id: ROOT_ID.into(),
        display_name: "Cộng hòa Xã hội Chủ nghĩa Việt Nam".into(),
        level: ndc_core::Level::Central,
        branch: ndc_core::Branch::State,
        parent: None,
        admin_code: None,
        security_level: 4,
        labels: Default::default(),
        quota: ROOT_QUOTA,
        deletion_protection: true,
    };
    crate::tenant_cmd::create(client, spec, Some("ndc up: the national root".into())).await?;
    Ok(())
}
