//! The Raft log and vote in RocksDB. Nothing is reported durable to openraft
//! before the write-ahead log has been synced.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, OptionalSend, RaftLogReader, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};

use crate::codec::{decode, encode};
use crate::db::{be, blocking, cf, from_be, CF_LOGS, CF_RAFT};
use crate::error::Error;
use crate::types::{LogId, NodeId, StorageError, TypeConfig};

type Entry = openraft::Entry<TypeConfig>;

const KEY_VOTE: &[u8] = b"vote";
const KEY_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

/// The log half of the store. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    /// Appends whose entries are written but not yet synced.
    flusher: std::sync::mpsc::Sender<LogFlushed<TypeConfig>>,
}

/// Group commit: one thread syncs the write-ahead log for every append
/// waiting at that moment, then tells openraft they are all durable. Under
/// load, one fsync covers many appends instead of one each.
fn start_flusher(db: &Arc<DB>) -> std::sync::mpsc::Sender<LogFlushed<TypeConfig>> {
    let (tx, rx) = std::sync::mpsc::channel::<LogFlushed<TypeConfig>>();
    // Weak: the thread must never be the one keeping the database open (or
    // closing it) when the process exits.
    let db = Arc::downgrade(db);
    let spawned = std::thread::Builder::new()
        .name("ndc-wal-sync".into())
        .spawn(move || {
            // Ends when every LogStore (and so every sender) is gone.
            while let Ok(first) = rx.recv() {
                let mut waiting = vec![first];
                waiting.extend(rx.try_iter());
                // Everything written before the callbacks were queued is
                // in the WAL; this sync makes all of it durable.
                let res = match db.upgrade() {
                    Some(db) => db.flush_wal(true),
                    None => return,
                };
                for cb in waiting {
                    cb.log_io_completed(
                        res.clone()
                            .map_err(|e| std::io::Error::other(e.to_string())),
                    );
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the WAL sync thread; appends will never be acknowledged");
    }
    tx
}

fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

fn io_read(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn io_write(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>) -> Self {
        let flusher = start_flusher(&db);
        Self { db, flusher }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, Error> {
        match self.db.get_cf(cf(&self.db, CF_RAFT), key)? {
            Some(bytes) => Ok(Some(decode(what, &bytes)?)),
            None => Ok(None),
        }
    }

    fn last_purged(&self) -> Result<Option<LogId>, Error> {
        Ok(self
            .get_meta::<Option<LogId>>(KEY_PURGED, "last purged log id")?
            .flatten())
    }

    /// The committed log id last reported by openraft (not synced: Raft
    /// recomputes it; it only lets a restart re-apply sooner).
    pub fn committed(&self) -> Option<LogId> {
        self.get_meta::<Option<LogId>>(KEY_COMMITTED, "committed log id")
            .ok()
            .flatten()
            .flatten()
    }

    fn entries(&self, start: u64, end: Bound<u64>) -> Result<Vec<Entry>, Error> {
        let logs = cf(&self.db, CF_LOGS);
        let start_key = be(start);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(logs, IteratorMode::From(&start_key, Direction::Forward))
        {
            let (k, v) = item?;
            let index = from_be(&k)?;
            let past_end = match end {
                Bound::Included(e) => index > e,
                Bound::Excluded(e) => index >= e,
                Bound::Unbounded => false,
            };
            if past_end {
                break;
            }
            out.push(decode("log entry", &v)?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = range.end_bound().cloned();
        self.entries(start, end).map_err(io_read)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged = self.last_purged().map_err(io_read)?;
        let logs = cf(&self.db, CF_LOGS);
        let last = match self.db.iterator_cf(logs, IteratorMode::End).next() {
            Some(item) => {
                let (_, v) = item.map_err(io_read)?;
                let entry: Entry = decode("log entry", &v).map_err(io_read)?;
                Some(entry.log_id)
            }
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let bytes =
            encode("vote", vote).map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        let db = self.db.clone();
        blocking(move || {
            db.put_cf_opt(cf(&db, CF_RAFT), KEY_VOTE, bytes, &synced())?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(KEY_VOTE, "vote")
            .map_err(|e| StorageIOError::read_vote(AnyError::new(&e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let bytes = encode("committed log id", &committed).map_err(io_write)?;
        self.db
            .put_cf(cf(&self.db, CF_RAFT), KEY_COMMITTED, bytes)
            .map_err(io_write)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .get_meta::<Option<LogId>>(KEY_COMMITTED, "committed log id")
            .map_err(io_read)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        {
            let logs = cf(&self.db, CF_LOGS);
            for entry in entries {
                let bytes = encode("log entry", &entry).map_err(io_write)?;
                batch.put_cf(logs, be(entry.log_id.index), bytes);
            }
        }
        // Written (in order, to the WAL) now; reported durable only once the
        // sync thread has synced the WAL after this write.
        if let Err(e) = self.db.write(batch) {
            callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
            return Err(io_write(e));
        }
        if let Err(std::sync::mpsc::SendError(cb)) = self.flusher.send(callback) {
            cb.log_io_completed(Err(std::io::Error::other(
                "the WAL sync thread has stopped",
            )));
            return Err(io_write(Error::Join(
                "the WAL sync thread has stopped".into(),
            )));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || {
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(cf(&db, CF_LOGS), be(log_id.index), be(u64::MAX));
            batch.delete_cf(cf(&db, CF_LOGS), be(u64::MAX));
            db.write_opt(batch, &synced())?;
            Ok(())
        })
        .await
        .map_err(io_write)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let db = self.db.clone();
        blocking(move || {
            // Record the purge point first, in the same synced batch as the
            // deletion, so the log state is never ahead of what is on disk.
            let mut batch = WriteBatch::default();
            batch.put_cf(
                cf(&db, CF_RAFT),
                KEY_PURGED,
                encode("last purged log id", &Some(log_id))?,
            );
            batch.delete_range_cf(cf(&db, CF_LOGS), be(0), be(log_id.index.saturating_add(1)));
            db.write_opt(batch, &synced())?;
            Ok(())
        })
        .await
        .map_err(io_write)
    }
}
