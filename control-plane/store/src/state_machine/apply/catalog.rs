//! Applying catalogue requests: services and subscriptions.

use crate::keys;
use ndc_core::Registry;

use super::{audit_ops, to_json, Applier};
use crate::error::{Error, Result};
use crate::types::*;
use ndc_core::catalog::{self, CatalogOp, CatalogRequest, Service, Subscription};
use ndc_core::claims;
use ndc_core::domain::{self, AuditHead};

/// What one catalogue op writes, before the tenants' changes and the audit
/// record, and what it answers.
#[derive(Default)]
struct Planned {
    ops: Vec<Op>,
    changeset: Option<ndc_core::Changeset>,
    target: String,
    service: Option<Box<Service>>,
    subscription: Option<Subscription>,
}

/// An op either writes, or is answered at once (refused, or nothing new).
type Step = std::result::Result<Planned, Response>;

fn refused((kind, message): claims::Refusal) -> Response {
    Response::Rejected(Rejection::Domain { kind, message })
}

impl Applier<'_> {
    fn services(&self) -> Result<Vec<Service>> {
        self.scan(keys::SERVICES_PREFIX)?
            .values()
            .map(|v| {
                serde_json::from_slice(v).map_err(|e| Error::Decode {
                    what: "service",
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    /// Applies a catalogue request: authorise, check (one service per
    /// capability and scope; scope and dependencies of a subscription),
    /// write, and audit.
    pub(super) fn catalog(
        &mut self,
        revision: u64,
        req: CatalogRequest,
        reg: &mut Registry,
        head: &mut AuditHead,
    ) -> Result<Response> {
        if let Err(r) = catalog::authorize(reg, &req.actor, &req.op) {
            return Ok(refused(r));
        }
        let services = self.services()?;
        let step = match &req.op {
            CatalogOp::Register(spec) => {
                register(revision, spec, &services, req.decision.as_deref())?
            }
            CatalogOp::Remove { name } => self.remove_service(name, &services)?,
            CatalogOp::Subscribe { tenant, service } => {
                self.subscribe(revision, &req, reg, tenant, service, &services)?
            }
            CatalogOp::Unsubscribe { tenant, service } => self.unsubscribe(reg, tenant, service)?,
        };
        let mut planned = match step {
            Ok(p) => p,
            Err(answer) => return Ok(answer),
        };
        if let Some(cs) = &planned.changeset {
            for t in &cs.upserts {
                planned.ops.push(Op::Put {
                    key: keys::tenant_key(&t.id),
                    value: to_json("tenant", t)?,
                });
            }
        }
        let new_head = audit_ops(
            &mut planned.ops,
            head,
            revision,
            req.at_ms,
            &req.actor.name,
            req.op.action(),
            planned.target,
            req.decision.clone(),
        )?;
        self.write_ops(revision, planned.ops)?;
        if let Some(cs) = &planned.changeset {
            reg.apply(cs);
        }
        *head = new_head;
        Ok(Response::Catalog {
            revision,
            service: planned.service,
            subscription: planned.subscription,
        })
    }

    fn remove_service(&self, name: &str, services: &[Service]) -> Result<Step> {
        if !services.iter().any(|s| s.spec.name == *name) {
            return Ok(Err(refused((
                domain::RejectKind::NotFound,
                format!("service {name} not found"),
            ))));
        }
        let subscribers = self
            .scan(keys::SUBSCRIPTIONS_PREFIX)?
            .keys()
            .filter(|k| k.ends_with(&format!("/{name}")))
            .count();
        if subscribers > 0 {
            return Ok(Err(refused((
                domain::RejectKind::Precondition,
                format!(
                    "service {name} still has {subscribers} subscriber(s): they must unsubscribe first"
                ),
            ))));
        }
        Ok(Ok(Planned {
            ops: vec![Op::Delete {
                key: keys::service_key(name),
            }],
            target: name.to_string(),
            ..Planned::default()
        }))
    }

    fn subscribe(
        &self,
        revision: u64,
        req: &CatalogRequest,
        reg: &Registry,
        tenant: &str,
        service: &str,
        services: &[Service],
    ) -> Result<Step> {
        let Some(t) = reg.resolve(tenant).cloned() else {
            return Ok(Err(refused((
                domain::RejectKind::NotFound,
                format!("tenant {tenant} not found"),
            ))));
        };
        let Some(svc) = services.iter().find(|s| s.spec.name == *service) else {
            return Ok(Err(refused((
                domain::RejectKind::NotFound,
                format!("service {service} is not in the catalogue"),
            ))));
        };
        let key = keys::subscription_key(&t.id, service);
        if let Some(o) = self.read(&key)? {
            // Already subscribed: answer as the first time.
            let s = serde_json::from_slice(&o.value).map_err(|e| Error::Decode {
                what: "subscription",
                reason: e.to_string(),
            })?;
            return Ok(Err(Response::Catalog {
                revision,
                service: Some(Box::new(svc.clone())),
                subscription: Some(s),
            }));
        }
        if let Err(r) = catalog::check_subscribe(&t, svc, services) {
            return Ok(Err(refused(r)));
        }
        let s = Subscription {
            tenant: t.id.clone(),
            service: service.to_string(),
            created_revision: revision,
            created_at_ms: req.at_ms,
            created_by: req.actor.name.clone(),
        };
        let ops = vec![Op::Put {
            key,
            value: to_json("subscription", &s)?,
        }];
        let target = format!("{} -> {service}", t.id);
        let mut updated = t;
        updated.subscriptions.insert(service.to_string());
        Ok(Ok(Planned {
            ops,
            changeset: Some(ndc_core::Changeset {
                upserts: vec![updated],
                ..Default::default()
            }),
            target,
            service: Some(Box::new(svc.clone())),
            subscription: Some(s),
        }))
    }

    fn unsubscribe(&self, reg: &Registry, tenant: &str, service: &str) -> Result<Step> {
        let Some(t) = reg.resolve(tenant).cloned() else {
            return Ok(Err(refused((
                domain::RejectKind::NotFound,
                format!("tenant {tenant} not found"),
            ))));
        };
        let key = keys::subscription_key(&t.id, service);
        if self.read(&key)?.is_none() {
            return Ok(Err(refused((
                domain::RejectKind::NotFound,
                format!("tenant {} is not subscribed to {service}", t.id),
            ))));
        }
        let target = format!("{} -/-> {service}", t.id);
        let mut updated = t;
        updated.subscriptions.remove(service);
        Ok(Ok(Planned {
            ops: vec![Op::Delete { key }],
            changeset: Some(ndc_core::Changeset {
                upserts: vec![updated],
                ..Default::default()
            }),
            target,
            ..Planned::default()
        }))
    }
}

/// Registers a service, or answers with it as stored when nothing is new
/// (no revision, no audit record).
fn register(
    revision: u64,
    spec: &catalog::ServiceSpec,
    services: &[Service],
    decision: Option<&str>,
) -> Result<Step> {
    let exemption = match catalog::check_register(spec, services, decision) {
        Ok(e) => e,
        Err(r) => return Ok(Err(refused(r))),
    };
    let old = services.iter().find(|s| s.spec.name == spec.name);
    if let Some(o) = old.filter(|o| o.spec == *spec) {
        return Ok(Err(Response::Catalog {
            revision,
            service: Some(Box::new(o.clone())),
            subscription: None,
        }));
    }
    let service = Service {
        spec: spec.clone(),
        generation: old.map(|o| o.generation + 1).unwrap_or(1),
        created_revision: old.map(|o| o.created_revision).unwrap_or(revision),
        exemption: exemption.or_else(|| old.and_then(|o| o.exemption.clone())),
    };
    Ok(Ok(Planned {
        ops: vec![Op::Put {
            key: keys::service_key(&spec.name),
            value: to_json("service", &service)?,
        }],
        target: format!("{} ({}, {})", spec.name, spec.capability, spec.scope()),
        service: Some(Box::new(service)),
        ..Planned::default()
    }))
}
