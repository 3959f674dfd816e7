//! One control-plane node's shared state and the request paths the
//! services have in common: write, read barrier, membership, forwarding.

use crate::status;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use ndc_api::raft::Payload;
use ndc_store::{decode, encode, Command, LogStore, NodeId, Raft, Response, StoreReader};
use openraft::{BasicNode, ChangeMembers, RaftMetrics};
use tokio::sync::Mutex;
use tonic::Status;
use tracing::{warn, Instrument};

use crate::error::Result;
use crate::forward::{ForwardReply, ForwardRequest, ForwardResult, MembershipView, RetireNotice};
use crate::network::{peer_client, PeerClient};
use crate::proposer::{fatal, unavailable_no_leader, write_error, Outcome, Proposer};
use crate::read_index::{ReadBatcher, ReadIndexError};

/// How long a follower waits to apply up to the leader's read index before
/// it gives up on a linearizable read.
const READ_INDEX_WAIT: Duration = Duration::from_secs(5);
/// Pause between two attempts to reach another node (join, retire).
pub(crate) const JOIN_RETRY: Duration = Duration::from_millis(300);

/// State shared by the gRPC services.
pub(crate) struct Node {
    pub(crate) id: NodeId,
    pub(crate) addr: String,
    pub(crate) raft: Raft,
    pub(crate) reader: StoreReader,
    pub(crate) log: LogStore,
    pub(crate) auth: crate::auth::Auth,
    pub(crate) reads: ReadBatcher,
    pub(crate) proposer: Proposer,
    pub(crate) cluster_secret: Option<String>,
    pub(crate) peers: Mutex<HashMap<String, PeerClient>>,
    /// Set (and recorded in the data dir) once the leader said this node was
    /// removed: it then refuses every request but status.
    pub(crate) retired: std::sync::Mutex<Option<u64>>,
    pub(crate) retired_marker: PathBuf,
    /// Seals and opens claim credentials; without it claims are refused.
    pub(crate) secrets: Option<crate::secrets::SecretsKey>,
    /// Where the leader provisions claims. The claims service asks the
    /// object store at once what it can: a feature a bucket claim needs, a
    /// bucket's emptiness before a delete. The provisioner gets its own copy.
    pub(crate) provisioning: crate::provisioner::Provisioning,
}

impl Node {
    pub(crate) fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    fn is_member(m: &RaftMetrics<NodeId, BasicNode>, id: NodeId) -> bool {
        m.membership_config.membership().get_node(&id).is_some()
    }

    /// The log index at which this node was removed, if it was.
    pub(crate) fn retired_at(&self) -> Option<u64> {
        self.retired.lock().ok().and_then(|r| *r)
    }

    /// Records that this node was removed and stops its Raft, so it no longer
    /// campaigns. Idempotent.
    pub(crate) async fn retire(&self, log_index: u64) -> std::io::Result<()> {
        if self.retired_at().is_some() {
            return Ok(());
        }
        // A notice older than a membership that has this node again (it was
        // removed, then added back) is stale.
        let m = self.metrics();
        let since = m.membership_config.log_id().map(|l| l.index).unwrap_or(0);
        if since > log_index && Self::is_member(&m, self.id) {
            return Ok(());
        }
        std::fs::write(&self.retired_marker, log_index.to_string())?;
        if let Ok(mut r) = self.retired.lock() {
            *r = Some(log_index);
        }
        warn!(
            id = self.id,
            log_index, "this node was removed from the cluster; it now refuses requests"
        );
        let _ = self.raft.shutdown().await;
        Ok(())
    }

    /// The store revision this node has applied, for a read's answer.
    pub(crate) fn revision(&self) -> Result<u64, Status> {
        self.reader
            .revisions()
            .map(|(current, _)| current)
            .map_err(status::store)
    }

    /// Refuses requests on a node that was removed from its cluster.
    fn ensure_member(&self) -> Result<(), Status> {
        if let Some(at) = self.retired_at() {
            return Err(Status::failed_precondition(format!(
                "node {} is not a member of the cluster: it was removed at log index {at}; send requests to a member \
                 (to bring this machine back, start a node with a new id and an empty data dir, and join it)",
                self.id
            )));
        }
        let m = self.metrics();
        let has_members = m.membership_config.membership().nodes().next().is_some();
        if !has_members {
            return Err(Status::unavailable(format!(
                "node {} has not joined a cluster yet; start it with --init or --join",
                self.id
            )));
        }
        if !Self::is_member(&m, self.id) {
            return Err(not_member(self.id));
        }
        Ok(())
    }

