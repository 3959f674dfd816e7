//! Applying claim requests.

use crate::keys;
use ndc_core::Registry;

use super::{audit_ops, to_json, Applier};
use crate::error::{Error, Result};
use crate::types::*;
use ndc_core::claims::{self, Change, Claim, ClaimOp, ClaimRequest, Decision};
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
        let siblings = match (&req.op, reg.get(&tenant)) {
            (ClaimOp::Create { .. }, Some(t)) => {
                let mut out = Vec::new();
                for u in &t.claims {
                    out.extend(self.claim_record(u)?);
                }
                out
            }
            _ => Vec::new(),
        };
        let (at_ms, by) = (req.at_ms, req.actor.name.clone());
        let change = match claims::decide(reg, req, revision, &tenant, existing, &siblings) {
            Ok(Decision::Unchanged(c)) => {
                return Ok(Response::Claim {
                    revision,
                    claim: Box::new(c),
                    removed: false,
                })
            }
            Ok(Decision::Write(change)) => change,
            Err(r) => return refuse(r),
        };
        let Change {
            claim,
            changeset,
            audit,
            removed,
        } = change;
        let mut ops = Vec::new();
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
                &mut ops, head, revision, at_ms, &by, &action, target, None,
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
