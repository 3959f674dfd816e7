//! The state machine: revisioned objects, watch history and snapshots.
//!
//! The revision of a change is the index of the log entry that made it. Every
//! apply writes the objects, the watch events, the last applied log id, the
//! membership and the revision counters in one `WriteBatch`.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, Snapshot, StorageIOError};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use ndc_tenants::Registry;

use crate::codec::{decode, encode};
use crate::db::{be, blocking, cf, from_be, CF_EVENTS, CF_KV, CF_SM};
use crate::domain::{self, AuditHead, AuditRecord, DomainRequest, VerifyReport};
use crate::error::{Error, Result};
use crate::types::*;

type Entry = openraft::Entry<TypeConfig>;

const KEY_APPLIED: &[u8] = b"last_applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_REVISION: &[u8] = b"revision";
const KEY_COMPACTED: &[u8] = b"compacted";

/// How many change notices a slow watcher may fall behind before it reads the
/// rest from the history column family instead.
const NOTICE_CHANNEL: usize = 4096;

/// What the state machine tells live watchers after each apply.
#[derive(Clone, Debug)]
pub enum WatchBatch {
    /// The changes made at one revision.
    Changes {
        revision: u64,
        events: Arc<Vec<Event>>,
    },
    /// A snapshot replaced the whole state: watchers must list again.
    Reset { revision: u64 },
}

/// The revision counters kept beside the objects.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Revisions {
    /// The revision of the last change.
    current: u64,
    /// History at or below this revision is gone.
    compacted: u64,
}

/// The payload of a snapshot: every object, raw, with the revision it is at.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    revision: u64,
    objects: Vec<(String, Vec<u8>)>,
}

/// The snapshot as stored on disk: its meta and the payload sent to peers.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The tenants in memory (rebuilt from the objects at start and after a
/// snapshot) and the head of the audit chain.
pub struct DomainState {
    pub registry: Registry,
    pub head: AuditHead,
}

/// The state-machine half of the store.
pub struct StateMachine {
    domain: Arc<RwLock<DomainState>>,
    db: Arc<DB>,
    snapshot_path: PathBuf,
    history: u64,
    notices: broadcast::Sender<WatchBatch>,
    revisions: Revisions,
    snapshot_seq: Arc<AtomicU64>,
    on_disk: SnapshotOnDisk,
}

/// Reads objects and history for the API; shares the database.
#[derive(Clone)]
pub struct StoreReader {
    domain: Arc<RwLock<DomainState>>,
    db: Arc<DB>,
    notices: broadcast::Sender<WatchBatch>,
}

fn sm_read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(AnyError::new(&e)).into()
}

fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}

fn get_meta<T: serde::de::DeserializeOwned>(
    db: &DB,
    key: &[u8],
    what: &'static str,
) -> Result<Option<T>> {
    match db.get_cf(cf(db, CF_SM), key)? {
        Some(bytes) => Ok(Some(decode(what, &bytes)?)),
        None => Ok(None),
    }
}

fn read_revisions(db: &DB) -> Result<Revisions> {
    Ok(Revisions {
        current: get_meta(db, KEY_REVISION, "revision")?.unwrap_or(0),
        compacted: get_meta(db, KEY_COMPACTED, "compacted revision")?.unwrap_or(0),
    })
}

impl StateMachine {
    pub(crate) fn new(db: Arc<DB>, snapshot_path: PathBuf, history: u64) -> Result<Self> {
        let revisions = read_revisions(&db)?;
        let (registry, head) = load_domain(&db)?;
        let (notices, _) = broadcast::channel(NOTICE_CHANNEL);
        let on_disk = snapshot_on_disk(&snapshot_path)?;
        Ok(Self {
            domain: Arc::new(RwLock::new(DomainState { registry, head })),
            db,
            snapshot_path,
            history,
            notices,
            revisions,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            on_disk,
        })
    }

    pub fn reader(&self) -> StoreReader {
        StoreReader {
            domain: self.domain.clone(),
            db: self.db.clone(),
            notices: self.notices.clone(),
        }
    }

