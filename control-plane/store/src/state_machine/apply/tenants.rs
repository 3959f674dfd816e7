//! Applying domain requests: the tenants, what moves with them, and the
//! audit record.

use crate::keys;
use ndc_core::Registry;

use super::{audit_ops, to_json, Applier};
use crate::error::Result;
use crate::types::*;
use ndc_core::catalog;
use ndc_core::domain::{self, AuditHead, DomainRequest};

impl Applier<'_> {
    /// Applies a domain request: authorise, check against the registry,
    /// write the changed tenants and one audit record, all at `revision`.
    pub(super) fn domain(
        &mut self,
        revision: u64,
        req: DomainRequest,
        reg: &mut Registry,
        head: &mut AuditHead,
    ) -> Result<Response> {
        if let Err(message) = domain::authorize(reg, &req.actor, &req.op) {
            return Ok(Response::Rejected(Rejection::Domain {
                kind: domain::RejectKind::PermissionDenied,
                message,
            }));
        }
        let (changeset, plan) = match domain::plan(reg, &req.op) {
            Ok(p) => p,
            Err(e) => {
                return Ok(Response::Rejected(Rejection::Domain {
                    kind: e.kind(),
                    message: e.to_string(),
                }))
            }
        };
        if let (Some(expected), Some(p)) = (&req.expected_plan, &plan) {
            if &domain::plan_digest(p) != expected {
                return Ok(Response::Rejected(Rejection::Domain {
                    kind: domain::RejectKind::Precondition,
                    message: "the tenants changed since this plan was made; nothing was applied: plan again".into(),
                }));
            }
        }
        if let Err(message) = self.admit_capacity(reg, &changeset) {
            return Ok(Response::Rejected(Rejection::Domain {
                kind: domain::RejectKind::Precondition,
                message,
            }));
        }
        let mut ops = Vec::new();
        for id in &changeset.removals {
            ops.push(Op::Delete {
                key: keys::tenant_key(id),
            });
        }
        for t in &changeset.upserts {
            ops.push(Op::Put {
                key: keys::tenant_key(&t.id),
                value: to_json("tenant", t)?,
            });
        }
        // Claims move with their tenant (a merge hands them to the target).
        for t in &changeset.upserts {
            for uid in &t.claims {
                if let Some(mut c) = self.claim_record(uid)? {
                    if c.tenant != t.id {
                        c.tenant = t.id.clone();
                        ops.push(Op::Put {
                            key: keys::claim_key(uid),
                            value: to_json("claim", &c)?,
                        });
                    }
                }
            }
        }
        // Subscriptions move with their tenant too.
        for id in &changeset.removals {
            if let Some(t) = reg.get(id) {
                for svc in &t.subscriptions {
                    ops.push(Op::Delete {
                        key: keys::subscription_key(id, svc),
                    });
                }
            }
        }
        for t in &changeset.upserts {
            for svc in &t.subscriptions {
                let key = keys::subscription_key(&t.id, svc);
                if self.read(&key)?.is_none() {
                    let s = catalog::Subscription {
                        tenant: t.id.clone(),
                        service: svc.clone(),
                        created_revision: revision,
                        created_at_ms: req.at_ms,
                        created_by: req.actor.name.clone(),
                    };
                    ops.push(Op::Put {
                        key,
                        value: to_json("subscription", &s)?,
                    });
                }
            }
        }
        for id in &changeset.retired_ids {
            ops.push(Op::Put {
                key: format!("{}{id}", keys::RETIRED_IDS_PREFIX),
                value: to_json("retired id", &revision)?,
            });
        }
        let new_head = audit_ops(
            &mut ops,
            head,
            revision,
            req.at_ms,
            &req.actor.name,
            req.op.action(),
            req.op.target(),
            req.decision.clone(),
        )?;
        self.write_ops(revision, ops)?;
        reg.apply(&changeset);
        *head = new_head;
        Ok(Response::Domain {
            revision,
            changed: changeset.upserts,
            removed: changeset.removals,
            plan,
        })
    }
}
