//! Applying catalogue requests: services and subscriptions.

use crate::keys;
use ndc_core::Registry;

use super::{audit_ops, to_json, Applier};
use crate::error::{Error, Result};
use crate::types::*;
use ndc_core::catalog::{self, CatalogOp, CatalogRequest};
use ndc_core::claims;
use ndc_core::domain::{self, AuditHead};

impl Applier<'_> {
    fn services(&self) -> Result<Vec<catalog::Service>> {
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
        let refuse = |(kind, message): claims::Refusal| {
            Ok(Response::Rejected(Rejection::Domain { kind, message }))
        };
        if let Err(r) = catalog::authorize(reg, &req.actor, &req.op) {
            return refuse(r);
        }
        let services = self.services()?;
        let mut ops = Vec::new();
        let mut changeset = None;
        let mut out_service = None;
        let mut out_sub = None;
        let target;
        match &req.op {
            CatalogOp::Register(spec) => {
                let exemption =
                    match catalog::check_register(spec, &services, req.decision.as_deref()) {
                        Ok(e) => e,
                        Err(r) => return refuse(r),
                    };
                let old = services.iter().find(|s| s.spec.name == spec.name);
                let service = catalog::Service {
                    spec: spec.clone(),
                    generation: old.map(|o| o.generation + 1).unwrap_or(1),
                    created_revision: old.map(|o| o.created_revision).unwrap_or(revision),
                    exemption: exemption.or_else(|| old.and_then(|o| o.exemption.clone())),
                };
                if let Some(o) = old.filter(|o| o.spec == *spec) {
                    // Nothing new: no revision, no audit record; the answer
                    // is the service as it is stored.
                    return Ok(Response::Catalog {
                        revision,
                        service: Some(Box::new(o.clone())),
                        subscription: None,
                    });
                }
                ops.push(Op::Put {
                    key: keys::service_key(&spec.name),
                    value: to_json("service", &service)?,
                });
                target = format!("{} ({}, {})", spec.name, spec.capability, spec.scope());
                out_service = Some(Box::new(service));
            }
            CatalogOp::Remove { name } => {
                if !services.iter().any(|s| s.spec.name == *name) {
                    return refuse((
                        domain::RejectKind::NotFound,
                        format!("service {name} not found"),
                    ));
                }
                let subscribers = self
                    .scan(keys::SUBSCRIPTIONS_PREFIX)?
                    .keys()
                    .filter(|k| k.ends_with(&format!("/{name}")))
                    .count();
                if subscribers > 0 {
                    return refuse((
                        domain::RejectKind::Precondition,
                        format!(
                            "service {name} still has {subscribers} subscriber(s): they must unsubscribe first"
                        ),
                    ));
                }
                ops.push(Op::Delete {
                    key: keys::service_key(name),
                });
                target = name.clone();
            }
            CatalogOp::Subscribe { tenant, service } => {
                let Some(t) = reg.resolve(tenant).cloned() else {
                    return refuse((
                        domain::RejectKind::NotFound,
                        format!("tenant {tenant} not found"),
                    ));
                };
                let Some(svc) = services.iter().find(|s| s.spec.name == *service) else {
                    return refuse((
                        domain::RejectKind::NotFound,
                        format!("service {service} is not in the catalogue"),
                    ));
                };
                let key = keys::subscription_key(&t.id, service);
                if let Some(o) = self.read(&key)? {
                    // Already subscribed: answer as the first time.
                    let s = serde_json::from_slice(&o.value).map_err(|e| Error::Decode {
                        what: "subscription",
                        reason: e.to_string(),
                    })?;
                    return Ok(Response::Catalog {
                        revision,
                        service: Some(Box::new(svc.clone())),
                        subscription: Some(s),
                    });
                }
                if let Err(r) = catalog::check_subscribe(&t, svc, &services) {
                    return refuse(r);
                }
                let s = catalog::Subscription {
                    tenant: t.id.clone(),
                    service: service.clone(),
                    created_revision: revision,
                    created_at_ms: req.at_ms,
                    created_by: req.actor.name.clone(),
                };
                ops.push(Op::Put {
                    key,
                    value: to_json("subscription", &s)?,
                });
                let mut updated = t.clone();
                updated.subscriptions.insert(service.clone());
                changeset = Some(ndc_core::Changeset {
                    upserts: vec![updated],
                    ..Default::default()
                });
                target = format!("{} -> {service}", t.id);
                out_service = Some(Box::new(svc.clone()));
                out_sub = Some(s);
            }
            CatalogOp::Unsubscribe { tenant, service } => {
                let Some(t) = reg.resolve(tenant).cloned() else {
                    return refuse((
                        domain::RejectKind::NotFound,
                        format!("tenant {tenant} not found"),
                    ));
                };
                let key = keys::subscription_key(&t.id, service);
                if self.read(&key)?.is_none() {
                    return refuse((
                        domain::RejectKind::NotFound,
                        format!("tenant {} is not subscribed to {service}", t.id),
                    ));
                }
                ops.push(Op::Delete { key });
                let mut updated = t.clone();
                updated.subscriptions.remove(service);
                changeset = Some(ndc_core::Changeset {
                    upserts: vec![updated],
                    ..Default::default()
                });
                target = format!("{} -/-> {service}", t.id);
            }
        }
        if let Some(cs) = &changeset {
            for t in &cs.upserts {
                ops.push(Op::Put {
                    key: keys::tenant_key(&t.id),
                    value: to_json("tenant", t)?,
                });
            }
        }
        let new_head = audit_ops(
            &mut ops,
            head,
            revision,
            req.at_ms,
            &req.actor.name,
            req.op.action(),
            target,
            req.decision.clone(),
        )?;
        self.write_ops(revision, ops)?;
        if let Some(cs) = &changeset {
            reg.apply(cs);
        }
        *head = new_head;
        Ok(Response::Catalog {
            revision,
            service: out_service,
            subscription: out_sub,
        })
    }
}
