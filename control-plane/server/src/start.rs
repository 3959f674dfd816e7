//! Starting and stopping a node: configuration, the gRPC server, joining.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ndc_api::cluster::cluster_server::ClusterServer;
use ndc_api::kv::kv_server::KvServer;
use ndc_api::raft::raft_server::RaftServer;
use ndc_api::raft::Payload;
use ndc_store::{decode, encode, NodeId, Raft};
use openraft::{BasicNode, ChangeMembers, ServerState, SnapshotPolicy};
use tokio::sync::{oneshot, Mutex};
use tokio::task::JoinHandle;
use tonic::Status;
use tracing::{info, warn, Instrument};

use crate::audit_service::AuditService;
use crate::catalog_service::CatalogService;
use crate::claims_service::ClaimsService;
use crate::cluster_service::ClusterService;
use crate::error::{Error, Result};
use crate::forward::{ForwardReply, ForwardRequest, ForwardResult};
use crate::inventory_service::InventoryService;
use crate::kv_service::KvService;
use crate::network::{peer_client, Network, MAX_RAFT_MESSAGE};
use crate::node::{Node, JOIN_RETRY};
use crate::proposer::Proposer;
use crate::raft_service::RaftService;
use crate::read_index::ReadBatcher;
use crate::tenant_service::TenantService;
use ndc_api::catalog::catalog_server::CatalogServer;
use ndc_api::claims::claims_server::ClaimsServer;
use ndc_api::inventory::inventory_server::InventoryServer;
use ndc_api::tenants::audit_server::AuditServer;
use ndc_api::tenants::tenants_server::TenantsServer;

/// Log entries in one AppendEntries message: 12 × (3 MiB batch + one
/// 2 MiB command) stays under the 64 MiB node-to-node limit.
const MAX_ENTRIES_PER_MESSAGE: u64 = 12;
/// How long `--join` keeps trying before the node gives up.
const JOIN_BUDGET: Duration = Duration::from_secs(120);

/// What a node needs to start; validated by the binary before it gets here.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Address other nodes and clients use; defaults to the bound address.
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    /// Bootstrap a one-node cluster if this node has no state yet.
    pub init: bool,
    /// Join the cluster through this member if this node has no state yet.
    pub join: Option<String>,
    /// Build a snapshot after at least this many applied entries, and at
    /// least a tenth as many as the state has objects (see
    /// [`snapshot_when_due`]).
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, for followers that lag a little.
    pub keep_logs: u64,
    /// Revisions of watch history kept.
    pub history: u64,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    /// Written with the advertised address once the node is ready.
    pub ready_file: Option<PathBuf>,
    /// Who may call: tokens from an auth file, or everyone as operator.
    pub auth: crate::auth::Auth,
    /// The secret every node presents on node-to-node calls (Raft,
    /// forwarding, joining). Without it that service is open to anyone who
    /// can reach the port: for a laptop or a test only.
    pub cluster_secret: Option<String>,
    /// A host whose agent has not reported for this long becomes NotReady.
    pub host_timeout_ms: u64,
    /// The key that seals claim credentials (the same on every node).
    pub secrets: Option<crate::secrets::SecretsKey>,
    /// Where claims are provisioned while this node leads.
    pub provisioning: crate::provisioner::Provisioning,
}

impl NodeConfig {
    /// Defaults for a node with this id, address and data directory.
    pub fn new(id: NodeId, listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            id,
            listen,
            advertise: None,
            data_dir,
            init: false,
            join: None,
            snapshot_every: 10_000,
            keep_logs: 1_000,
            history: ndc_store::DEFAULT_HISTORY_REVISIONS,
            heartbeat_ms: 150,
            election_timeout_ms: 1_000,
            ready_file: None,
            auth: crate::auth::Auth::Open,
            cluster_secret: None,
            host_timeout_ms: 30_000,
            secrets: None,
            provisioning: crate::provisioner::Provisioning::default(),
        }
    }
}

/// A started node. Dropping it does not stop it: call [`RunningNode::shutdown`].
pub struct RunningNode {
    pub addr: String,
    node: Arc<Node>,
    expiry: JoinHandle<()>,
    snapshots: JoinHandle<()>,
    provisioner: JoinHandle<()>,
    provisioner_stats: Arc<crate::provisioner::Stats>,
    server: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    stop: oneshot::Sender<()>,
}

