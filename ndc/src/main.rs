//! `ndc`: the command of the ndc control plane.
//!
//! The one place that wires every part together (`ndc up` composes the
//! control plane, the simulator, the operator and the local backends);
//! nothing depends on it.

mod apply_cmd;
mod audit_cmd;
mod capacity_cmd;
mod catalog_cmd;
mod claim_cmd;
mod cluster_cmd;
mod kv_cmd;
mod node_cmd;
mod output;
mod quantity;
mod server_cmd;
mod tenant_cmd;
mod up_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::{Conn, Format};

/// ndc: the control plane of the National Data Centre's government cloud.
#[derive(Parser, Debug)]
#[command(
    name = "ndc",
    version,
    about,
    after_help = "Examples:\n  ndc up          # a National Data Centre in a box, in ./ndc-data\n  ndc server --id 1 --listen 127.0.0.1:7700 --data-dir /var/lib/ndc --init\n  ndc --endpoints 127.0.0.1:7700,127.0.0.1:7701 cluster status\n  ndc put /demo/hello world && ndc get /demo/hello"
)]
struct Cli {
    /// Control-plane members to talk to, comma-separated; the leader is found among them.
    #[arg(
        long,
        global = true,
        env = "NDC_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7700"
    )]
    endpoints: Vec<String>,
    /// Bearer token that identifies you to the control plane.
    #[arg(long, global = true, env = "NDC_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run ndc's main job on embedded defaults: a one-node control plane in a local data dir.
    Up(up_cmd::UpArgs),
    /// Run a control-plane node.
    Server(server_cmd::ServerArgs),
    /// Inspect and change cluster membership.
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCommand),
    /// Read one object.
    Get(kv_cmd::GetArgs),
    /// Create or replace an object.
    Put(kv_cmd::PutArgs),
    /// Delete an object.
    Del(kv_cmd::DelArgs),
    /// List objects under a prefix.
    List(kv_cmd::ListArgs),
    /// Stream changes under a prefix.
    Watch(kv_cmd::WatchArgs),
    /// Tenants: the agencies, their hierarchy, quotas and reorganisations.
    #[command(subcommand)]
    Tenant(tenant_cmd::TenantCommand),
    /// Create or update what a YAML file describes.
    Apply(apply_cmd::ApplyArgs),
    /// The hash-chained audit log of every accepted change.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// The data centre's hosts, as their agents report them.
    #[command(subcommand)]
    Node(node_cmd::NodeCommand),
    /// Capacity per zone and in total, quotas granted, headroom.
    Capacity(capacity_cmd::CapacityArgs),
    /// Object-storage buckets claimed by tenants, and their keys.
    #[command(subcommand)]
    Bucket(claim_cmd::BucketCommand),
    /// PostgreSQL databases claimed by tenants, and their passwords.
    #[command(subcommand)]
    Database(claim_cmd::DatabaseCommand),
    /// The shared services of the national framework and their subscribers.
    Catalog(catalog_cmd::CatalogArgs),
}

/// Logs to stderr, coloured only when stderr is a terminal.
fn init_logging(default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("NDC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut cli = Cli::parse();
    // openraft reports every election and membership step at info; keep its
    // warnings and ours. `ndc up` logs to a file in its data dir.
    match &mut cli.command {
        Command::Up(args) => {
            if let Err(e) = up_cmd::prepare(args) {
                e.print();
                return ExitCode::from(e.exit_code());
            }
        }
        Command::Server(_) => init_logging("info,openraft=warn"),
        _ => init_logging("warn"),
    }
    let conn = Conn {
        endpoints: cli.endpoints.clone(),
        token: cli.token.clone(),
    };
    let result = match cli.command {
        Command::Up(args) => up_cmd::run(args).await,
        Command::Server(args) => server_cmd::run(args).await,
        Command::Cluster(cmd) => cluster_cmd::run(cmd, &conn, cli.output).await,
        Command::Get(args) => kv_cmd::get(args, &conn, cli.output).await,
        Command::Put(args) => kv_cmd::put(args, &conn, cli.output).await,
        Command::Del(args) => kv_cmd::del(args, &conn, cli.output).await,
        Command::List(args) => kv_cmd::list(args, &conn, cli.output).await,
        Command::Watch(args) => kv_cmd::watch(args, &conn, cli.output).await,
        Command::Tenant(cmd) => tenant_cmd::run(cmd, &conn, cli.output).await,
        Command::Apply(args) => apply_cmd::run(args, &conn, cli.output).await,
        Command::Audit(cmd) => audit_cmd::run(cmd, &conn, cli.output).await,
        Command::Node(cmd) => node_cmd::run(cmd, &conn, cli.output).await,
        Command::Capacity(args) => capacity_cmd::run(args, &conn, cli.output).await,
        Command::Bucket(cmd) => claim_cmd::bucket(cmd, &conn, cli.output).await,
        Command::Database(cmd) => claim_cmd::database(cmd, &conn, cli.output).await,
        Command::Catalog(args) => catalog_cmd::run(args, &conn, cli.output).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            e.print();
            ExitCode::from(e.exit_code())
        }
    }
}