    async fn leader_client(&self) -> Result<PeerClient, Status> {
        let m = self.metrics();
        let leader = m.current_leader.ok_or_else(unavailable_no_leader)?;
        if leader == self.id {
            return Err(Status::unavailable("leadership is changing; retry shortly"));
        }
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
            .ok_or_else(unavailable_no_leader)?;
        let mut peers = self.peers.lock().await;
        if let Some(c) = peers.get(&addr) {
            return Ok(c.clone());
        }
        let c = peer_client(&addr, self.cluster_secret.as_deref())
            .map_err(|e| Status::internal(e.to_string()))?;
        peers.insert(addr, c.clone());
        Ok(c)
    }

    async fn forward(&self, req: ForwardRequest) -> Result<ForwardReply, Status> {
        let mut client = self.leader_client().await?;
        let data =
            encode("forwarded request", &req).map_err(|e| Status::internal(e.to_string()))?;
        let reply = client.forward(Payload { data }).await?.into_inner();
        let result: ForwardResult =
            decode("forwarded reply", &reply.data).map_err(|e| Status::internal(e.to_string()))?;
        result.map_err(Status::from)
    }

    /// Proposes a command and returns what applying it produced. A follower
    /// hands the command to the leader.
    pub(crate) async fn write(&self, command: Command) -> Result<Response, Status> {
        self.ensure_member()?;
        match self.proposer.propose(&self.raft, command.clone()).await {
            Outcome::Done(r) => Ok(r),
            Outcome::NotLeader => {
                match self
                    .forward(ForwardRequest::Write {
                        from: self.id,
                        command,
                    })
                    .await?
                {
                    ForwardReply::Written(r) => Ok(r),
                    other => Err(Status::internal(format!("unexpected reply {other:?}"))),
                }
            }
            Outcome::Failed(s) => Err(s),
        }
    }

    /// Returns once this node has applied every change acknowledged before
    /// the call (the read-index protocol). A stale read skips it.
    pub(crate) async fn read_barrier(&self, stale: bool) -> Result<(), Status> {
        if stale {
            return Ok(());
        }
        self.ensure_member()?;
        match self.reads.read_index(&self.raft).await {
            Ok(_) => Ok(()),
            Err(ReadIndexError::NotLeader) => {
                let index = match self
                    .forward(ForwardRequest::ReadIndex { from: self.id })
                    .await?
                {
                    ForwardReply::ReadIndex(i) => i,
                    other => return Err(Status::internal(format!("unexpected reply {other:?}"))),
                };
                self.raft
                    .wait(Some(READ_INDEX_WAIT))
                    .applied_index_at_least(index, "linearizable read")
                    .await
                    .map(|_| ())
                    .map_err(|_| {
                        Status::unavailable(
                            "this node is too far behind the leader to serve a linearizable read; retry or ask another member",
                        )
                    })
            }
            Err(ReadIndexError::NoQuorum(e)) => Err(Status::unavailable(format!("no quorum: {e}"))),
            Err(ReadIndexError::Stopped(e)) => Err(fatal(e)),
        }
    }

    /// Runs a membership change on the leader, wherever it is.
    pub(crate) async fn on_leader(&self, req: ForwardRequest) -> Result<ForwardReply, Status> {
        if self.metrics().current_leader == Some(self.id) {
            return self.serve_forwarded(req).await.map_err(Status::from);
        }
        self.forward(req).await
    }

    /// Serves a request that a follower forwarded (or this node's own
    /// membership change, when it leads).
    pub(crate) async fn serve_forwarded(&self, req: ForwardRequest) -> ForwardResult {
        let m = self.metrics();
        match req {
            ForwardRequest::Write { from, command } => {
                if !Self::is_member(&m, from) {
                    return Err(not_member(from).into());
                }
                match self.proposer.propose(&self.raft, command).await {
                    Outcome::Done(r) => Ok(ForwardReply::Written(r)),
                    Outcome::NotLeader => Err(Status::unavailable(
                        "the leader changed while forwarding; retry",
                    )
                    .into()),
                    Outcome::Failed(s) => Err(s.into()),
                }
            }
            ForwardRequest::ReadIndex { from } => {
                if !Self::is_member(&m, from) {
                    return Err(not_member(from).into());
                }
                match self.reads.read_index(&self.raft).await {
                    Ok(index) => Ok(ForwardReply::ReadIndex(index)),
                    Err(ReadIndexError::NotLeader) => Err(Status::unavailable(
                        "the leader changed while forwarding; retry",
                    )
                    .into()),
                    Err(ReadIndexError::NoQuorum(e)) => {
                        Err(Status::unavailable(format!("no quorum: {e}")).into())
                    }
                    Err(ReadIndexError::Stopped(e)) => Err(fatal(e).into()),
                }
            }
            ForwardRequest::AddLearner { id, addr } => {
                self.add_learner(&m, id, addr).await.map_err(Into::into)
            }
            ForwardRequest::Promote { id } => self.promote(&m, id).await.map_err(Into::into),
            ForwardRequest::Remove { id } => self.remove(&m, id).await.map_err(Into::into),
        }
    }

