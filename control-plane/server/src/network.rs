//! openraft's network over gRPC: each message is encoded with the store's
//! versioned binary codec and carried in a `Payload`.

use ndc_api::client::Auth;
use ndc_api::raft::raft_client::RaftClient;
use ndc_api::raft::Payload;
use ndc_store::{decode, encode, NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Largest Raft message accepted: a snapshot chunk plus headroom.
pub(crate) const MAX_RAFT_MESSAGE: usize = 64 * 1024 * 1024;

/// A client of another node's node-to-node service, presenting the
/// cluster secret.
pub(crate) type PeerClient = RaftClient<InterceptedService<Channel, Auth>>;

/// A client for the node at `addr`.
pub(crate) fn peer_client(addr: &str, secret: Option<&str>) -> Result<PeerClient, ndc_api::Error> {
    let ch = ndc_api::client::channel(addr)?;
    Ok(RaftClient::with_interceptor(ch, Auth::cluster(secret)?)
        .max_decoding_message_size(MAX_RAFT_MESSAGE)
        .max_encoding_message_size(MAX_RAFT_MESSAGE))
}

/// Creates one gRPC client per peer.
pub(crate) struct Network {
    pub(crate) secret: Option<String>,
}

pub(crate) struct Peer {
    target: NodeId,
    node: BasicNode,
    client: Option<PeerClient>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        let client = peer_client(&node.addr, self.secret.as_deref()).ok();
        Peer {
            target,
            node: node.clone(),
            client,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, BasicNode, RaftError<NodeId, E>>;

impl Peer {
    async fn call<Req, Resp, E>(
        &mut self,
        method: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        let data =
            encode("raft request", req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let Some(client) = self.client.as_mut() else {
            let e = Msg(format!(
                "invalid address {:?} for node {}",
                self.node.addr, self.target
            ));
            return Err(RPCError::Unreachable(Unreachable::new(&e)));
        };
        let mut request = tonic::Request::new(Payload { data });
        request.set_timeout(option.hard_ttl());
        let result = match method {
            "append" => client.append_entries(request).await,
            "vote" => client.vote(request).await,
            _ => client.install_snapshot(request).await,
        };
        let payload = match result {
            Ok(r) => r.into_inner(),
            Err(status) => {
                let e = Msg(format!(
                    "{method} to node {}: {}",
                    self.target,
                    status.message()
                ));
                return Err(match status.code() {
                    tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Cancelled => RPCError::Unreachable(Unreachable::new(&e)),
                    _ => RPCError::Network(NetworkError::new(&e)),
                });
            }
        };
        let decoded: Result<Resp, RaftError<NodeId, E>> = decode("raft response", &payload.data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr> {
        self.call("vote", &rpc, &option).await
    }
}
