//! The state machine: revisioned objects, watch history and snapshots.
//!
//! The revision of a change is the index of the log entry that made it. Every
//! apply writes the objects, the watch events, the last applied log id, the
//! membership and the revision counters in one `WriteBatch`.

use std::path::Path;
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, Snapshot, StorageIOError};
use rocksdb::DB;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use ndc_core::Registry;

use crate::codec::decode;
use crate::db::{blocking, cf, CF_SM};
use crate::error::{Error, Result};
use crate::types::*;
use ndc_core::domain::AuditHead;

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
    snapshots: Arc<Snapshots>,
    history: u64,
    notices: broadcast::Sender<WatchBatch>,
    revisions: Revisions,
    /// When the snapshot being received began to arrive (for the log).
    receiving_since: Option<std::time::Instant>,
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
    /// The state machine on `db`, with its snapshot files under `dir`.
    pub(crate) fn new(db: Arc<DB>, dir: &Path, history: u64) -> Result<Self> {
        let snapshots = Snapshots::open(dir)?;
        finish_interrupted_install(&db, &snapshots)?;
        let revisions = read_revisions(&db)?;
        let (registry, head) = load_domain(&db)?;
        let (notices, _) = broadcast::channel(NOTICE_CHANNEL);
        Ok(Self {
            domain: Arc::new(RwLock::new(DomainState { registry, head })),
            db,
            snapshots: Arc::new(snapshots),
            history,
            notices,
            revisions,
            receiving_since: None,
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
            snapshots: self.snapshots.clone(),
            history: self.history,
            notices: self.notices.clone(),
            revisions: self.revisions,
            receiving_since: None,
        }
    }
}

mod apply;
mod reader;
mod snapshot;

use apply::{apply_entries, load_domain};
use snapshot::{
    clear_installing, finish_interrupted_install, install_body, mark_installing, Snapshots,
};

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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        self.receiving_since = Some(std::time::Instant::now());
        snapshot::begin_receiving(self.snapshots.clone()).await
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let received = snapshot.into_std().await;
        let receiving = self.receiving_since.take().map(|t| t.elapsed());
        let db = self.db.clone();
        let snapshots = self.snapshots.clone();
        let meta_c = meta.clone();
        let domain = self.domain.clone();
        let revision = blocking(move || {
            let bytes = received.metadata().map(|m| m.len()).unwrap_or(0);
            let started = std::time::Instant::now();
            // Marked, then published as the snapshot on disk: an install cut
            // short by a stop from here on is redone from it at open.
            mark_installing(&db, &meta_c.snapshot_id)?;
            let body = match snapshots.publish_received(&meta_c, received) {
                Ok(b) => b,
                Err(e) => {
                    // Refused before anything was touched.
                    clear_installing(&db)?;
                    return Err(e);
                }
            };
            let checked = started.elapsed();
            // Readers see the old objects with the old tenants, or the new
            // with the new: the lock is held across the writes and the reload.
            let mut guard = domain
                .write()
                .map_err(|_| Error::Join("domain state lock poisoned".into()))?;
            let revision = install_body(&db, &body, &meta_c)?;
            let written = started.elapsed();
            let (registry, head) = load_domain(&db)?;
            let tenants = registry.len();
            *guard = DomainState { registry, head };
            tracing::info!(
                snapshot = %meta_c.snapshot_id,
                bytes,
                tenants,
                received_s = receiving.map(|d| d.as_secs_f64()),
                checked_s = checked.as_secs_f64(),
                written_s = (written - checked).as_secs_f64(),
                loaded_s = (started.elapsed() - written).as_secs_f64(),
                "snapshot installed"
            );
            Ok(revision)
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e)))?;
        self.revisions = Revisions {
            current: revision,
            compacted: revision,
        };
        let _ = self.notices.send(WatchBatch::Reset { revision });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        snapshot::current(self.snapshots.clone()).await
    }
}
