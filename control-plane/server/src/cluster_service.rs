//! Cluster status and membership administration.

use crate::status;
use std::collections::BTreeSet;
use std::sync::Arc;

use ndc_api::cluster::cluster_server::Cluster;
use ndc_api::cluster::{self as pb};
use ndc_store::NodeId;
use openraft::ServerState;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::auth::require;
use crate::forward::{ForwardReply, ForwardRequest, MembershipView};
use crate::node::Node;
use ndc_core::domain::Role;

pub(crate) struct ClusterService {
    pub(crate) node: Arc<Node>,
}

fn membership_response(reply: ForwardReply) -> Result<Response<pb::MembershipResponse>, Status> {
    match reply {
        ForwardReply::Membership(MembershipView { members, log_index }) => {
            Ok(Response::new(pb::MembershipResponse {
                members: members
                    .into_iter()
                    .map(|(id, addr, voter)| pb::Member { id, addr, voter })
                    .collect(),
                log_index,
            }))
        }
        other => Err(Status::internal(format!("unexpected reply {other:?}"))),
    }
}

impl ClusterService {
    /// A membership change, by an operator, carried out on the leader.
    async fn change(
        &self,
        md: &tonic::metadata::MetadataMap,
        req: ForwardRequest,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        require(
            &self.node.auth.actor(md)?,
            &[Role::DcOperator],
            "change the cluster's membership",
        )?;
        membership_response(self.node.on_leader(req).await?)
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.node.auth.actor(_request.metadata())?;
        let node = &self.node;
        let m = node.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let leader_addr = m
            .current_leader
            .and_then(|l| membership.get_node(&l))
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        let last_log_index = m.last_log_index.unwrap_or(0);
        let replication = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .filter(|(id, _)| **id != node.id)
                    .map(|(id, matched)| {
                        let matched_index = matched.map(|l| l.index);
                        pb::Replication {
                            id: *id,
                            matched_index,
                            lag: last_log_index.saturating_sub(matched_index.unwrap_or(0)),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let (revision, compacted_revision) = node.reader.revisions().map_err(status::store)?;
        Ok(Response::new(pb::StatusResponse {
            id: node.id,
            addr: node.addr.clone(),
            state: match m.state {
                _ if node.retired_at().is_some() => "removed",
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            }
            .into(),
            leader_id: m.current_leader,
            leader_addr,
            term: m.current_term,
            last_log_index,
            commit_index: node.log.committed().map(|l| l.index).unwrap_or(0),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
            members: membership
                .nodes()
                .map(|(id, n)| pb::Member {
                    id: *id,
                    addr: n.addr.clone(),
                    voter: voters.contains(id),
                })
                .collect(),
            replication,
            revision,
            compacted_revision,
            joint: membership.get_joint_config().len() > 1,
        }))
    }

    #[instrument(skip_all, fields(id = request.get_ref().id))]
    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let md = request.metadata().clone();
        let r = request.into_inner();
        self.change(
            &md,
            ForwardRequest::AddLearner {
                id: r.id,
                addr: r.addr,
            },
        )
        .await
    }

    #[instrument(skip_all, fields(id = request.get_ref().id))]
    async fn promote(
        &self,
        request: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let md = request.metadata().clone();
        self.change(
            &md,
            ForwardRequest::Promote {
                id: request.into_inner().id,
            },
        )
        .await
    }

    #[instrument(skip_all, fields(id = request.get_ref().id))]
    async fn remove(
        &self,
        request: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let md = request.metadata().clone();
        self.change(
            &md,
            ForwardRequest::Remove {
                id: request.into_inner().id,
            },
        )
        .await
    }
}
