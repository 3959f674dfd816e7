//! Applying inventory changes, and admitting tenant quotas against the
//! capacity of the registered hosts.

use crate::keys;
use rocksdb::{Direction, IteratorMode};

use super::{audit_ops, to_json, Applier};
use crate::codec::decode;
use crate::error::{Error, Result};
use crate::types::*;
use ndc_core::domain::{self, AuditHead};
use ndc_core::inventory::{self, Host, InventoryOp, InventoryRequest};
use ndc_core::Registry;

impl Applier<'_> {
    /// Applies an inventory change: authorise, compute the new host records
    /// from the stored ones, write them (and an audit record unless it is
    /// a heartbeat).
    pub(super) fn inventory(
        &mut self,
        revision: u64,
        req: InventoryRequest,
        head: &mut AuditHead,
    ) -> Result<Response> {
        if let Err(message) = inventory::authorize(&req.actor, &req.op) {
            return Ok(Response::Rejected(Rejection::Domain {
                kind: domain::RejectKind::PermissionDenied,
                message,
            }));
        }
        let mut current = std::collections::BTreeMap::new();
        for name in req.op.hosts() {
            let host =
                match self.read(&keys::node_key(&name))? {
                    Some(o) => Some(serde_json::from_slice::<Host>(&o.value).map_err(|e| {
                        Error::Decode {
                            what: "host",
                            reason: e.to_string(),
                        }
                    })?),
                    None => None,
                };
            current.insert(name, host);
        }
        let lookup = |n: &str| current.get(n).cloned().flatten();
        let changes = match inventory::apply_op(&req.op, req.at_ms, &lookup) {
            Ok(c) => c,
            Err(message) => {
                return Ok(Response::Rejected(Rejection::Domain {
                    kind: if message.contains("not found") || message.contains("not registered") {
                        domain::RejectKind::NotFound
                    } else {
                        domain::RejectKind::Invalid
                    },
                    message,
                }))
            }
        };
        let mut ops = Vec::new();
        for (name, host) in &changes {
            ops.push(match host {
                Some(h) => Op::Put {
                    key: keys::node_key(name),
                    value: to_json("host", h)?,
                },
                None => Op::Delete {
                    key: keys::node_key(name),
                },
            });
        }
        if let InventoryOp::SetOvercommit(oc) = &req.op {
            ops.push(Op::Put {
                key: keys::OVERCOMMIT_KEY.to_string(),
                value: to_json("overcommit", oc)?,
            });
        }
        if req.op.audited()
            && (!changes.is_empty() || matches!(req.op, InventoryOp::SetOvercommit(_)))
        {
            let target = changes
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(",");
            *head = audit_ops(
                &mut ops,
                head,
                revision,
                req.at_ms,
                &req.actor.name,
                req.op.action(),
                target,
                None,
            )?;
        }
        let results = self.write_ops(revision, ops)?;
        Ok(Response::Applied { revision, results })
    }

    /// Refuses a change that raises the quotas of top-level tenants beyond
    /// what the registered hosts can hold (every other quota is carved out
    /// of theirs, so only theirs are compared with capacity).
    pub(super) fn admit_capacity(
        &self,
        reg: &Registry,
        cs: &ndc_core::Changeset,
    ) -> Result<(), String> {
        let raises = cs.upserts.iter().any(|t| {
            t.parent.is_none()
                && match reg.get(&t.id) {
                    Some(old) => t.quota.first_excess(&old.quota).is_some(),
                    None => !t.quota.is_zero(),
                }
        });
        if !raises {
            return Ok(());
        }
        let hosts = self.hosts().map_err(|e| e.to_string())?;
        let oc = self.overcommit().map_err(|e| e.to_string())?;
        let add = |c: &mut inventory::Capacity, q: &ndc_core::Quota| {
            c.cpu_millis = c.cpu_millis.saturating_add(q.cpu_millis);
            c.memory_bytes = c.memory_bytes.saturating_add(q.memory_bytes);
            c.storage_bytes = c.storage_bytes.saturating_add(q.storage_bytes);
        };
        let mut before = inventory::Capacity::default();
        for t in reg.iter().filter(|t| t.parent.is_none()) {
            add(&mut before, &t.quota);
        }
        let mut granted = inventory::Capacity::default();
        let removed: std::collections::BTreeSet<&str> =
            cs.removals.iter().map(String::as_str).collect();
        let changed: std::collections::BTreeMap<&str, &ndc_core::Tenant> =
            cs.upserts.iter().map(|t| (t.id.as_str(), t)).collect();
        let roots = reg
            .iter()
            .filter(|t| !removed.contains(t.id.as_str()) && !changed.contains_key(t.id.as_str()))
            .chain(changed.values().copied())
            .filter(|t| t.parent.is_none());
        for t in roots {
            add(&mut granted, &t.quota);
        }
        inventory::admit(&hosts, &before, &granted, &oc)
    }

    /// The overcommit ratios in force.
    fn overcommit(&self) -> Result<inventory::Overcommit> {
        match self.read(keys::OVERCOMMIT_KEY)? {
            Some(o) => serde_json::from_slice(&o.value).map_err(|e| Error::Decode {
                what: "overcommit",
                reason: e.to_string(),
            }),
            None => Ok(inventory::DEFAULT_OVERCOMMIT),
        }
    }

    /// Every host as stored before this batch.
    fn hosts(&self) -> Result<Vec<Host>> {
        let prefix = keys::NODES_PREFIX.as_bytes();
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(self.kv, IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            let o: StoredObject = decode("object", &v)?;
            out.push(serde_json::from_slice(&o.value).map_err(|e| Error::Decode {
                what: "host",
                reason: e.to_string(),
            })?);
        }
        Ok(out)
    }
}
