//! `ndc server`: one control-plane node.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use ndc_server::NodeConfig;

use crate::output::CliError;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  ndc server --id 1 --listen 127.0.0.1:7700 --data-dir ./n1 --init\n  ndc server --id 2 --listen 127.0.0.1:7701 --data-dir ./n2 --join 127.0.0.1:7700\n\nA node restarted with the same --data-dir recovers its state; --init and --join\nonly act on a node that has no state yet."
)]
pub struct ServerArgs {
    /// This node's id: unique in the cluster, never reused.
    #[arg(long, env = "NDC_NODE_ID")]
    pub id: u64,
    /// gRPC address to listen on (port 0 picks a free port).
    #[arg(long, env = "NDC_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: SocketAddr,
    /// Address that other nodes and clients use to reach this node (default: the bound address).
    #[arg(long, env = "NDC_ADVERTISE")]
    pub advertise: Option<String>,
    /// Directory for the log, state machine and snapshots.
    #[arg(long, env = "NDC_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Bootstrap a one-node cluster.
    #[arg(long, conflicts_with = "join")]
    pub init: bool,
    /// Join the cluster through any existing member (as learner, then voter).
    #[arg(long, value_name = "ADDR")]
    pub join: Option<String>,
    /// Build a snapshot after at least this many log entries, and at least
    /// a tenth as many as the state has objects (a large state is
    /// snapshotted less often).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot for followers that lag a little.
    #[arg(long, default_value_t = 1_000)]
    pub keep_logs: u64,
    /// Revisions of watch history kept before watchers must list again.
    #[arg(long, default_value_t = ndc_server::DEFAULT_HISTORY_REVISIONS, value_parser = clap::value_parser!(u64).range(1..))]
    pub history: u64,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 150, value_parser = clap::value_parser!(u64).range(10..))]
    pub heartbeat_ms: u64,
    /// Minimum election timeout in milliseconds (must exceed the heartbeat).
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(50..))]
    pub election_timeout_ms: u64,
    /// Write the advertised address to this file once the node is ready.
    #[arg(long)]
    pub ready_file: Option<PathBuf>,
    /// YAML file mapping bearer tokens to roles (users: [{name, token | token_sha256, roles}]).
    #[arg(long, env = "NDC_AUTH_FILE")]
    pub auth_file: Option<PathBuf>,
    /// Treat every caller as dc-operator. For a laptop or a test, never for a data centre.
    #[arg(long, conflicts_with = "auth_file")]
    pub insecure_no_auth: bool,
    /// A host whose agent has not reported for this many milliseconds becomes NotReady.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub host_timeout_ms: u64,
    /// File holding the secret (16+ characters) that every node of the cluster presents to the others.
    #[arg(long, env = "NDC_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// File holding the key (64 hex digits, e.g. `openssl rand -hex 32`) that seals claim
    /// credentials; the same on every node. Without it, bucket and database claims are refused.
    #[arg(long, env = "NDC_SECRETS_KEY_FILE")]
    pub secrets_key_file: Option<PathBuf>,
    /// YAML file naming where claims are provisioned (garage, postgres, backup_bucket).
    #[arg(long, env = "NDC_BACKENDS_FILE")]
    pub backends_file: Option<PathBuf>,
}

impl ServerArgs {
    pub fn config(&self) -> Result<NodeConfig, CliError> {
        if self.election_timeout_ms <= self.heartbeat_ms {
            return Err(CliError::Failed(anyhow::anyhow!(
                "--election-timeout-ms ({}) must be greater than --heartbeat-ms ({})",
                self.election_timeout_ms,
                self.heartbeat_ms
            )));
        }
        let mut c = NodeConfig::new(self.id, self.listen, self.data_dir.clone());
        c.advertise = self.advertise.clone();
        c.init = self.init;
        c.join = self.join.clone();
        c.snapshot_every = self.snapshot_every;
        c.keep_logs = self.keep_logs;
        c.history = self.history;
        c.heartbeat_ms = self.heartbeat_ms;
        c.election_timeout_ms = self.election_timeout_ms;
        c.ready_file = self.ready_file.clone();
        c.host_timeout_ms = self.host_timeout_ms;
        c.auth = match (&self.auth_file, self.insecure_no_auth) {
            (Some(path), _) => ndc_server::Auth::load(path).map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?,
            (None, true) => ndc_server::Auth::Open,
            (None, false) => {
                return Err(CliError::Failed(anyhow::anyhow!(
                    "say who may call this node: --auth-file FILE (tokens and roles), or --insecure-no-auth on a laptop"
                )))
            }
        };
        c.cluster_secret = match &self.cluster_secret_file {
            Some(path) => {
                let secret = std::fs::read_to_string(path)
                    .map_err(|e| CliError::Failed(anyhow::anyhow!(e).context(format!("cannot read {}", path.display()))))?
                    .trim()
                    .to_string();
                if secret.len() < 16 || secret.contains(char::is_control) {
                    return Err(CliError::Failed(anyhow::anyhow!(
                        "{}: the cluster secret must be at least 16 printable characters",
                        path.display()
                    )));
                }
                Some(secret)
            }
            None if self.auth_file.is_some() => {
                return Err(CliError::Failed(anyhow::anyhow!(
                    "with --auth-file, also give --cluster-secret-file: node-to-node calls must be authenticated too"
                )))
            }
            None => None,
        };
        c.secrets = match &self.secrets_key_file {
            Some(path) => Some(
                ndc_server::SecretsKey::load(path)
                    .map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?,
            ),
            None => None,
        };
        Ok(c)
    }
}

/// Resolves when the process is asked to stop (Ctrl-C or SIGTERM).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
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
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub async fn run(args: ServerArgs) -> Result<(), CliError> {
    let mut config = args.config()?;
    if let Some(path) = &args.backends_file {
        config.provisioning = ndc_server::Provisioning::load(path)
            .await
            .map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
    }
    let node = ndc_server::start(config)
        .await
        .context("the node could not start")?;
    tracing::info!(id = node.id(), addr = %node.addr, "node ready");
    shutdown_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await.context("clean shutdown failed")?;
    Ok(())
}