/// Refuses node-to-node calls that do not present the cluster secret (when
/// one is configured). Digests are compared, not the secrets themselves.
fn cluster_secret_check(
    secret: Option<&str>,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, Status> + Clone {
    let expected = secret.map(crate::auth::sha256_hex);
    move |req: tonic::Request<()>| match &expected {
        None => Ok(req),
        Some(want) => {
            let got = req
                .metadata()
                .get(ndc_api::client::CLUSTER_SECRET_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(crate::auth::sha256_hex);
            if got.as_ref() == Some(want) {
                Ok(req)
            } else {
                Err(Status::unauthenticated(
                    "node-to-node calls need this cluster's secret (--cluster-secret-file)",
                ))
            }
        }
    }
}

/// Raft's settings for this node (not validated yet).
fn raft_config(config: &NodeConfig) -> openraft::Config {
    openraft::Config {
        cluster_name: "ndc".into(),
        heartbeat_interval: config.heartbeat_ms,
        election_timeout_min: config.election_timeout_ms,
        election_timeout_max: config.election_timeout_ms * 2,
        // The RPC of a snapshot's last chunk lasts as long as the install
        // (12.4 s at 100,000 tenants and 1,000,000 claims: checked, written,
        // tenants loaded). Cut short, the leader sends the whole snapshot
        // again: that doubled the install time when this was 10 s. A peer
        // that is gone is still found at once by its connection errors.
        install_snapshot_timeout: 180_000,
        // Paced by `snapshot_when_due` instead, by the size of the state.
        snapshot_policy: SnapshotPolicy::Never,
        // Entries are up to a few MiB (a batch, or one large command): a
        // dozen per message stays under the node-to-node message limit.
        max_payload_entries: MAX_ENTRIES_PER_MESSAGE,
        max_in_snapshot_log_to_keep: config.keep_logs,
        ..Default::default()
    }
}

/// The gRPC server, each service of this node on `listener`; stopped by
/// the sender.
async fn serve(
    node: &Arc<Node>,
    config: &NodeConfig,
    listener: tokio::net::TcpListener,
) -> Result<(Server, oneshot::Sender<()>)> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<KvServer<KvService>>().await;
    health.set_serving::<ClusterServer<ClusterService>>().await;
    health.set_serving::<TenantsServer<TenantService>>().await;
    health.set_serving::<AuditServer<AuditService>>().await;
    health
        .set_serving::<InventoryServer<InventoryService>>()
        .await;
    health.set_serving::<ClaimsServer<ClaimsService>>().await;
    health.set_serving::<CatalogServer<CatalogService>>().await;
    if matches!(config.auth, crate::auth::Auth::Open) {
        warn!(
            id = config.id,
            "no auth file: every caller is treated as dc-operator (for a laptop or a test only)"
        );
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(ndc_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            RaftServer::new(RaftService { node: node.clone() })
                .max_decoding_message_size(MAX_RAFT_MESSAGE)
                .max_encoding_message_size(MAX_RAFT_MESSAGE),
            cluster_secret_check(config.cluster_secret.as_deref()),
        ))
        .add_service(
            KvServer::new(KvService { node: node.clone() })
                .max_decoding_message_size(ndc_store::MAX_VALUE_BYTES * 2 + 64 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
        )
        .add_service(ClusterServer::new(ClusterService { node: node.clone() }))
        .add_service(TenantsServer::new(TenantService { node: node.clone() }))
        .add_service(AuditServer::new(AuditService { node: node.clone() }))
        .add_service(InventoryServer::new(InventoryService {
            node: node.clone(),
        }))
        .add_service(ClaimsServer::new(ClaimsService { node: node.clone() }))
        .add_service(CatalogServer::new(CatalogService { node: node.clone() }));
    // No Nagle delay on replies: with delayed ACKs on the other side it
    // stalls small responses for tens of milliseconds.
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |conn| {
            conn.and_then(|s| {
                s.set_nodelay(true)?;
                Ok(s)
            })
        },
    );
    let server = tokio::spawn(
        async move {
            router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
        }
        .instrument(tracing::info_span!("grpc", node = config.id)),
    );
    Ok((server, stop))
}

/// A node without state: initialises a one-node cluster (`--init`), joins
/// one (`--join`), or waits to be added. A node with state keeps it.
async fn bootstrap(node: &Node, config: &NodeConfig, addr: &str) -> Result<()> {
    // A removed node has stopped its Raft; it has state, and must not join again.
    let initialized = node.retired_at().is_some()
        || node
            .raft
            .is_initialized()
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
    if !initialized {
        if config.init {
            info!(id = config.id, "bootstrapping a one-node cluster");
            let members = std::collections::BTreeMap::from([(
                config.id,
                BasicNode {
                    addr: addr.to_string(),
                },
            )]);
            node.raft
                .initialize(members)
                .await
                .map_err(|e| Error::Raft(e.to_string()))?;
        } else if let Some(via) = &config.join {
            join(config.id, addr, via, config.cluster_secret.as_deref()).await?;
        } else {
            warn!(
                id = config.id,
                "node has no state and neither --init nor --join was given; it waits to be added"
            );
        }
    } else if config.init || config.join.is_some() {
        info!(
            id = config.id,
            "node already has cluster state; --init/--join ignored"
        );
    }
    Ok(())
}

/// The gRPC server's task.
type Server = JoinHandle<std::result::Result<(), tonic::transport::Error>>;

/// Starts a node: opens the store, starts Raft and the gRPC server, then
/// bootstraps (`init`) or joins (`join`) when the node has no state yet.
pub async fn start(config: NodeConfig) -> Result<RunningNode> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| Error::Listen {
        addr: config.listen,
        source,
    })?;
    let addr = config
        .advertise
        .clone()
        .unwrap_or_else(|| bound.to_string());

    let store = ndc_store::open(&config.data_dir, config.history)?;
    let raft_config = raft_config(&config).validate()?;
    let raft = Raft::new(
        config.id,
        Arc::new(raft_config),
        Network {
            secret: config.cluster_secret.clone(),
        },
        store.log.clone(),
        store.state_machine,
    )
    .await
    .map_err(|e| Error::Raft(e.to_string()))?;

    let retired_marker = config.data_dir.join("REMOVED");
    let retired = std::fs::read_to_string(&retired_marker)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if let Some(at) = retired {
        warn!(
            id = config.id,
            at, "this node was removed from its cluster; it serves status only"
        );
        let _ = raft.shutdown().await;
    }
    let node = Arc::new(Node {
        id: config.id,
        addr: addr.clone(),
        raft,
        reader: store.reader,
        log: store.log,
        auth: config.auth.clone(),
        reads: ReadBatcher::default(),
        cluster_secret: config.cluster_secret.clone(),
        proposer: Proposer::default(),
        peers: Mutex::new(HashMap::new()),
        retired: std::sync::Mutex::new(retired),
        retired_marker,
        secrets: config.secrets.clone(),
        provisioning: config.provisioning.clone(),
    });

    let (server, stop) = serve(&node, &config, listener).await?;
    info!(id = config.id, %addr, "node listening");

    bootstrap(&node, &config, &addr).await?;

    if let Some(path) = &config.ready_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &addr)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|source| Error::ReadyFile {
                path: path.clone(),
                source,
            })?;
    }
    let expiry = tokio::spawn(
        expire_hosts(node.clone(), config.host_timeout_ms)
            .instrument(tracing::info_span!("host-expiry")),
    );
    let snapshots = tokio::spawn(
        snapshot_when_due(node.clone(), config.snapshot_every)
            .instrument(tracing::info_span!("snapshots", node = config.id)),
    );
    let provisioner_stats = Arc::new(crate::provisioner::Stats::default());
    let provisioner = crate::provisioner::Context {
        claims: node.reader.clone(),
        status: node.clone(),
        leadership: node.clone(),
        secrets: config.secrets.clone(),
        backends: config.provisioning.clone(),
        stats: provisioner_stats.clone(),
    };
    let provisioner = tokio::spawn(
        crate::provisioner::run(Arc::new(provisioner))
            .instrument(tracing::info_span!("provisioner")),
    );
    Ok(RunningNode {
        addr,
        expiry,
        snapshots,
        provisioner,
        provisioner_stats,
        node,
        server,
        stop,
    })
}

