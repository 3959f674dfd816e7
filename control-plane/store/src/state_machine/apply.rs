//! Applying log entries: objects, watch events, tenants and the audit
//! chain, all in one `WriteBatch` per batch of entries.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use openraft::EntryPayload;
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use serde::Serialize;

use ndc_tenants::Registry;

use super::*;
use crate::catalog::{self, CatalogOp, CatalogRequest};
use crate::claims::{self, Claim, ClaimOp, ClaimRequest};
use crate::codec::{decode, encode};
use crate::db::{be, cf, CF_EVENTS, CF_KV, CF_SM};
use crate::domain::{self, AuditHead, AuditRecord, DomainRequest};
use crate::error::{Error, Result};
use crate::inventory::{self, Host, InventoryOp, InventoryRequest};

/// Objects changed earlier in the batch being applied, so later entries of
/// the same batch see them before the batch is written.
type Overlay = HashMap<String, Option<StoredObject>>;

/// One batch of entries being applied into one `WriteBatch`.
struct Applier<'a> {
    db: &'a DB,
    kv: &'a rocksdb::ColumnFamily,
    events_cf: &'a rocksdb::ColumnFamily,
    batch: WriteBatch,
    overlay: Overlay,
    notices: Vec<WatchBatch>,
    /// Changes made by the entry being applied (a batch has several commands).
    entry_events: Vec<Event>,
}

