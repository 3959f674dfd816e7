//! `ndc-agent`: runs on each data-centre host. It registers the host (zone,
//! rack, labels, capacity read from the host itself) and reports heartbeats
//! until it is stopped. `--simulate N` runs N simulated hosts from one
//! process, marked as simulated in the inventory.
//!
//! This crate must not depend on kube: agents talk to the control plane only.

mod capacity;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use ndc_api::inventory::inventory_client::InventoryClient;
use ndc_api::inventory::{self as pb};
use tracing::{info, warn};

/// ndc-agent: report this host to the ndc control plane.
#[derive(Parser, Debug)]
#[command(
    name = "ndc-agent",
    version,
    about,
    after_help = "Examples:\n  ndc-agent --endpoints 10.0.0.1:7700 --zone hn-1 --rack r042 --data-path /srv\n  ndc-agent --simulate 40 --zone hn-1 --rack r001 --insecure-no-token"
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
    /// Token of a user with the node-agent role.
    #[arg(
        long,
        env = "NDC_TOKEN",
        hide_env_values = true,
        required_unless_present = "insecure_no_token"
    )]
    token: Option<String>,
    /// Talk to a control plane started with --insecure-no-auth.
    #[arg(long)]
    insecure_no_token: bool,
    /// Host name (default: this machine's).
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    zone: String,
    #[arg(long)]
    rack: String,
    /// KEY=VALUE, repeatable.
    #[arg(long = "label", value_parser = label)]
    labels: Vec<(String, String)>,
    /// Filesystems whose size counts as this host's storage (repeatable).
    #[arg(long = "data-path", default_value = "/")]
    data_paths: Vec<PathBuf>,
    /// Milliseconds between heartbeats.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(50..))]
    interval_ms: u64,
    /// Run this many simulated hosts instead of reporting this one.
    #[arg(long, default_value_t = 0)]
    simulate: u32,
}

fn label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("label {s:?} must be KEY=VALUE"))
}

/// The hosts this process reports.
fn hosts(args: &Args) -> Result<Vec<pb::HostSpec>> {
    let labels: HashMap<String, String> = args.labels.iter().cloned().collect();
    if args.simulate > 0 {
        let prefix = args
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}-sim", args.zone, args.rack));
        return Ok((0..args.simulate)
            .map(|i| pb::HostSpec {
                name: format!("{prefix}-{i:03}"),
                zone: args.zone.clone(),
                rack: args.rack.clone(),
                labels: labels.clone(),
                capacity: Some(capacity::simulated()),
                simulated: true,
            })
            .collect());
    }
    let name = match &args.name {
        Some(n) => n.clone(),
        None => capacity::hostname().context("cannot read this host's name; pass --name")?,
    };
    Ok(vec![pb::HostSpec {
        name,
        zone: args.zone.clone(),
        rack: args.rack.clone(),
        labels,
        capacity: Some(capacity::measure(&args.data_paths)?),
        simulated: false,
    }])
}

async fn register(client: &ndc_api::Client, spec: &pb::HostSpec) -> Result<(), tonic::Status> {
    let req = pb::RegisterRequest {
        spec: Some(spec.clone()),
    };
    client
        .write(|ch, a| {
            let req = req.clone();
            async move { InventoryClient::with_interceptor(ch, a).register(req).await }
        })
        .await
        .map(|_| ())
}

async fn heartbeat(client: &ndc_api::Client, name: &str) -> Result<(), tonic::Status> {
    let req = pb::HeartbeatRequest {
        name: name.to_string(),
        capacity: None,
    };
    client
        .call(|ch| {
            let (a, req) = (client.auth(), req.clone());
            async move {
                InventoryClient::with_interceptor(ch, a)
                    .heartbeat(req)
                    .await
            }
        })
        .await
        .map(|_| ())
}

async fn run(args: Args) -> Result<()> {
    let specs = hosts(&args)?;
    let client = ndc_api::Client::connect(&args.endpoints, args.token.as_deref())
        .await
        .context("bad endpoints or token")?;
    for s in &specs {
        // Keep trying: the control plane may be starting, or electing.
        loop {
            match register(&client, s).await {
                Ok(()) => break,
                Err(e) if e.code() == tonic::Code::Unavailable => {
                    warn!(host = %s.name, error = %e.message(), "control plane unreachable; retrying");
                    tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
                }
                Err(e) => {
                    return Err(anyhow::anyhow!("{}", e.message())
                        .context(format!("cannot register {}", s.name)))
                }
            }
        }
    }
    info!(
        hosts = specs.len(),
        "registered; reporting every {} ms", args.interval_ms
    );
    let mut tick = tokio::time::interval(Duration::from_millis(args.interval_ms));
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => {
                info!("stopping; the control plane will mark these hosts not ready");
                return Ok(());
            }
            _ = tick.tick() => {
                for s in &specs {
                    match heartbeat(&client, &s.name).await {
                        Ok(()) => {}
                        // Forgotten by an operator (ndc node remove): register again.
                        Err(e) if e.code() == tonic::Code::NotFound => {
                            if let Err(e) = register(&client, s).await {
                                warn!(host = %s.name, error = %e.message(), "re-registration failed");
                            }
                        }
                        Err(e) => warn!(host = %s.name, error = %e.message(), "heartbeat failed"),
                    }
                }
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("NDC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::from(2)
        }
    }
}
