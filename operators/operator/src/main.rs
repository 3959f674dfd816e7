//! `ndc-operator`: keeps a Kubernetes cluster in line with the ndc control
//! plane (tenant namespaces, bucket and database claims).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// ndc's Kubernetes operator.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    after_help = "Example:\n  ndc-operator --endpoints 127.0.0.1:7700 --token-file operator.token --kubeconfig ndc-data/kubeconfig\n\nWithout --kubeconfig it uses $KUBECONFIG, ~/.kube/config or the in-cluster service account."
)]
struct Args {
    /// Control-plane members, comma-separated.
    #[arg(
        long,
        env = "NDC_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7700"
    )]
    endpoints: Vec<String>,
    /// File holding the operator's bearer token (a dc-operator token).
    #[arg(long, env = "NDC_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Kubeconfig of the cluster to manage.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz here.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_addr: std::net::SocketAddr,
    /// Work only while holding the ndc-system/ndc-operator Lease, so two replicas never both write.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// This replica's name in the Lease (default: host name and process id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

async fn kube_client(path: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    let config = match path {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

#[tokio::main]
async fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("NDC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let token = match &args.token_file {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t.trim().to_string()),
            Err(e) => {
                eprintln!("error: cannot read the token file {}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let kube = match kube_client(args.kubeconfig.as_ref()).await {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: cannot reach Kubernetes: {e}");
            return ExitCode::from(2);
        }
    };
    let ndc = match ndc_api::Client::connect(&args.endpoints, token.as_deref()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "error: cannot use the control plane at {:?}: {e}",
                args.endpoints
            );
            return ExitCode::from(2);
        }
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "ndc-operator".into());
        format!("{host}-{}", std::process::id())
    });
    let options = ndc_operator::Options {
        metrics_addr: Some(args.metrics_addr),
        lease: args
            .leader_elect
            .then(|| ndc_operator::leader::LeaseConfig::new(identity)),
        ..Default::default()
    };
    match ndc_operator::run_with(kube, ndc, options, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
