//! The catalogue service: shared services and subscriptions, checked in apply.

use crate::{status, watch};
use ndc_store::{keys, EventKind};
use std::sync::Arc;

use ndc_api::catalog::catalog_server::Catalog;
use ndc_api::catalog::{self as pb};
use ndc_core::catalog::{self, CatalogOp, CatalogRequest, Service, ServiceSpec, Subscription};
use ndc_core::domain::Actor;
use ndc_core::Level;
use ndc_store::Response as StoreResponse;
use tonic::{Request, Response, Status};

use crate::node::Node;

pub(crate) struct CatalogService {
    pub(crate) node: Arc<Node>,
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn spec_from_pb(s: pb::ServiceSpec) -> Result<ServiceSpec, Status> {
    let level = |what: &str, v: &str| -> Result<Level, Status> {
        v.parse()
            .map_err(|e: String| Status::invalid_argument(format!("{what}: {e}")))
    };
    Ok(ServiceSpec {
        from: level("from", &s.from)?,
        to: level("to", &s.to)?,
        topology: catalog::Topology::parse(&s.topology).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown topology {:?}: use central or per-province",
                s.topology
            ))
        })?,
        name: s.name,
        display_name: s.display_name,
        capability: s.capability,
        layer: s.layer,
        depends_on: s.depends_on,
        per_tenant_database_bytes: s.per_tenant_database_bytes,
        per_tenant_bucket_bytes: s.per_tenant_bucket_bytes,
        owner: (!s.owner.is_empty()).then_some(s.owner),
        workload: s.workload,
    })
}

fn service_to_pb(s: &Service, subscribers: u64) -> pb::Service {
    let p = &s.spec;
    pb::Service {
        spec: Some(pb::ServiceSpec {
            name: p.name.clone(),
            display_name: p.display_name.clone(),
            capability: p.capability.clone(),
            layer: p.layer.clone(),
            from: p.from.as_str().into(),
            to: p.to.as_str().into(),
            topology: p.topology.as_str().into(),
            depends_on: p.depends_on.clone(),
            per_tenant_database_bytes: p.per_tenant_database_bytes,
            per_tenant_bucket_bytes: p.per_tenant_bucket_bytes,
            owner: p.owner.clone().unwrap_or_default(),
            workload: p.workload,
        }),
        generation: s.generation,
        created_revision: s.created_revision,
        exemption: s.exemption.clone().unwrap_or_default(),
        subscribers,
    }
}

fn sub_to_pb(s: &Subscription) -> pb::Subscription {
    pb::Subscription {
        tenant: s.tenant.clone(),
        service: s.service.clone(),
        created_revision: s.created_revision,
        created_at_ms: s.created_at_ms,
        created_by: s.created_by.clone(),
    }
}