/// The provisioner may act while this node leads and was not removed.
#[tonic::async_trait]
impl crate::provisioner::Leadership for Node {
    fn leads(&self) -> bool {
        self.metrics().current_leader == Some(self.id) && self.retired_at().is_none()
    }

    async fn read_barrier(&self) -> std::result::Result<(), String> {
        Node::read_barrier(self, false)
            .await
            .map_err(|s| s.message().to_string())
    }
}

/// The provisioner records claim statuses through this node's write path.
#[tonic::async_trait]
impl crate::provisioner::StatusWriter for Node {
    async fn record(
        &self,
        req: ndc_core::claims::ClaimRequest,
    ) -> std::result::Result<ndc_store::Response, String> {
        self.write(ndc_store::Command::Claim(Box::new(req)))
            .await
            .map_err(|s| s.message().to_string())
    }
}

/// Objects per log entry behind a snapshot: a snapshot is built once the
/// log since the last one has at least a tenth as many entries as the state
/// has objects.
const OBJECTS_PER_SNAPSHOT_ENTRY: u64 = 10;

/// Builds a snapshot once enough entries have been applied since the last.
/// A snapshot reads and writes every object, so with a fixed count a large
/// state would be snapshotted over and over; spacing them by the number of
/// objects keeps that work to a fixed share of the writes. `every` is the
/// least number of entries between two snapshots.
async fn snapshot_when_due(node: Arc<Node>, every: u64) {
    let mut metrics = node.raft.metrics();
    // The applied index a snapshot was last asked at: not asked again until
    // that one is built or `every` more entries are applied.
    let mut asked_at = 0u64;
    loop {
        if metrics.changed().await.is_err() {
            return;
        }
        let (applied, snapshot) = {
            let m = metrics.borrow();
            (
                m.last_applied.map(|l| l.index).unwrap_or(0),
                m.snapshot.map(|l| l.index).unwrap_or(0),
            )
        };
        let since = applied.saturating_sub(snapshot);
        if since < every || (asked_at > snapshot && applied < asked_at + every) {
            continue;
        }
        let objects = node.reader.estimated_objects().unwrap_or(0);
        if since < objects / OBJECTS_PER_SNAPSHOT_ENTRY {
            continue;
        }
        info!(applied, since, objects, "building a snapshot");
        if let Err(e) = node.raft.trigger().snapshot().await {
            warn!(error = %e, "could not ask for a snapshot");
            return;
        }
        asked_at = applied;
    }
}

