//! Applying claim requests.

use crate::keys;
use ndc_core::Registry;

use super::{audit_ops, to_json, Applier};
use crate::error::{Error, Result};
use crate::types::*;
use ndc_core::claims::{self, Claim, ClaimOp, ClaimRequest};
use ndc_core::domain::{self, AuditHead};

impl Applier<'_> {
    pub(super) fn claim_record(&self, uid: &str) -> Result<Option<Claim>> {
        match self.read(&keys::claim_key(uid))? {
            Some(o) => Ok(Some(serde_json::from_slice(&o.value).map_err(|e| {
                Error::Decode {
                    what: "claim",
                    reason: e.to_string(),
                }
            })?)),
            None => Ok(None),
        }
    }

    /// Applies a claim request: authorise, admit against the tenant's quota
    /// and state, write the claim (and the tenant's usage and an audit
    /// record for changes people make), all at `revision`.
    pub(super) fn claim(
        &mut self,
        revision: u64,
        req: ClaimRequest,
        reg: &mut Registry,
        head: &mut AuditHead,
    ) -> Result<Response> {
        let refuse = |(kind, message): claims::Refusal| {
            Ok(Response::Rejected(Rejection::Domain { kind, message }))
        };
        let uid = req.op.uid().to_string();
        if let Err(m) = claims::validate_uid(&uid) {
            return refuse((domain::RejectKind::Invalid, m));
        }
        let existing = self.claim_record(&uid)?;
        let tenant = match (&req.op, &existing) {
            (ClaimOp::Create { tenant, .. }, _) => reg
                .resolve(tenant)
                .map(|t| t.id.clone())
                .unwrap_or_else(|| tenant.clone()),
            (_, Some(c)) => c.tenant.clone(),
            (_, None) => {
                return refuse((
                    domain::RejectKind::NotFound,
                    format!("claim {uid} not found"),
                ))
            }
        };
        if let Err(r) = claims::authorize(reg, &req.actor, &req.op, &tenant) {
            return refuse(r);
        }
        let mut ops = Vec::new();
        let mut changeset = None;
        let mut audit: Option<(String, String)> = None;
        let mut removed = false;
        let claim = match req.op {
            ClaimOp::Create {
                uid,
                name,
                spec,
                deletion_policy,
                credentials,
                ..
            } => {
                if existing.is_some() {
                    return refuse((
                        domain::RejectKind::AlreadyExists,
                        format!("claim uid {uid} is taken"),
                    ));
                }
                let mut siblings = Vec::new();
                if let Some(t) = reg.get(&tenant) {
                    for u in &t.claims {
                        siblings.extend(self.claim_record(u)?);
                    }
                }
                if let Err(r) =
                    claims::check_create(reg, &tenant, &name, &spec, &credentials, &siblings)
                {
                    return refuse(r);
                }
                let cs = match reg.check_add_claim(&tenant, &uid, &spec.usage()) {
                    Ok(cs) => cs,
                    Err(e) => {
                        return refuse((e.kind(), e.to_string()));
                    }
                };
                audit = Some((
                    format!("{}.create", spec.kind()),
                    format!("{tenant}/{name} ({uid})"),
                ));
                changeset = Some(cs);
                Claim {
                    uid,
                    tenant: tenant.clone(),
                    name,
                    spec,
                    deletion_policy,
                    generation: 1,
                    created_revision: revision,
                    created_at_ms: req.at_ms,
                    created_by: req.actor.name.clone(),
                    credentials,
                    deletion: None,
                    status: claims::ClaimStatus::default(),
                }
            }
            ClaimOp::Delete { purge, .. } => {
                let mut c = existing.unwrap_or_else(|| unreachable!("checked above"));
                let again = c.deletion.as_ref().is_some_and(|d| d.purge || !purge);
                if again {
                    // Already asked for, with at least this much: nothing new.
                    return Ok(Response::Claim {
                        revision,
                        claim: Box::new(c),
                        removed: false,
                    });
                }
                c.deletion = Some(claims::Deletion {
                    at_ms: req.at_ms,
                    by: req.actor.name.clone(),
                    purge,
                });
                c.status.phase = claims::Phase::Deleting;
                c.status.conditions.clear();
                audit = Some((
                    format!("{}.delete", c.kind()),
                    format!(
                        "{}/{} ({}) policy={}{}",
                        c.tenant,
                        c.name,
                        c.uid,
                        c.deletion_policy.as_str(),
                        if purge { " purge" } else { "" }
                    ),
                ));
                c
            }
            ClaimOp::Rotate { credentials, .. } => {
                let mut c = existing.unwrap_or_else(|| unreachable!("checked above"));
                if let Err(r) = claims::check_rotate(reg, &c, &credentials) {
                    return refuse(r);
                }
                c.credentials = credentials;
                if c.status.phase == claims::Phase::Failed {
                    c.status.phase = claims::Phase::Pending;
                }
                // An old failure says nothing about the new credentials.
                c.status.conditions.clear();
                audit = Some((
                    format!(
                        "{}.{}",
                        c.kind(),
                        match c.kind() {
                            claims::ClaimKind::Bucket => "rotate-key",
                            claims::ClaimKind::Database => "rotate-password",
                        }
                    ),
                    format!("{}/{} ({})", c.tenant, c.name, c.uid),
                ));
                c
            }
            ClaimOp::SetStatus { status, basis, .. } => {
                let mut c = existing.unwrap_or_else(|| unreachable!("checked above"));
                if let Err(r) = claims::merge_status(&mut c, basis, status) {
                    return refuse(r);
                }
                c
            }
            ClaimOp::Forget { outcome, .. } => {
                let c = existing.unwrap_or_else(|| unreachable!("checked above"));
                if c.deletion.is_none() {
                    return refuse((
                        domain::RejectKind::Precondition,
                        format!("claim {} was not asked to be deleted", c.uid),
                    ));
                }
                let cs = match reg.check_remove_claim(&c.tenant, &c.uid, &c.spec.usage()) {
                    Ok(cs) => cs,
                    Err(e) => return refuse((e.kind(), e.to_string())),
                };
                changeset = Some(cs);
                audit = Some((
                    format!("{}.deleted", c.kind()),
                    format!("{}/{} ({}): {outcome}", c.tenant, c.name, c.uid),
                ));
                removed = true;
                c
            }
        };
        if let Some(cs) = &changeset {
            for t in &cs.upserts {
                ops.push(Op::Put {
                    key: keys::tenant_key(&t.id),
                    value: to_json("tenant", t)?,
                });
            }
        }
        ops.push(if removed {
            Op::Delete {
                key: keys::claim_key(&claim.uid),
            }
        } else {
            Op::Put {
                key: keys::claim_key(&claim.uid),
                value: to_json("claim", &claim)?,
            }
        });
        let new_head = match audit {
            Some((action, target)) => Some(audit_ops(
                &mut ops,
                head,
                revision,
                req.at_ms,
                &req.actor.name,
                &action,
                target,
                None,
            )?),
            None => None,
        };
        self.write_ops(revision, ops)?;
        if let Some(cs) = &changeset {
            reg.apply(cs);
        }
        if let Some(h) = new_head {
            *head = h;
        }
        Ok(Response::Claim {
            revision,
            claim: Box::new(claim),
            removed,
        })
    }
}