impl Applier<'_> {
    /// Records the watch events of the entry just applied, if it changed
    /// anything; returns whether it did.
    fn finish_entry(&mut self, revision: u64) -> Result<bool> {
        if self.entry_events.is_empty() {
            return Ok(false);
        }
        let events = std::mem::take(&mut self.entry_events);
        self.batch
            .put_cf(self.events_cf, be(revision), encode("events", &events)?);
        self.notices.push(WatchBatch::Changes {
            revision,
            events: Arc::new(events),
        });
        Ok(true)
    }

    /// Applies one command of an entry at `revision`.
    fn command(
        &mut self,
        revision: u64,
        cmd: Command,
        reg: &mut Registry,
        head: &mut AuditHead,
    ) -> Result<Response> {
        match cmd {
            Command::Txn(txn) => self.txn(revision, txn),
            Command::Domain(req) => self.domain(revision, *req, reg, head),
            Command::Inventory(req) => self.inventory(revision, req, head),
            Command::Claim(req) => self.claim(revision, *req, reg, head),
            Command::Catalog(req) => self.catalog(revision, *req, reg, head),
            Command::Batch(cmds) => {
                let mut out = Vec::with_capacity(cmds.len());
                for c in cmds {
                    out.push(match c {
                        Command::Batch(_) => Response::Rejected(Rejection::Invalid {
                            reason: "a batch cannot hold another batch".into(),
                        }),
                        c => self.command(revision, c, reg, head)?,
                    });
                }
                Ok(Response::Batch(out))
            }
            Command::Once {
                request_id,
                command,
            } => {
                if let Err(reason) = validate_request_id(&request_id) {
                    return Ok(Response::Rejected(Rejection::Invalid { reason }));
                }
                let key = format!("{}{request_id}", domain::REQUESTS_PREFIX);
                if let Some(seen) = self.read(&key)? {
                    // A retry: answer as the first time, change nothing.
                    return decode("remembered response", &seen.value);
                }
                let response = match *command {
                    Command::Once { .. } | Command::Batch(_) => {
                        Response::Rejected(Rejection::Invalid {
                            reason: "a request id wraps one plain command".into(),
                        })
                    }
                    c => self.command(revision, c, reg, head)?,
                };
                // Remembered without a watch event: it is bookkeeping, not a change.
                let object = StoredObject {
                    value: encode("remembered response", &response)?,
                    create_revision: revision,
                    mod_revision: revision,
                    version: 1,
                };
                self.batch
                    .put_cf(self.kv, key.as_bytes(), encode("object", &object)?);
                self.overlay.insert(key, Some(object));
                Ok(response)
            }
        }
    }

    /// Forgets request ids older than the retention window. Deterministic:
    /// it depends only on the revision and the stored ids.
    fn prune_requests(&mut self, revision: u64) -> Result<()> {
        if !revision.is_multiple_of(domain::REQUEST_PRUNE_EVERY)
            || revision <= domain::REQUEST_RETENTION
        {
            return Ok(());
        }
        let horizon = revision - domain::REQUEST_RETENTION;
        let prefix = domain::REQUESTS_PREFIX.as_bytes();
        for item in self
            .db
            .iterator_cf(self.kv, IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            let o: StoredObject = decode("object", &v)?;
            if o.mod_revision < horizon {
                self.batch.delete_cf(self.kv, &k);
                self.overlay
                    .insert(String::from_utf8_lossy(&k).into_owned(), None);
            }
        }
        Ok(())
    }

    fn read(&self, key: &str) -> Result<Option<StoredObject>> {
        if let Some(o) = self.overlay.get(key) {
            return Ok(o.clone());
        }
        match self.db.get_cf(self.kv, key.as_bytes())? {
            Some(bytes) => Ok(Some(decode("object", &bytes)?)),
            None => Ok(None),
        }
    }

    fn txn(&mut self, revision: u64, txn: Txn) -> Result<Response> {
        // The shape was checked before proposing; check again here so that a
        // command written by an older or faulty client cannot break the state.
        if let Err(reason) = validate_txn(&txn) {
            return Ok(Response::Rejected(Rejection::Invalid { reason }));
        }
        for c in &txn.compares {
            let actual = self.read(&c.key)?.map(|o| o.mod_revision).unwrap_or(0);
            if actual != c.revision {
                return Ok(Response::Rejected(Rejection::RevisionMismatch {
                    key: c.key.clone(),
                    expected: c.revision,
                    actual,
                }));
            }
        }
        let results = self.write_ops(revision, txn.ops)?;
        Ok(Response::Applied { revision, results })
    }

    /// Writes the ops at `revision` and records their events for watchers.
    fn write_ops(&mut self, revision: u64, ops: Vec<Op>) -> Result<Vec<OpResult>> {
        let mut results = Vec::with_capacity(ops.len());
        let mut events = Vec::new();
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    let prev = self.read(&key)?;
                    let object = StoredObject {
                        value,
                        create_revision: prev
                            .as_ref()
                            .map(|p| p.create_revision)
                            .unwrap_or(revision),
                        mod_revision: revision,
                        version: prev.as_ref().map(|p| p.version + 1).unwrap_or(1),
                    };
                    self.batch
                        .put_cf(self.kv, key.as_bytes(), encode("object", &object)?);
                    results.push(OpResult {
                        key: key.clone(),
                        prev_revision: prev.map(|p| p.mod_revision).unwrap_or(0),
                    });
                    self.overlay.insert(key.clone(), Some(object.clone()));
                    events.push(Event {
                        key,
                        kind: EventKind::Put,
                        object,
                        revision,
                    });
                }
                Op::Delete { key } => {
                    let prev = self.read(&key)?;
                    results.push(OpResult {
                        key: key.clone(),
                        prev_revision: prev.as_ref().map(|p| p.mod_revision).unwrap_or(0),
                    });
                    if let Some(object) = prev {
                        self.batch.delete_cf(self.kv, key.as_bytes());
                        self.overlay.insert(key.clone(), None);
                        events.push(Event {
                            key,
                            kind: EventKind::Delete,
                            object,
                            revision,
                        });
                    }
                }
            }
        }
        self.entry_events.extend(events);
        Ok(results)
    }

    /// Applies a domain request: authorise, check against the registry,
    /// write the changed tenants and one audit record, all at `revision`.
    /// Applies an inventory change: authorise, compute the new host records
    /// from the stored ones, write them (and an audit record unless it is
    /// a heartbeat).
    fn inventory(
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
                match self.read(&inventory::node_key(&name))? {
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
                    key: inventory::node_key(name),
                    value: to_json("host", h)?,
                },
                None => Op::Delete {
                    key: inventory::node_key(name),
                },
            });
        }
        if let InventoryOp::SetOvercommit(oc) = &req.op {
            ops.push(Op::Put {
                key: inventory::OVERCOMMIT_KEY.to_string(),
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
    fn admit_capacity(&self, reg: &Registry, cs: &ndc_tenants::Changeset) -> Result<(), String> {
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
        let add = |c: &mut inventory::Capacity, q: &ndc_tenants::Quota| {
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
        let changed: std::collections::BTreeMap<&str, &ndc_tenants::Tenant> =
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
        match self.read(inventory::OVERCOMMIT_KEY)? {
            Some(o) => serde_json::from_slice(&o.value).map_err(|e| Error::Decode {
                what: "overcommit",
                reason: e.to_string(),
            }),
            None => Ok(inventory::DEFAULT_OVERCOMMIT),
        }
    }

    /// Every host as stored before this batch.
    fn hosts(&self) -> Result<Vec<Host>> {
        let prefix = inventory::NODES_PREFIX.as_bytes();
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

    fn domain(
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
                    kind: domain::reject_kind(&e),
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
                key: domain::tenant_key(id),
            });
        }
        for t in &changeset.upserts {
            ops.push(Op::Put {
                key: domain::tenant_key(&t.id),
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
                            key: claims::claim_key(uid),
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
                        key: catalog::subscription_key(id, svc),
                    });
                }
            }
        }
        for t in &changeset.upserts {
            for svc in &t.subscriptions {
                let key = catalog::subscription_key(&t.id, svc);
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
                key: format!("{}{id}", domain::RETIRED_IDS_PREFIX),
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

impl Applier<'_> {
    fn claim_record(&self, uid: &str) -> Result<Option<Claim>> {
        match self.read(&claims::claim_key(uid))? {
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
    fn claim(
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
                        return refuse((domain::reject_kind(&e), e.to_string()));
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
                    Err(e) => return refuse((domain::reject_kind(&e), e.to_string())),
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
                    key: domain::tenant_key(&t.id),
                    value: to_json("tenant", t)?,
                });
            }
        }
        ops.push(if removed {
            Op::Delete {
                key: claims::claim_key(&claim.uid),
            }
        } else {
            Op::Put {
                key: claims::claim_key(&claim.uid),
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

impl Applier<'_> {
    /// Every object under `prefix`, with the changes made earlier in the
    /// batch being applied.
    fn scan(&self, prefix: &str) -> Result<std::collections::BTreeMap<String, Vec<u8>>> {
        let mut out = std::collections::BTreeMap::new();
        for item in self.db.iterator_cf(
            self.kv,
            IteratorMode::From(prefix.as_bytes(), Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            let o: StoredObject = decode("object", &v)?;
            out.insert(String::from_utf8_lossy(&k).into_owned(), o.value);
        }
        for (k, o) in &self.overlay {
            if k.starts_with(prefix) {
                match o {
                    Some(o) => out.insert(k.clone(), o.value.clone()),
                    None => out.remove(k),
                };
            }
        }
        Ok(out)
    }

    fn services(&self) -> Result<Vec<catalog::Service>> {
        self.scan(catalog::SERVICES_PREFIX)?
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
    fn catalog(
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
                    key: catalog::service_key(&spec.name),
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
                    .scan(catalog::SUBSCRIPTIONS_PREFIX)?
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
                    key: catalog::service_key(name),
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
                let key = catalog::subscription_key(&t.id, service);
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
                changeset = Some(ndc_tenants::Changeset {
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
                let key = catalog::subscription_key(&t.id, service);
                if self.read(&key)?.is_none() {
                    return refuse((
                        domain::RejectKind::NotFound,
                        format!("tenant {} is not subscribed to {service}", t.id),
                    ));
                }
                ops.push(Op::Delete { key });
                let mut updated = t.clone();
                updated.subscriptions.remove(service);
                changeset = Some(ndc_tenants::Changeset {
                    upserts: vec![updated],
                    ..Default::default()
                });
                target = format!("{} -/-> {service}", t.id);
            }
        }
        if let Some(cs) = &changeset {
            for t in &cs.upserts {
                ops.push(Op::Put {
                    key: domain::tenant_key(&t.id),
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

/// Appends the ops that add one audit record after `head`; returns the new head.
#[allow(clippy::too_many_arguments)]
fn audit_ops(
    ops: &mut Vec<Op>,
    head: &AuditHead,
    revision: u64,
    at_ms: u64,
    actor: &str,
    action: &str,
    target: String,
    decision: Option<String>,
) -> Result<AuditHead> {
    let mut record = AuditRecord {
        seq: head.seq + 1,
        revision,
        at_ms,
        actor: actor.to_string(),
        action: action.to_string(),
        target,
        decision,
        prev_hash: head.hash.clone(),
        hash: String::new(),
    };
    record.hash = domain::record_hash(&record);
    let new_head = AuditHead {
        seq: record.seq,
        hash: record.hash.clone(),
    };
    ops.push(Op::Put {
        key: domain::audit_key(record.seq),
        value: to_json("audit record", &record)?,
    });
    ops.push(Op::Put {
        key: domain::AUDIT_HEAD_KEY.to_string(),
        value: to_json("audit head", &new_head)?,
    });
    Ok(new_head)
}

pub(super) fn to_json<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Encode {
        what,
        reason: e.to_string(),
    })
}

/// Loads the tenants and the audit head from the objects.
pub(super) fn load_domain(db: &DB) -> Result<(Registry, AuditHead)> {
    let kv = cf(db, CF_KV);
    let mut tenants = Vec::new();
    let prefix = domain::TENANTS_PREFIX.as_bytes();
    for item in db.iterator_cf(kv, IteratorMode::From(prefix, Direction::Forward)) {
        let (k, v) = item?;
        if !k.starts_with(prefix) {
            break;
        }
        let obj: StoredObject = decode("object", &v)?;
        let t: ndc_tenants::Tenant =
            serde_json::from_slice(&obj.value).map_err(|e| Error::Decode {
                what: "tenant",
                reason: e.to_string(),
            })?;
        tenants.push(t);
    }
    let mut retired = Vec::new();
    let prefix = domain::RETIRED_IDS_PREFIX.as_bytes();
    for item in db.iterator_cf(kv, IteratorMode::From(prefix, Direction::Forward)) {
        let (k, _) = item?;
        if !k.starts_with(prefix) {
            break;
        }
        retired.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
    }
    let head = match db.get_cf(kv, domain::AUDIT_HEAD_KEY.as_bytes())? {
        Some(bytes) => {
            let obj: StoredObject = decode("object", &bytes)?;
            serde_json::from_slice(&obj.value).map_err(|e| Error::Decode {
                what: "audit head",
                reason: e.to_string(),
            })?
        }
        None => AuditHead::default(),
    };
    Ok((Registry::from_parts(tenants, retired), head))
}

/// Applies a batch of entries; returns the responses, the notices for
/// watchers and the new revision counters. Deterministic: every node computes
/// the same result from the same entries.
pub(super) fn apply_entries(
    db: &DB,
    entries: Vec<Entry>,
    mut revisions: Revisions,
    history: u64,
    domain: &RwLock<DomainState>,
) -> Result<(Vec<Response>, Vec<WatchBatch>, Revisions)> {
    // Held for the whole batch: readers see the registry before or after it.
    let mut guard = domain
        .write()
        .map_err(|_| Error::Join("domain state lock poisoned".into()))?;
    let DomainState { registry, head } = &mut *guard;
    let mut a = Applier {
        db,
        kv: cf(db, CF_KV),
        events_cf: cf(db, CF_EVENTS),
        batch: WriteBatch::default(),
        overlay: Overlay::new(),
        notices: Vec::new(),
        entry_events: Vec::new(),
    };
    let mut responses = Vec::with_capacity(entries.len());
    let mut last_applied = None;
    let mut membership = None;

    for entry in entries {
        last_applied = Some(entry.log_id);
        let revision = entry.log_id.index;
        let response = match entry.payload {
            EntryPayload::Blank => Response::Empty,
            EntryPayload::Membership(m) => {
                membership = Some(StoredMembership::new(Some(entry.log_id), m));
                Response::Empty
            }
            EntryPayload::Normal(cmd) => a.command(revision, cmd, registry, head)?,
        };
        a.prune_requests(revision)?;
        // The store's revision moves only when something changed.
        if a.finish_entry(revision)? {
            revisions.current = revision;
        }
        responses.push(response);
    }

    // Trim the watch history once it is a tenth longer than asked, so the
    // deletion is batched rather than done on every apply.
    if revisions.current.saturating_sub(revisions.compacted) > history + history / 10 {
        let new_compacted = revisions.current - history;
        a.batch
            .delete_range_cf(a.events_cf, be(0), be(new_compacted + 1));
        revisions.compacted = new_compacted;
    }

    let sm = cf(db, CF_SM);
    if let Some(applied) = last_applied {
        a.batch
            .put_cf(sm, KEY_APPLIED, encode("last applied", &Some(applied))?);
    }
    if let Some(m) = &membership {
        a.batch.put_cf(sm, KEY_MEMBERSHIP, encode("membership", m)?);
    }
    a.batch
        .put_cf(sm, KEY_REVISION, encode("revision", &revisions.current)?);
    a.batch.put_cf(
        sm,
        KEY_COMPACTED,
        encode("compacted revision", &revisions.compacted)?,
    );
    db.write(a.batch)?;
    Ok((responses, a.notices, revisions))
}