/// On the leader, marks NotReady (through Raft) the hosts whose agents
/// have not reported within `timeout_ms`.
async fn expire_hosts(node: Arc<Node>, timeout_ms: u64) {
    // A quarter of the timeout: a host is marked at most 25 % late.
    let mut tick = tokio::time::interval(Duration::from_millis((timeout_ms / 4).clamp(50, 5_000)));
    loop {
        tick.tick().await;
        if node.metrics().current_leader != Some(node.id) || node.retired_at().is_some() {
            continue;
        }
        let now = crate::node::now_ms();
        let before = now.saturating_sub(timeout_ms);
        let Ok(hosts) = crate::inventory_service::hosts(&node) else {
            continue;
        };
        let names: Vec<String> = hosts
            .iter()
            .filter(|h| {
                h.state == ndc_core::inventory::HostState::Ready && h.last_heartbeat_ms < before
            })
            .map(|h| h.spec.name.clone())
            .collect();
        if names.is_empty() {
            continue;
        }
        let req = ndc_core::inventory::InventoryRequest {
            actor: ndc_core::domain::Actor {
                name: "control-plane".into(),
                roles: vec![ndc_core::domain::Role::DcOperator],
            },
            at_ms: now,
            op: ndc_core::inventory::InventoryOp::ExpireBefore {
                names: names.clone(),
                before_ms: before,
            },
        };
        match node.write(ndc_store::Command::Inventory(req)).await {
            Ok(_) => info!(?names, "hosts stopped reporting: not ready"),
            Err(e) => warn!(error = %e.message(), "could not mark hosts not ready"),
        }
    }
}

