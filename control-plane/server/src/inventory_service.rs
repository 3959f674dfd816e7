//! The inventory service: hosts registered and kept alive by their agents.

use std::sync::Arc;

use ndc_api::inventory::inventory_server::Inventory;
use ndc_api::inventory::{self as pb};
use ndc_store::inventory::{self as inv, Host, HostState, InventoryOp, InventoryRequest};
use ndc_store::{Command, Response as StoreResponse};
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::node::{once, request_id, Node};
use crate::tenant_service::rejection;

pub(crate) struct InventoryService {
    pub(crate) node: Arc<Node>,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn capacity_to_pb(c: &inv::Capacity) -> pb::Capacity {
    pb::Capacity {
        cpu_millis: c.cpu_millis,
        memory_bytes: c.memory_bytes,
        storage_bytes: c.storage_bytes,
    }
}

fn capacity_from_pb(c: Option<&pb::Capacity>) -> inv::Capacity {
    c.map(|c| inv::Capacity {
        cpu_millis: c.cpu_millis,
        memory_bytes: c.memory_bytes,
        storage_bytes: c.storage_bytes,
    })
    .unwrap_or_default()
}

pub(crate) fn host_to_pb(h: &Host) -> pb::Host {
    pb::Host {
        spec: Some(pb::HostSpec {
            name: h.spec.name.clone(),
            zone: h.spec.zone.clone(),
            rack: h.spec.rack.clone(),
            labels: h.spec.labels.clone().into_iter().collect(),
            capacity: Some(capacity_to_pb(&h.spec.capacity)),
            simulated: h.spec.simulated,
        }),
        state: match h.state {
            HostState::Ready => "ready",
            HostState::NotReady => "not-ready",
        }
        .into(),
        cordoned: h.cordoned,
        registered_ms: h.registered_ms,
        last_heartbeat_ms: h.last_heartbeat_ms,
    }
}

/// Every host this node has applied, in name order.
pub(crate) fn hosts(node: &Node) -> Result<Vec<Host>, Status> {
    let page = node
        .reader
        .list(inv::NODES_PREFIX, None, 0)
        .map_err(|e| Status::internal(e.to_string()))?;
    page.items
        .into_iter()
        .map(|(_, o)| {
            serde_json::from_slice::<Host>(&o.value).map_err(|e| Status::internal(e.to_string()))
        })
        .collect()
}

fn host(node: &Node, name: &str) -> Result<Host, Status> {
    let (obj, _) = node
        .reader
        .get(&inv::node_key(name))
        .map_err(|e| Status::internal(e.to_string()))?;
    let obj = obj.ok_or_else(|| Status::not_found(format!("host {name} not found")))?;
    serde_json::from_slice(&obj.value).map_err(|e| Status::internal(e.to_string()))
}

impl InventoryService {
    async fn change(
        &self,
        md: &tonic::metadata::MetadataMap,
        op: InventoryOp,
    ) -> Result<u64, Status> {
        let actor = self.node.auth.actor(md)?;
        let req = InventoryRequest {
            actor,
            at_ms: now_ms(),
            op,
        };
        match self
            .node
            .write(once(request_id(md)?, Command::Inventory(req)))
            .await?
        {
            StoreResponse::Applied { revision, .. } => Ok(revision),
            StoreResponse::Rejected(r) => Err(rejection(r)),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    async fn answer(
        &self,
        md: &tonic::metadata::MetadataMap,
        op: InventoryOp,
        name: &str,
    ) -> Result<Response<pb::HostResponse>, Status> {
        let revision = self.change(md, op).await?;
        // This node applied the change before answering: read it back here.
        let h = host(&self.node, name)?;
        Ok(Response::new(pb::HostResponse {
            host: Some(host_to_pb(&h)),
            revision,
        }))
    }
}

#[tonic::async_trait]
impl Inventory for InventoryService {
    #[instrument(skip_all, fields(host = request.get_ref().spec.as_ref().map(|s| s.name.as_str()).unwrap_or("")))]
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::HostResponse>, Status> {
        let md = request.metadata().clone();
        let s = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("the request has no host spec"))?;
        let spec = inv::HostSpec {
            capacity: capacity_from_pb(s.capacity.as_ref()),
            name: s.name,
            zone: s.zone,
            rack: s.rack,
            labels: s.labels.into_iter().collect(),
            simulated: s.simulated,
        };
        inv::validate_host(&spec).map_err(Status::invalid_argument)?;
        let name = spec.name.clone();
        self.answer(&md, InventoryOp::Register(spec), &name).await
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let md = request.metadata().clone();
        let r = request.into_inner();
        let op = InventoryOp::Heartbeat {
            name: r.name,
            capacity: r.capacity.as_ref().map(|c| capacity_from_pb(Some(c))),
        };
        let revision = self.change(&md, op).await?;
        Ok(Response::new(pb::HeartbeatResponse { revision }))
    }

    async fn list(
        &self,
        request: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        self.node.auth.actor(request.metadata())?;
        let r = request.into_inner();
        self.node.read_barrier(r.stale).await?;
        let (revision, _) = self
            .node
            .reader
            .revisions()
            .map_err(|e| Status::internal(e.to_string()))?;
        let hosts = hosts(&self.node)?
            .iter()
            .filter(|h| r.zone.is_empty() || h.spec.zone == r.zone)
            .map(host_to_pb)
            .collect();
        Ok(Response::new(pb::ListHostsResponse { hosts, revision }))
    }

    async fn get(
        &self,
        request: Request<pb::GetHostRequest>,
    ) -> Result<Response<pb::HostResponse>, Status> {
        self.node.auth.actor(request.metadata())?;
        self.node.read_barrier(false).await?;
        let (revision, _) = self
            .node
            .reader
            .revisions()
            .map_err(|e| Status::internal(e.to_string()))?;
        let h = host(&self.node, &request.into_inner().name)?;
        Ok(Response::new(pb::HostResponse {
            host: Some(host_to_pb(&h)),
            revision,
        }))
    }

    async fn cordon(
        &self,
        request: Request<pb::CordonRequest>,
    ) -> Result<Response<pb::HostResponse>, Status> {
        let md = request.metadata().clone();
        let r = request.into_inner();
        let op = InventoryOp::Cordon {
            name: r.name.clone(),
            cordoned: r.cordoned,
        };
        self.answer(&md, op, &r.name).await
    }

    async fn remove(
        &self,
        request: Request<pb::RemoveHostRequest>,
    ) -> Result<Response<pb::RemoveHostResponse>, Status> {
        let md = request.metadata().clone();
        let name = request.into_inner().name;
        let revision = self.change(&md, InventoryOp::Remove { name }).await?;
        Ok(Response::new(pb::RemoveHostResponse { revision }))
    }
}