    fn builder(&self) -> StateMachine {
        StateMachine {
            domain: self.domain.clone(),
            db: self.db.clone(),
            snapshot_path: self.snapshot_path.clone(),
            history: self.history,
            notices: self.notices.clone(),
            revisions: self.revisions,
            snapshot_seq: self.snapshot_seq.clone(),
            on_disk: self.on_disk.clone(),
        }
    }
}

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
        for id in &changeset.retired_ids {
            ops.push(Op::Put {
                key: format!("{}{id}", domain::RETIRED_IDS_PREFIX),
                value: to_json("retired id", &revision)?,
            });
        }
        let mut record = AuditRecord {
            seq: head.seq + 1,
            revision,
            at_ms: req.at_ms,
            actor: req.actor.name.clone(),
            action: req.op.action().to_string(),
            target: req.op.target(),
            decision: req.decision.clone(),
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

fn to_json<T: Serialize>(what: &'static str, v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Encode {
        what,
        reason: e.to_string(),
    })
}

/// Loads the tenants and the audit head from the objects.
fn load_domain(db: &DB) -> Result<(Registry, AuditHead)> {
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
fn apply_entries(
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

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied: Option<LogId> =
            get_meta::<Option<LogId>>(&self.db, KEY_APPLIED, "last applied")
                .map_err(sm_read_err)?
                .flatten();
        let membership = get_meta(&self.db, KEY_MEMBERSHIP, "membership")
            .map_err(sm_read_err)?
            .unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let db = self.db.clone();
        let (revisions, history) = (self.revisions, self.history);
        let domain = self.domain.clone();
        let (responses, notices, revisions) =
            blocking(move || apply_entries(&db, entries, revisions, history, &domain))
                .await
                .map_err(sm_write_err)?;
        self.revisions = revisions;
        for n in notices {
            // No receiver is fine: nobody is watching.
            let _ = self.notices.send(n);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.builder()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let body: SnapshotBody = decode("snapshot", &data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        let db = self.db.clone();
        let meta_c = meta.clone();
        let revision = body.revision;
        let domain = self.domain.clone();
        blocking(move || {
            // Readers see the old objects with the old tenants, or the new
            // with the new: the lock is held across the write and the reload.
            let mut guard = domain
                .write()
                .map_err(|_| Error::Join("domain state lock poisoned".into()))?;
            let mut batch = WriteBatch::default();
            let kv = cf(&db, CF_KV);
            // Keys are UTF-8, which never contains the byte 0xff.
            batch.delete_range_cf(kv, b"".as_slice(), [0xffu8].as_slice());
            for (k, v) in &body.objects {
                batch.put_cf(kv, k.as_bytes(), v);
            }
            batch.delete_range_cf(cf(&db, CF_EVENTS), be(0), be(u64::MAX));
            let sm = cf(&db, CF_SM);
            batch.put_cf(
                sm,
                KEY_APPLIED,
                encode("last applied", &meta_c.last_log_id)?,
            );
            batch.put_cf(
                sm,
                KEY_MEMBERSHIP,
                encode("membership", &meta_c.last_membership)?,
            );
            batch.put_cf(sm, KEY_REVISION, encode("revision", &body.revision)?);
            batch.put_cf(
                sm,
                KEY_COMPACTED,
                encode("compacted revision", &body.revision)?,
            );
            let mut w = WriteOptions::default();
            w.set_sync(true);
            db.write_opt(batch, &w)?;
            let (registry, head) = load_domain(&db)?;
            *guard = DomainState { registry, head };
            Ok(())
        })
        .await
        .map_err(sm_write_err)?;
        self.revisions = Revisions {
            current: revision,
            compacted: revision,
        };
        let file = SnapshotFile {
            meta: meta.clone(),
            data,
        };
        write_snapshot_file(self.snapshot_path.clone(), file, self.on_disk.clone())
            .await
            .map_err(|e| {
                StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e))
            })?;
        let _ = self.notices.send(WatchBatch::Reset { revision });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let path = self.snapshot_path.clone();
        let file = blocking(move || match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(decode::<SnapshotFile>("snapshot file", &bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::SnapshotFile { path, source }),
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
        Ok(file.map(|f| Snapshot {
            meta: f.meta,
            snapshot: Box::new(Cursor::new(f.data)),
        }))
    }
}

/// The last log id of the snapshot on disk. A snapshot is written only if
/// it is newer: a build that started before an install finished must not
/// replace the installed one (the log behind it is already purged).
type SnapshotOnDisk = Arc<std::sync::Mutex<Option<LogId>>>;

fn snapshot_on_disk(path: &std::path::Path) -> Result<SnapshotOnDisk> {
    let current = match std::fs::read(path) {
        Ok(bytes) => {
            decode::<SnapshotFile>("snapshot file", &bytes)?
                .meta
                .last_log_id
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(Error::SnapshotFile {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    Ok(Arc::new(std::sync::Mutex::new(current)))
}

async fn write_snapshot_file(
    path: PathBuf,
    file: SnapshotFile,
    on_disk: SnapshotOnDisk,
) -> Result<()> {
    blocking(move || {
        // Held for the whole write: snapshots reach the disk one at a time.
        let mut current = on_disk
            .lock()
            .map_err(|_| Error::Join("snapshot lock poisoned".into()))?;
        if *current >= file.meta.last_log_id && current.is_some() {
            return Ok(());
        }
        let bytes = encode("snapshot file", &file)?;
        let tmp = path.with_extension("tmp");
        let io = |source| Error::SnapshotFile {
            path: path.clone(),
            source,
        };
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        *current = file.meta.last_log_id;
        Ok(())
    })
    .await
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let db = self.db.clone();
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let (meta, data) = blocking(move || {
            // One RocksDB snapshot, so objects and applied state agree even
            // while apply goes on.
            let snap = db.snapshot();
            let read_sm = |key: &[u8]| snap.get_cf(cf(&db, CF_SM), key);
            let applied: Option<LogId> = match read_sm(KEY_APPLIED)? {
                Some(b) => decode::<Option<LogId>>("last applied", &b)?,
                None => None,
            };
            let membership: StoredMembership = match read_sm(KEY_MEMBERSHIP)? {
                Some(b) => decode("membership", &b)?,
                None => StoredMembership::default(),
            };
            let revision: u64 = match read_sm(KEY_REVISION)? {
                Some(b) => decode("revision", &b)?,
                None => 0,
            };
            let mut objects = Vec::new();
            for item in snap.iterator_cf(cf(&db, CF_KV), IteratorMode::Start) {
                let (k, v) = item?;
                let key = String::from_utf8(k.to_vec()).map_err(|e| Error::Decode {
                    what: "object key",
                    reason: e.to_string(),
                })?;
                objects.push((key, v.to_vec()));
            }
            let data = encode("snapshot", &SnapshotBody { revision, objects })?;
            let snapshot_id = match applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, seq),
                None => format!("0-0-{seq}"),
            };
            let meta = SnapshotMeta {
                last_log_id: applied,
                last_membership: membership,
                snapshot_id,
            };
            Ok((meta, data))
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        write_snapshot_file(
            self.snapshot_path.clone(),
            SnapshotFile {
                meta: meta.clone(),
                data: data.clone(),
            },
            self.on_disk.clone(),
        )
        .await
        .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e)))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// One page of a prefix listing.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub items: Vec<(String, StoredObject)>,
    /// The store revision the page was read at.
    pub revision: u64,
    /// Set when more keys remain: pass it back as `start_after`.
    pub more: bool,
}

impl StoreReader {
    /// Runs `f` on the tenants as last applied.
    pub fn with_registry<T>(&self, f: impl FnOnce(&Registry) -> T) -> Result<T> {
        let d = self
            .domain
            .read()
            .map_err(|_| Error::Join("domain state lock poisoned".into()))?;
        Ok(f(&d.registry))
    }

    /// Audit records from `from_seq` on, at most `limit` (0: all).
    pub fn audit_records(&self, from_seq: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let start = domain::audit_key(from_seq.max(1));
        let page = self.list(domain::AUDIT_PREFIX, None, 0)?;
        let mut out = Vec::new();
        for (k, o) in page.items {
            if k < start {
                continue;
            }
            if limit > 0 && out.len() == limit {
                break;
            }
            out.push(serde_json::from_slice(&o.value).map_err(|e| Error::Decode {
                what: "audit record",
                reason: e.to_string(),
            })?);
        }
        Ok(out)
    }

    /// Checks the whole audit chain as this node stores it.
    pub fn verify_audit(&self) -> Result<VerifyReport> {
        let page = self.list(domain::AUDIT_PREFIX, None, 0)?;
        let records: Vec<(String, Vec<u8>)> =
            page.items.into_iter().map(|(k, o)| (k, o.value)).collect();
        let (head, _) = self.get(domain::AUDIT_HEAD_KEY)?;
        let head: Option<AuditHead> = match head {
            Some(o) => Some(serde_json::from_slice(&o.value).map_err(|e| Error::Decode {
                what: "audit head",
                reason: e.to_string(),
            })?),
            None => None,
        };
        Ok(domain::verify_chain(&records, head.as_ref()))
    }

    /// The current and the compacted revision.
    pub fn revisions(&self) -> Result<(u64, u64)> {
        let r = read_revisions(&self.db)?;
        Ok((r.current, r.compacted))
    }

    pub fn get(&self, key: &str) -> Result<(Option<StoredObject>, u64)> {
        let snap = self.db.snapshot();
        let obj = match snap.get_cf(cf(&self.db, CF_KV), key.as_bytes())? {
            Some(bytes) => Some(decode("object", &bytes)?),
            None => None,
        };
        let revision = match snap.get_cf(cf(&self.db, CF_SM), KEY_REVISION)? {
            Some(b) => decode("revision", &b)?,
            None => 0,
        };
        Ok((obj, revision))
    }

    /// Objects whose key starts with `prefix`, after `start_after` if given,
    /// at most `limit` (0: no limit), all read at one revision.
    pub fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<ListPage> {
        let snap = self.db.snapshot();
        let revision = match snap.get_cf(cf(&self.db, CF_SM), KEY_REVISION)? {
            Some(b) => decode("revision", &b)?,
            None => 0,
        };
        let start = match start_after {
            Some(s) if s.as_bytes() >= prefix.as_bytes() => s.as_bytes().to_vec(),
            _ => prefix.as_bytes().to_vec(),
        };
        let mut items = Vec::new();
        let mut more = false;
        for item in snap.iterator_cf(
            cf(&self.db, CF_KV),
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            if start_after.is_some_and(|s| k.as_ref() == s.as_bytes()) {
                continue;
            }
            if limit > 0 && items.len() == limit {
                more = true;
                break;
            }
            let key = String::from_utf8(k.to_vec()).map_err(|e| Error::Decode {
                what: "object key",
                reason: e.to_string(),
            })?;
            items.push((key, decode("object", &v)?));
        }
        Ok(ListPage {
            items,
            revision,
            more,
        })
    }

    /// Live notices from now on. Subscribe before reading history so nothing
    /// falls between the two.
    pub fn subscribe(&self) -> broadcast::Receiver<WatchBatch> {
        self.notices.subscribe()
    }

    /// The recorded changes at revisions `from..=to`, oldest first, at most
    /// `max_revisions` of them. Fails with [`Error::Compacted`] when `from` is
    /// at or below the compacted revision.
    pub fn history(
        &self,
        from: u64,
        to: u64,
        max_revisions: usize,
    ) -> Result<Vec<(u64, Vec<Event>)>> {
        let snap = self.db.snapshot();
        let compacted: u64 = match snap.get_cf(cf(&self.db, CF_SM), KEY_COMPACTED)? {
            Some(b) => decode("compacted revision", &b)?,
            None => 0,
        };
        if from <= compacted {
            return Err(Error::Compacted {
                requested: from,
                oldest: compacted + 1,
            });
        }
        let mut out = Vec::new();
        for item in snap.iterator_cf(
            cf(&self.db, CF_EVENTS),
            IteratorMode::From(&be(from), Direction::Forward),
        ) {
            let (k, v) = item?;
            let rev = from_be(&k)?;
            if rev > to || out.len() >= max_revisions {
                break;
            }
            out.push((rev, decode("events", &v)?));
        }
        Ok(out)
    }
}
