//! `ndc-bench`: benchmarks for capacity planners.

mod procs;
mod report;
mod rollout;
mod scale;
mod stats;
mod store;

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

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Store(args) => store::run(args).await,
        Command::Scale(args) => scale::run(args).await,
        Command::Rollout(args) => rollout::run(args).await,
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
