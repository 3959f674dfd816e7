//! The tenant service: CRUD and reorganisation, checked in apply.

use crate::{status, watch};
use ndc_store::{keys, EventKind};
use std::sync::Arc;

use ndc_api::convert;
use ndc_api::tenants::tenants_server::Tenants;
use ndc_api::tenants::{self as pb};
use ndc_core::domain::{self, Actor, DomainOp};
use ndc_core::Level;
use ndc_store::Response as StoreResponse;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::node::Node;

pub(crate) struct TenantService {
    pub(crate) node: Arc<Node>,
}

fn decision(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

pub(crate) struct Applied {
    revision: u64,
    changed: Vec<ndc_core::Tenant>,
    plan: Option<ndc_core::Plan>,
}

impl TenantService {
    async fn propose(
        &self,
        actor: Actor,
        decision: Option<String>,
        op: DomainOp,
        request_id: Option<String>,
    ) -> Result<Applied, Status> {
        self.propose_checked(actor, decision, op, None, request_id)
            .await
    }

    async fn propose_checked(
        &self,
        actor: Actor,
        decision: Option<String>,
        op: DomainOp,
        expected_plan: Option<String>,
        request_id: Option<String>,
    ) -> Result<Applied, Status> {
        let req = domain::DomainRequest {
            actor,
            decision,
            at_ms: crate::node::now_ms(),
            op,
            expected_plan,
        };
        match self
            .node
            .write(crate::node::once(
                request_id,
                ndc_store::Command::Domain(Box::new(req)),
            ))
            .await?
        {
            StoreResponse::Domain {
                revision,
                changed,
                plan,
                ..
            } => Ok(Applied {
                revision,
                changed,
                plan,
            }),
            StoreResponse::Rejected(r) => Err(status::rejected(r)),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    fn tenant_response(
        applied: &Applied,
        id: &str,
    ) -> Result<Response<pb::TenantResponse>, Status> {
        let t = applied
            .changed
            .iter()
            .find(|t| t.id == id)
            .ok_or_else(|| Status::internal(format!("tenant {id} missing from the result")))?;
        Ok(Response::new(pb::TenantResponse {
            tenant: Some(convert::tenant_to_pb(t)),
            revision: applied.revision,
        }))
    }
}

#[tonic::async_trait]
impl Tenants for TenantService {
    type WatchStream = watch::Watch<pb::TenantEvents>;

    #[instrument(skip_all, fields(from = request.get_ref().start_revision))]
    async fn watch(
        &self,
        request: Request<pb::WatchTenantsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let actor = self.node.auth.actor(request.metadata())?;
        watch::require_reads_every_tenant(&actor, "watch tenants")?;
        let stream = watch::open(
            self.node.reader.clone(),
            request.into_inner().start_revision,
            |revision| pb::TenantEvents {
                events: vec![],
                revision,
            },
            |revision, events| {
                let mut out = Vec::new();
                for e in events {
                    let Some(id) = e.key.strip_prefix(keys::TENANTS_PREFIX) else {
                        continue;
                    };
                    out.push(match e.kind {
                        EventKind::Put => pb::TenantEvent {
                            kind: pb::tenant_event::Kind::Put as i32,
                            id: id.to_string(),
                            tenant: Some(convert::tenant_to_pb(&watch::decode(e)?)),
                        },
                        EventKind::Delete => pb::TenantEvent {
                            kind: pb::tenant_event::Kind::Delete as i32,
                            id: id.to_string(),
                            tenant: None,
                        },
                    });
                }
                Ok((!out.is_empty()).then_some(pb::TenantEvents {
                    events: out,
                    revision,
                }))
            },
        )?;
        Ok(Response::new(stream))
    }

    #[instrument(skip_all, fields(id = request.get_ref().spec.as_ref().map(|s| s.id.as_str()).unwrap_or("")))]
    async fn create(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::TenantResponse>, Status> {
        let actor = self.node.auth.actor(request.metadata())?;
        let rid = crate::node::request_id(request.metadata())?;
        let r = request.into_inner();
        let spec = r
            .spec
            .ok_or_else(|| Status::invalid_argument("the request has no tenant spec"))?;
        let spec = convert::spec_from_pb(spec).map_err(Status::invalid_argument)?;
        // Shape checks before the log, so bad input costs no revision.
        let spec = ndc_core::validate_spec(spec).map_err(|e| status::core(&e))?;
        let id = spec.id.clone();
        let applied = self
            .propose(
                actor,
                decision(&r.decision),
                DomainOp::CreateTenant(spec),
                rid,
            )
            .await?;
        Self::tenant_response(&applied, &id)
    }

    async fn get(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::TenantResponse>, Status> {
        let actor = self.node.auth.actor(request.metadata())?;
        let r = request.into_inner();
        self.node.read_barrier(r.stale).await?;
        let revision = self.node.revision()?;
        self.node
            .reader
            .with_registry(|reg| {
                let t = reg
                    .resolve(&r.id)
                    .ok_or_else(|| Status::not_found(format!("tenant {} not found", r.id)))?;
                if !actor.can_read(reg, &t.id) {
                    return Err(Status::permission_denied(format!(
                        "{} may not read tenant {}: it is outside the caller's tenants",
                        actor.name, t.id
                    )));
                }
                Ok(Response::new(pb::TenantResponse {
                    tenant: Some(convert::tenant_to_pb(t)),
                    revision,
                }))
            })
            .map_err(status::store)?
    }

    async fn list(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let actor = self.node.auth.actor(request.metadata())?;
        let r = request.into_inner();
        let level: Option<Level> = (!r.level.is_empty())
            .then(|| r.level.parse())
            .transpose()
            .map_err(Status::invalid_argument)?;
        let branch: Option<ndc_core::Branch> = (!r.branch.is_empty())
            .then(|| r.branch.parse())
            .transpose()
            .map_err(Status::invalid_argument)?;
        self.node.read_barrier(r.stale).await?;
        let revision = self.node.revision()?;
        self.node
            .reader
            .with_registry(|reg| {
                // A filter naming a tenant the caller may not read is refused
                // like a read of that tenant.
                let visible = |id: &str| -> Result<String, Status> {
                    let t = reg.find(id).map_err(|e| status::core(&e))?;
                    if actor.can_read(reg, &t.id) {
                        Ok(t.id.clone())
                    } else {
                        Err(Status::permission_denied(format!(
                            "{} may not read tenant {}: it is outside the caller's tenants",
                            actor.name, t.id
                        )))
                    }
                };
                let parent = match r.parent.as_str() {
                    "" => None,
                    p => Some(visible(p)?),
                };
                let pool: Vec<&ndc_core::Tenant> = match r.subtree.as_str() {
                    "" => reg.iter().collect(),
                    s => reg.subtree(&visible(s)?),
                };
                let tenants = pool
                    .into_iter()
                    .filter(|t| level.is_none_or(|l| t.level == l))
                    .filter(|t| branch.is_none_or(|b| t.branch == b))
                    .filter(|t| parent.is_none() || t.parent == parent)
                    .filter(|t| actor.can_read(reg, &t.id))
                    .map(convert::tenant_to_pb)
                    .collect();
                Ok(Response::new(pb::ListTenantsResponse { tenants, revision }))
            })
            .map_err(status::store)?
    }

    #[instrument(skip_all, fields(id = %request.get_ref().id))]
    async fn update(
        &self,
        request: Request<pb::UpdateTenantRequest>,
    ) -> Result<Response<pb::TenantResponse>, Status> {
        let actor = self.node.auth.actor(request.metadata())?;
        let rid = crate::node::request_id(request.metadata())?;
        let r = request.into_inner();
        let patch = convert::patch_from_pb(&r).map_err(Status::invalid_argument)?;
        let applied = self
            .propose(
                actor,
                decision(&r.decision),
                DomainOp::UpdateTenant {
                    id: r.id.clone(),
                    patch,
                },
                rid,
            )
            .await?;
        // The id may have been an old id: answer with the tenant it names.
        let id = applied
            .changed
            .iter()
            .find(|t| t.id == r.id || t.aliases.contains(&r.id))
            .map(|t| t.id.clone())
            .unwrap_or(r.id);
        Self::tenant_response(&applied, &id)
    }

    #[instrument(skip_all, fields(id = %request.get_ref().id))]
    async fn delete(
        &self,
        request: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::DeleteTenantResponse>, Status> {
        let actor = self.node.auth.actor(request.metadata())?;
        let rid = crate::node::request_id(request.metadata())?;
        let r = request.into_inner();
        let applied = self
            .propose(
                actor,
                decision(&r.decision),
                DomainOp::DeleteTenant { id: r.id },
                rid,
            )
            .await?;
        Ok(Response::new(pb::DeleteTenantResponse {
            revision: applied.revision,
        }))
    }

    async fn plan(
        &self,
        request: Request<pb::ReorgRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        let actor = self.node.auth.actor(request.metadata())?;
        let reorg =
            convert::reorg_from_pb(request.into_inner()).map_err(Status::invalid_argument)?;
        self.node.read_barrier(false).await?;
        let op = DomainOp::Reorganise(reorg);
        self.node
            .reader
            .with_registry(|reg| {
                domain::authorize(reg, &actor, &op).map_err(Status::permission_denied)?;
                let DomainOp::Reorganise(reorg) = &op else {
                    return Err(Status::internal("not a reorganisation"));
                };
                let plan = reg.plan(reorg).map_err(|e| status::core(&e))?;
                Ok(Response::new(convert::plan_to_pb(
                    &plan,
                    false,
                    0,
                    domain::plan_digest(&plan),
                )))
            })
            .map_err(status::store)?
    }

    #[instrument(skip_all)]
    async fn reorganise(
        &self,
        request: Request<pb::ReorgRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        let actor = self.node.auth.actor(request.metadata())?;
        let rid = crate::node::request_id(request.metadata())?;
        let r = request.into_inner();
        let decision = decision(&r.decision);
        let expected = (!r.expected_digest.is_empty()).then(|| r.expected_digest.clone());
        let reorg = convert::reorg_from_pb(r).map_err(Status::invalid_argument)?;
        let applied = self
            .propose_checked(actor, decision, DomainOp::Reorganise(reorg), expected, rid)
            .await?;
        let plan = applied
            .plan
            .as_ref()
            .ok_or_else(|| Status::internal("a reorganisation returned no plan"))?;
        Ok(Response::new(convert::plan_to_pb(
            plan,
            true,
            applied.revision,
            domain::plan_digest(plan),
        )))
    }
}