impl CatalogService {
    async fn propose(
        &self,
        actor: Actor,
        decision: Option<String>,
        op: CatalogOp,
        request_id: Option<String>,
    ) -> Result<(Option<Box<Service>>, Option<Subscription>, u64), Status> {
        let req = CatalogRequest {
            actor,
            at_ms: crate::node::now_ms(),
            decision,
            op,
        };
        match self
            .node
            .write(crate::node::once(
                request_id,
                ndc_store::Command::Catalog(Box::new(req)),
            ))
            .await?
        {
            StoreResponse::Catalog {
                revision,
                service,
                subscription,
            } => Ok((service, subscription, revision)),
            StoreResponse::Rejected(r) => Err(status::rejected(r)),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    fn services(&self) -> Result<(Vec<Service>, u64), Status> {
        let page = self
            .node
            .reader
            .list(ndc_store::keys::SERVICES_PREFIX, None, 0)
            .map_err(status::store)?;
        let services = page
            .items
            .iter()
            .map(|(_, o)| serde_json::from_slice(&o.value).map_err(internal))
            .collect::<Result<Vec<Service>, Status>>()?;
        Ok((services, page.revision))
    }

    fn subscriptions(&self) -> Result<(Vec<Subscription>, u64), Status> {
        let page = self
            .node
            .reader
            .list(ndc_store::keys::SUBSCRIPTIONS_PREFIX, None, 0)
            .map_err(status::store)?;
        let subs = page
            .items
            .iter()
            .map(|(_, o)| serde_json::from_slice(&o.value).map_err(internal))
            .collect::<Result<Vec<Subscription>, Status>>()?;
        Ok((subs, page.revision))
    }

    /// The subscription `op` asks for, when it exists and the caller may
    /// ask for it: found by a linearizable read, it is answered without a
    /// log entry (the operator asks again on every reconcile of a
    /// subscription). The answer is the one the log would give; anything
    /// else (a new subscription, a refusal) goes through the log.
    async fn subscribed(
        &self,
        actor: &Actor,
        op: &CatalogOp,
    ) -> Result<Option<(Subscription, u64)>, Status> {
        let CatalogOp::Subscribe { tenant, service } = op else {
            return Ok(None);
        };
        self.node.read_barrier(false).await?;
        let reader = &self.node.reader;
        let id = reader
            .with_registry(|reg| {
                catalog::authorize(reg, actor, op)
                    .ok()
                    .and_then(|_| reg.resolve(tenant).map(|t| t.id.clone()))
            })
            .map_err(status::store)?;
        let Some(id) = id else {
            return Ok(None);
        };
        if reader
            .get(&ndc_store::keys::service_key(service))
            .map_err(status::store)?
            .0
            .is_none()
        {
            return Ok(None);
        }
        let (found, revision) = reader
            .get(&ndc_store::keys::subscription_key(&id, service))
            .map_err(status::store)?;
        let Some(o) = found else {
            return Ok(None);
        };
        let sub: Subscription = serde_json::from_slice(&o.value).map_err(internal)?;
        Ok(Some((sub, revision)))
    }

    /// The service as stored, when `spec` registers it again unchanged and
    /// the caller may register it: found by a linearizable read, it is
    /// answered without a log entry (the operator registers again on every
    /// reconcile of a shared service), as apply would answer it: a service
    /// registered again unchanged keeps its place (`check_register`), with
    /// or without a decision. A new or changed spec, and a refusal, go
    /// through the log.
    async fn registered(
        &self,
        actor: &Actor,
        spec: &ServiceSpec,
    ) -> Result<Option<(Service, u64)>, Status> {
        self.node.read_barrier(false).await?;
        let op = CatalogOp::Register(spec.clone());
        let allowed = self
            .node
            .reader
            .with_registry(|reg| catalog::authorize(reg, actor, &op).is_ok())
            .map_err(status::store)?;
        if !allowed {
            return Ok(None);
        }
        let (services, revision) = self.services()?;
        let Some(old) = services.iter().find(|s| s.spec.name == spec.name) else {
            return Ok(None);
        };
        if old.spec != *spec {
            return Ok(None);
        }
        Ok(Some((old.clone(), revision)))
    }

    fn authenticated(&self, md: &tonic::metadata::MetadataMap) -> Result<Actor, Status> {
        self.node.auth.actor(md)
    }
}

#[tonic::async_trait]
impl Catalog for CatalogService {
    type WatchStream = watch::Watch<pb::CatalogEvents>;

    #[tracing::instrument(skip_all, fields(from = request.get_ref().start_revision))]
    async fn watch(
        &self,
        request: Request<pb::WatchCatalogRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let actor = self.node.auth.actor(request.metadata())?;
        watch::require_reads_every_tenant(&actor, "watch the catalogue")?;
        let stream = watch::open(
            self.node.reader.clone(),
            request.into_inner().start_revision,
            |revision| pb::CatalogEvents {
                events: vec![],
                revision,
            },
            |revision, events| {
                let mut out = Vec::new();
                for e in events {
                    let object = if e.key.starts_with(keys::SERVICES_PREFIX) {
                        let s: Service = watch::decode(e)?;
                        pb::catalog_event::Object::Service(service_to_pb(&s, 0))
                    } else if e.key.starts_with(keys::SUBSCRIPTIONS_PREFIX) {
                        let s: Subscription = watch::decode(e)?;
                        pb::catalog_event::Object::Subscription(sub_to_pb(&s))
                    } else {
                        continue;
                    };
                    let kind = match e.kind {
                        EventKind::Put => pb::catalog_event::Kind::Put,
                        EventKind::Delete => pb::catalog_event::Kind::Delete,
                    };
                    out.push(pb::CatalogEvent {
                        kind: kind as i32,
                        object: Some(object),
                    });
                }
                Ok((!out.is_empty()).then_some(pb::CatalogEvents {
                    events: out,
                    revision,
                }))
            },
        )?;
        Ok(Response::new(stream))
    }

    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        let actor = self.authenticated(request.metadata())?;
        let rid = crate::node::request_id(request.metadata())?;
        let r = request.into_inner();
        let spec = spec_from_pb(
            r.spec
                .ok_or_else(|| Status::invalid_argument("the request has no service spec"))?,
        )?;
        catalog::validate_spec(&spec).map_err(|(k, m)| status::refused(k, m))?;
        let decision = (!r.decision.trim().is_empty()).then(|| r.decision.trim().to_string());
        // As for subscribe: only a sure answer is taken from the read.
        if let Ok(Some((service, revision))) = self.registered(&actor, &spec).await {
            return Ok(Response::new(pb::ServiceResponse {
                service: Some(service_to_pb(&service, 0)),
                revision,
            }));
        }
        let (service, _, revision) = self
            .propose(actor, decision, CatalogOp::Register(spec), rid)
            .await?;
        let service = service.ok_or_else(|| Status::internal("no service in the result"))?;
        Ok(Response::new(pb::ServiceResponse {
            service: Some(service_to_pb(&service, 0)),
            revision,
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::ServiceResponse>, Status> {
        self.authenticated(request.metadata())?;
        let name = request.into_inner().name;
        self.node.read_barrier(false).await?;
        let (services, revision) = self.services()?;
        let s = services
            .iter()
            .find(|s| s.spec.name == name)
            .ok_or_else(|| Status::not_found(format!("service {name} is not in the catalogue")))?;
        let (subs, _) = self.subscriptions()?;
        let n = subs.iter().filter(|x| x.service == name).count() as u64;
        Ok(Response::new(pb::ServiceResponse {
            service: Some(service_to_pb(s, n)),
            revision,
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        self.authenticated(request.metadata())?;
        self.node.read_barrier(false).await?;
        let (services, revision) = self.services()?;
        let (subs, _) = self.subscriptions()?;
        let services = services
            .iter()
            .map(|s| {
                let n = subs.iter().filter(|x| x.service == s.spec.name).count() as u64;
                service_to_pb(s, n)
            })
            .collect();
        Ok(Response::new(pb::ListServicesResponse {
            services,
            revision,
        }))
    }

    async fn remove(
        &self,
        request: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let actor = self.authenticated(request.metadata())?;
        let rid = crate::node::request_id(request.metadata())?;
        let name = request.into_inner().name;
        let (_, _, revision) = self
            .propose(actor, None, CatalogOp::Remove { name }, rid)
            .await?;
        Ok(Response::new(pb::RemoveResponse { revision }))
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::SubscriptionResponse>, Status> {
        let actor = self.authenticated(request.metadata())?;
        let rid = crate::node::request_id(request.metadata())?;
        let r = request.into_inner();
        let op = CatalogOp::Subscribe {
            tenant: r.tenant,
            service: r.service,
        };
        // The fast path answers only what it can be sure of; anything else
        // goes through the log, an error of its own included (a node that
        // cannot confirm it is current forwards the write, as before).
        if let Ok(Some((sub, revision))) = self.subscribed(&actor, &op).await {
            return Ok(Response::new(pb::SubscriptionResponse {
                subscription: Some(sub_to_pb(&sub)),
                revision,
            }));
        }
        let (_, sub, revision) = self.propose(actor, None, op, rid).await?;
        Ok(Response::new(pb::SubscriptionResponse {
            subscription: sub.as_ref().map(sub_to_pb),
            revision,
        }))
    }

    async fn unsubscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<pb::RemoveResponse>, Status> {
        let actor = self.authenticated(request.metadata())?;
        let rid = crate::node::request_id(request.metadata())?;
        let r = request.into_inner();
        let (_, _, revision) = self
            .propose(
                actor,
                None,
                CatalogOp::Unsubscribe {
                    tenant: r.tenant,
                    service: r.service,
                },
                rid,
            )
            .await?;
        Ok(Response::new(pb::RemoveResponse { revision }))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let actor = self.authenticated(request.metadata())?;
        let r = request.into_inner();
        self.node.read_barrier(false).await?;
        let (subs, revision) = self.subscriptions()?;
        let subscriptions = self
            .node
            .reader
            .with_registry(|reg| {
                subs.iter()
                    .filter(|s| r.tenant.is_empty() || s.tenant == r.tenant)
                    .filter(|s| r.service.is_empty() || s.service == r.service)
                    .filter(|s| actor.can_read(reg, &s.tenant))
                    .map(sub_to_pb)
                    .collect()
            })
            .map_err(status::store)?;
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions,
            revision,
        }))
    }
}
