//! The state machine: revisioned objects, watch history and snapshots.
//!
//! The revision of a change is the index of the log entry that made it. Every
//! apply writes the objects, the watch events, the last applied log id, the
//! membership and the revision counters in one `WriteBatch`.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, Snapshot, StorageIOError};
use rocksdb::{WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use ndc_tenants::Registry;

use crate::codec::{decode, encode};
use crate::db::{be, blocking, cf, CF_EVENTS, CF_KV, CF_SM};
use crate::domain::AuditHead;
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

mod apply;
mod reader;
mod snapshot;

use apply::{apply_entries, load_domain};
use snapshot::{snapshot_on_disk, write_snapshot_file, SnapshotOnDisk};

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
