//! The node-to-node gRPC service: Raft messages in, and requests that
//! followers forward to the leader.

use std::sync::Arc;

use ndc_api::raft::raft_server::Raft as RaftRpc;
use ndc_api::raft::Payload;
use ndc_store::{decode, encode, TypeConfig};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use tonic::{Request, Response, Status};

use crate::forward::{ForwardRequest, RetireNotice};
use crate::node::Node;

pub(crate) struct RaftService {
    pub(crate) node: Arc<Node>,
}

fn bad_payload(e: ndc_store::Error) -> Status {
    Status::invalid_argument(format!("undecodable raft payload: {e}"))
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<Payload>, Status> {
    let data = encode("raft response", value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(Payload { data }))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode("append entries", &request.into_inner().data).map_err(bad_payload)?;
        reply(&self.node.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: VoteRequest<u64> =
            decode("vote", &request.into_inner().data).map_err(bad_payload)?;
        reply(&self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<Payload>,
    ) -> Result<Response<Payload>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> =
            decode("install snapshot", &request.into_inner().data).map_err(bad_payload)?;
        reply(&self.node.raft.install_snapshot(rpc).await)
    }

    async fn forward(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let req: ForwardRequest =
            decode("forwarded request", &request.into_inner().data).map_err(bad_payload)?;
        let result = match req {
            // Membership changes may arrive at any member (a joining node
            // knows one address): pass them on to the leader.
            r @ (ForwardRequest::AddLearner { .. }
            | ForwardRequest::Promote { .. }
            | ForwardRequest::Remove { .. }) => self.node.on_leader(r).await.map_err(Into::into),
            r => self.node.serve_forwarded(r).await,
        };
        reply(&result)
    }

    async fn retire(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let notice: RetireNotice =
            decode("retire notice", &request.into_inner().data).map_err(bad_payload)?;
        if notice.id != self.node.id {
            return Err(Status::invalid_argument(format!(
                "retire notice for node {} reached node {}",
                notice.id, self.node.id
            )));
        }
        self.node
            .retire(notice.log_index)
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        reply(&())
    }
}