/// Adds this node as a learner through `via`, then promotes it to voter.
/// Goes through the node-to-node service, so it needs no client token.
async fn join(id: NodeId, addr: &str, via: &str, secret: Option<&str>) -> Result<()> {
    let join_err = |reason: String| Error::Join {
        via: via.to_string(),
        reason,
    };
    let mut client = peer_client(via, secret).map_err(|e| join_err(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + JOIN_BUDGET;
    let steps = [
        ForwardRequest::AddLearner {
            id,
            addr: addr.to_string(),
        },
        ForwardRequest::Promote { id },
    ];
    for step in steps {
        let data = encode("forwarded request", &step).map_err(|e| join_err(e.to_string()))?;
        loop {
            let res: Result<ForwardReply, Status> =
                match client.forward(Payload { data: data.clone() }).await {
                    Ok(r) => decode::<ForwardResult>("forwarded reply", &r.into_inner().data)
                        .map_err(|e| Status::internal(e.to_string()))
                        .and_then(|r| r.map_err(Status::from)),
                    Err(s) => Err(s),
                };
            match res {
                Ok(_) => break,
                Err(s)
                    if tokio::time::Instant::now() < deadline
                        && s.code() != tonic::Code::AlreadyExists =>
                {
                    warn!(id, via, error = %s.message(), "join: {step:?} failed; retrying");
                    tokio::time::sleep(JOIN_RETRY).await;
                }
                Err(s) => return Err(join_err(s.message().to_string())),
            }
        }
        info!(id, "join: {step:?} done");
    }
    Ok(())
}

impl RunningNode {
    pub fn id(&self) -> NodeId {
        self.node.id
    }

    pub fn is_leader(&self) -> bool {
        self.node.metrics().state == ServerState::Leader
    }

    /// What this node's provisioner has done so far (it works only while
    /// the node leads).
    pub fn provisioner_stats(&self) -> crate::provisioner::ProvisionerStats {
        self.provisioner_stats.read()
    }

    /// The log entries this node committed as leader, and the requests
    /// they carried by what they do.
    pub fn proposal_stats(&self) -> crate::proposer::ProposalStats {
        self.node.proposer.stats()
    }

    /// Waits until this node sees a leader, or the timeout passes.
    pub async fn wait_for_leader(&self, timeout: Duration) -> bool {
        self.node
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .is_ok()
    }

    /// On a one-node cluster that this node leads, records its current
    /// address if it started on a different one (say, another port), so
    /// status and clients find it. Returns whether it changed anything.
    /// Larger clusters change addresses by removing and re-adding a node.
    pub async fn refresh_own_address(&self) -> Result<bool> {
        let m = self.node.metrics();
        let membership = m.membership_config.membership();
        let alone = membership.nodes().count() == 1;
        let stale = membership
            .get_node(&self.node.id)
            .is_some_and(|n| n.addr != self.addr);
        if !(alone && stale && m.current_leader == Some(self.node.id)) {
            return Ok(false);
        }
        let nodes = std::collections::BTreeMap::from([(
            self.node.id,
            BasicNode {
                addr: self.addr.clone(),
            },
        )]);
        self.node
            .raft
            .change_membership(ChangeMembers::SetNodes(nodes), false)
            .await
            .map_err(|e| Error::Raft(e.to_string()))?;
        Ok(true)
    }

    /// Stops serving, then stops Raft; the store is closed when the last
    /// handle is dropped.
    pub async fn shutdown(self) -> Result<()> {
        self.expiry.abort();
        self.snapshots.abort();
        self.provisioner.abort();
        let _ = self.stop.send(());
        let served = self.server.await;
        if self.node.retired_at().is_none() {
            self.node
                .raft
                .shutdown()
                .await
                .map_err(|e| Error::Raft(e.to_string()))?;
        }
        match served {
            Ok(r) => r.map_err(Error::Transport),
            Err(e) => Err(Error::Raft(format!("server task: {e}"))),
        }
    }
}
