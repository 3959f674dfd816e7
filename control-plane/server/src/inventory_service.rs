//! The inventory service: hosts registered and kept alive by their agents.

use crate::status;
use std::sync::Arc;

use ndc_api::inventory::inventory_server::Inventory;
use ndc_api::inventory::{self as pb};
use ndc_core::inventory::{self as inv, Host, HostState, InventoryOp, InventoryRequest};
use ndc_store::{Command, Response as StoreResponse};
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::node::{once, request_id, Node};

pub(crate) struct InventoryService {
    pub(crate) node: Arc<Node>,
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
        .list(ndc_store::keys::NODES_PREFIX, None, 0)
        .map_err(status::store)?;
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
        .get(&ndc_store::keys::node_key(name))
        .map_err(status::store)?;
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
            at_ms: crate::node::now_ms(),
            op,
        };
        match self
            .node
            .write(once(request_id(md)?, Command::Inventory(req)))
            .await?
        {
            StoreResponse::Applied { revision, .. } => Ok(revision),
            StoreResponse::Rejected(r) => Err(status::rejected(r)),
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

fn cap_of(q: &ndc_core::Quota) -> inv::Capacity {
    inv::Capacity {
        cpu_millis: q.cpu_millis,
        memory_bytes: q.memory_bytes,
        storage_bytes: q.storage_bytes,
    }
}

fn add(a: &mut inv::Capacity, b: &inv::Capacity) {
    a.cpu_millis = a.cpu_millis.saturating_add(b.cpu_millis);
    a.memory_bytes = a.memory_bytes.saturating_add(b.memory_bytes);
    a.storage_bytes = a.storage_bytes.saturating_add(b.storage_bytes);
}

fn zone(name: &str, hosts: &[&Host], oc: &inv::Overcommit) -> pb::ZoneCapacity {
    let owned: Vec<Host> = hosts.iter().map(|h| (*h).clone()).collect();
    let cap = inv::schedulable(&owned);
    pb::ZoneCapacity {
        zone: name.to_string(),
        hosts: hosts.len() as u32,
        ready: hosts.iter().filter(|h| h.state == HostState::Ready).count() as u32,
        cordoned: hosts.iter().filter(|h| h.cordoned).count() as u32,
        capacity: Some(capacity_to_pb(&cap)),
        grantable: Some(capacity_to_pb(&inv::grantable(&cap, oc))),
    }
}

/// The overcommit ratios in force on this node's state.
fn overcommit(node: &Node) -> Result<inv::Overcommit, Status> {
    let (obj, _) = node
        .reader
        .get(ndc_store::keys::OVERCOMMIT_KEY)
        .map_err(status::store)?;
    match obj {
        Some(o) => serde_json::from_slice(&o.value).map_err(|e| Status::internal(e.to_string())),
        None => Ok(inv::DEFAULT_OVERCOMMIT),
    }
}

/// The capacity report, from this node's state (after a read barrier).
fn report(node: &Node) -> Result<pb::CapacityReport, Status> {
    let oc = overcommit(node)?;
    let all = hosts(node)?;
    let mut zones: std::collections::BTreeMap<&str, Vec<&Host>> = std::collections::BTreeMap::new();
    for h in &all {
        zones.entry(h.spec.zone.as_str()).or_default().push(h);
    }
    let everything: Vec<&Host> = all.iter().collect();
    let total = zone("all zones", &everything, &oc);
    let grantable = inv::grantable(&inv::schedulable(&all), &oc);
    node.reader
        .with_registry(|reg| {
            let mut granted = inv::Capacity::default();
            let mut by_level: std::collections::BTreeMap<String, inv::Capacity> =
                Default::default();
            let mut by_branch: std::collections::BTreeMap<String, inv::Capacity> =
                Default::default();
            for t in reg.iter() {
                let q = cap_of(&t.quota);
                if t.parent.is_none() {
                    add(&mut granted, &q);
                }
                add(by_level.entry(t.level.to_string()).or_default(), &q);
                let parent_branch = t
                    .parent
                    .as_deref()
                    .and_then(|p| reg.get(p))
                    .map(|p| p.branch);
                if parent_branch != Some(t.branch) {
                    add(by_branch.entry(t.branch.to_string()).or_default(), &q);
                }
            }
            let mut largest: Vec<&ndc_core::Tenant> =
                reg.iter().filter(|t| t.parent.is_some()).collect();
            largest.sort_by(|a, b| {
                b.quota
                    .cpu_millis
                    .cmp(&a.quota.cpu_millis)
                    .then(a.id.cmp(&b.id))
            });
            let share = |name: String, display_name: String, c: &inv::Capacity| pb::Share {
                name,
                display_name,
                quota: Some(capacity_to_pb(c)),
            };
            pb::CapacityReport {
                zones: zones.iter().map(|(z, hs)| zone(z, hs, &oc)).collect(),
                total: Some(total),
                headroom: Some(capacity_to_pb(&inv::Capacity {
                    cpu_millis: grantable.cpu_millis.saturating_sub(granted.cpu_millis),
                    memory_bytes: grantable.memory_bytes.saturating_sub(granted.memory_bytes),
                    storage_bytes: grantable
                        .storage_bytes
                        .saturating_sub(granted.storage_bytes),
                })),
                granted: Some(capacity_to_pb(&granted)),
                by_level: by_level
                    .iter()
                    .map(|(k, c)| share(k.clone(), String::new(), c))
                    .collect(),
                by_branch: by_branch
                    .iter()
                    .map(|(k, c)| share(k.clone(), String::new(), c))
                    .collect(),
                largest: largest
                    .iter()
                    .take(10)
                    .map(|t| share(t.id.clone(), t.display_name.clone(), &cap_of(&t.quota)))
                    .collect(),
                overcommit: format!(
                    "cpu {}.{:03}x, memory {}.{:03}x, storage {}.{:03}x",
                    oc.cpu_milli / 1000,
                    oc.cpu_milli % 1000,
                    oc.memory_milli / 1000,
                    oc.memory_milli % 1000,
                    oc.storage_milli / 1000,
                    oc.storage_milli % 1000
                ),
            }
        })
        .map_err(status::store)
}

#[tonic::async_trait]
impl Inventory for InventoryService {
    async fn set_overcommit(
        &self,
        request: Request<pb::SetOvercommitRequest>,
    ) -> Result<Response<pb::SetOvercommitResponse>, Status> {
        let md = request.metadata().clone();
        let r = request.into_inner();
        let milli = |v: f64| -> Result<u64, Status> {
            if v.is_finite() && v >= 0.0 {
                Ok((v * 1000.0).round() as u64)
            } else {
                Err(Status::invalid_argument(format!(
                    "overcommit {v} is not a number of times"
                )))
            }
        };
        let oc = inv::Overcommit {
            cpu_milli: milli(r.cpu)?,
            memory_milli: milli(r.memory)?,
            storage_milli: milli(r.storage)?,
        };
        inv::validate_overcommit(&oc).map_err(Status::invalid_argument)?;
        let revision = self.change(&md, InventoryOp::SetOvercommit(oc)).await?;
        Ok(Response::new(pb::SetOvercommitResponse { revision }))
    }

    async fn capacity(
        &self,
        request: Request<pb::CapacityRequest>,
    ) -> Result<Response<pb::CapacityReport>, Status> {
        self.node.auth.actor(request.metadata())?;
        self.node.read_barrier(false).await?;
        Ok(Response::new(report(&self.node)?))
    }

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
        let revision = self.node.revision()?;
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
        let revision = self.node.revision()?;
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
