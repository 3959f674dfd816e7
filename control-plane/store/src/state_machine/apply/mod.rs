//! Applying log entries: objects, watch events, tenants and the audit
//! chain, all in one `WriteBatch` per batch of entries.

use crate::keys;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use openraft::EntryPayload;
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};
use serde::Serialize;

use ndc_core::Registry;

use super::*;
use crate::codec::{decode, encode};
use crate::db::{be, cf, CF_EVENTS, CF_KV, CF_SM};
use crate::error::{Error, Result};
use ndc_core::domain::{AuditEntry, AuditHead};

mod catalog;
mod claims;
mod inventory;
mod tenants;

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
                let key = format!("{}{request_id}", keys::REQUESTS_PREFIX);
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
        if !revision.is_multiple_of(keys::REQUEST_PRUNE_EVERY)
            || revision <= keys::REQUEST_RETENTION
        {
            return Ok(());
        }
        let horizon = revision - keys::REQUEST_RETENTION;
        let prefix = keys::REQUESTS_PREFIX.as_bytes();
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
    let record = head.chain(AuditEntry {
        revision,
        at_ms,
        actor: actor.to_string(),
        action: action.to_string(),
        target,
        decision,
    });
    let new_head = AuditHead::of(&record);
    ops.push(Op::Put {
        key: keys::audit_key(record.seq),
        value: to_json("audit record", &record)?,
    });
    ops.push(Op::Put {
        key: keys::AUDIT_HEAD_KEY.to_string(),
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
    let prefix = keys::TENANTS_PREFIX.as_bytes();
    for item in db.iterator_cf(kv, IteratorMode::From(prefix, Direction::Forward)) {
        let (k, v) = item?;
        if !k.starts_with(prefix) {
            break;
        }
        let obj: StoredObject = decode("object", &v)?;
        let t: ndc_core::Tenant =
            serde_json::from_slice(&obj.value).map_err(|e| Error::Decode {
                what: "tenant",
                reason: e.to_string(),
            })?;
        tenants.push(t);
    }
    let mut retired = Vec::new();
    let prefix = keys::RETIRED_IDS_PREFIX.as_bytes();
    for item in db.iterator_cf(kv, IteratorMode::From(prefix, Direction::Forward)) {
        let (k, _) = item?;
        if !k.starts_with(prefix) {
            break;
        }
        retired.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
    }
    let head = match db.get_cf(kv, keys::AUDIT_HEAD_KEY.as_bytes())? {
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
