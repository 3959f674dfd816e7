//! `ndc-bench`: benchmarks for capacity planners.

mod procs;
mod report;
mod rollout;
mod scale;
mod stats;
mod store;
mod usage;

use clap::{Parser, Subcommand};

/// Benchmarks of ndc, measured end to end on the real code paths.
#[derive(Parser, Debug)]
#[command(name = "ndc-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The replicated store: a 3-node ndc cluster and a 3-node etcd cluster, same workload, one table.
    Store(store::StoreArgs),
    /// The control plane alone at national scale: 100,000 tenants, 1,000,000 claims.
    Scale(scale::ScaleArgs),
    /// The national rollout end to end: tenants, namespaces, buckets, databases, subscriptions.
    Rollout(rollout::RolloutArgs),
}

/// Resolves on the first Ctrl-C or SIGTERM, naming it.
async fn stopped() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "Ctrl-C";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The store's account of a snapshot install, nothing else of the
    // servers run in this process; `NDC_LOG` (an env-filter) says otherwise.
    let filter = tracing_subscriber::EnvFilter::try_from_env("NDC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off,ndc_store=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let run = async {
        match cli.command {
            Command::Store(args) => store::run(args).await,
            Command::Scale(args) => scale::run(args).await,
            Command::Rollout(args) => rollout::run(args).await,
        }
    };
    // Ctrl-C or SIGTERM ends the run, and dropping it stops the servers it
    // started (Garage, PostgreSQL, etcd) rather than leaving them behind.
    let result = tokio::select! {
        r = run => r,
        s = stopped() => Err(anyhow::anyhow!("stopped by {s}; no report was written")),
    };
    match result {
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