    async fn add_learner(
        &self,
        m: &RaftMetrics<NodeId, BasicNode>,
        id: NodeId,
        addr: String,
    ) -> Result<ForwardReply, Status> {
        if addr.trim().is_empty() {
            return Err(Status::invalid_argument(
                "the new member's address is empty",
            ));
        }
        if let Some(existing) = m.membership_config.membership().get_node(&id) {
            if existing.addr == addr {
                return Ok(ForwardReply::Membership(view(
                    m,
                    m.last_log_index.unwrap_or(0),
                )));
            }
            return Err(Status::already_exists(format!(
                "node {id} is already a member at {}; remove it first to move it to {addr}",
                existing.addr
            )));
        }
        let r = self
            .raft
            .add_learner(id, BasicNode { addr }, true)
            .await
            .map_err(write_error)?;
        Ok(ForwardReply::Membership(self.view_after(r.log_id.index)))
    }

    async fn promote(
        &self,
        m: &RaftMetrics<NodeId, BasicNode>,
        id: NodeId,
    ) -> Result<ForwardReply, Status> {
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(Status::not_found(format!(
                "node {id} is not a member of the cluster; add it as a learner first (ndc cluster add)"
            )));
        }
        if membership.voter_ids().any(|v| v == id) {
            return Ok(ForwardReply::Membership(view(
                m,
                m.last_log_index.unwrap_or(0),
            )));
        }
        let r = self
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
            .await
            .map_err(write_error)?;
        Ok(ForwardReply::Membership(self.view_after(r.log_id.index)))
    }

    async fn remove(
        &self,
        m: &RaftMetrics<NodeId, BasicNode>,
        id: NodeId,
    ) -> Result<ForwardReply, Status> {
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(Status::not_found(format!(
                "node {id} is not a member of the cluster"
            )));
        }
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(Status::failed_precondition(format!(
                    "node {id} is the last voter; a cluster cannot remove its last voter"
                )));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let removed_addr = membership.get_node(&id).map(|n| n.addr.clone());
        let r = self
            .raft
            .change_membership(change, false)
            .await
            .map_err(write_error)?;
        if let Some(addr) = removed_addr {
            tokio::spawn(
                tell_removed(id, addr, r.log_id.index, self.cluster_secret.clone())
                    .instrument(tracing::info_span!("retire", node = id)),
            );
        }
        Ok(ForwardReply::Membership(self.view_after(r.log_id.index)))
    }

    fn view_after(&self, log_index: u64) -> MembershipView {
        view(&self.metrics(), log_index)
    }
}

fn view(m: &RaftMetrics<NodeId, BasicNode>, log_index: u64) -> MembershipView {
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    MembershipView {
        members: membership
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone(), voters.contains(id)))
            .collect(),
        log_index,
    }
}

/// Tells a removed node it is out, a few times if it does not answer. Best
/// effort: a node that is down learns it from its peers' refusals instead.
async fn tell_removed(id: NodeId, addr: String, log_index: u64, secret: Option<String>) {
    const ATTEMPTS: u32 = 5;
    let Ok(data) = encode("retire notice", &RetireNotice { id, log_index }) else {
        return;
    };
    let Ok(mut client) = peer_client(&addr, secret.as_deref()) else {
        return;
    };
    for attempt in 1..=ATTEMPTS {
        let mut req = tonic::Request::new(Payload { data: data.clone() });
        req.set_timeout(Duration::from_secs(2));
        match client.retire(req).await {
            Ok(_) => return,
            Err(s) => {
                warn!(id, attempt, error = %s.message(), "could not tell the removed node");
                tokio::time::sleep(JOIN_RETRY * attempt).await;
            }
        }
    }
}

pub(crate) use crate::clock::now_ms;

/// The request id a client sent with a write, if any.
pub(crate) fn request_id(md: &tonic::metadata::MetadataMap) -> Result<Option<String>, Status> {
    match md.get(ndc_api::client::REQUEST_ID_HEADER) {
        None => Ok(None),
        Some(v) => {
            let id = v
                .to_str()
                .map_err(|_| Status::invalid_argument("the request id is not text"))?;
            ndc_store::validate_request_id(id).map_err(Status::invalid_argument)?;
            Ok(Some(id.to_string()))
        }
    }
}

/// A command wrapped with its request id, so it is applied once.
pub(crate) fn once(request_id: Option<String>, command: Command) -> Command {
    match request_id {
        Some(request_id) => Command::Once {
            request_id,
            command: Box::new(command),
        },
        None => command,
    }
}

fn not_member(id: NodeId) -> Status {
    Status::failed_precondition(format!(
        "node {id} is not a member of the cluster (it was removed or never joined); send requests to a member"
    ))
}
