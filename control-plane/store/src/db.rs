//! Opening the RocksDB database that holds both the log and the state machine.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, Options, DB};

use crate::error::{Error, Result};
use crate::log_store::LogStore;
use crate::state_machine::{StateMachine, StoreReader};

pub(crate) const CF_LOGS: &str = "logs";
pub(crate) const CF_RAFT: &str = "raft";
pub(crate) const CF_KV: &str = "kv";
pub(crate) const CF_EVENTS: &str = "events";
pub(crate) const CF_SM: &str = "sm";
const ALL_CFS: [&str; 5] = [CF_LOGS, CF_RAFT, CF_KV, CF_EVENTS, CF_SM];

/// Revisions of watch history kept by default: a watcher that falls further
/// behind than this lists again. At ~100 changes/s this is over a minute and a
/// half of history, enough for an operator restart.
pub const DEFAULT_HISTORY_REVISIONS: u64 = 10_000;

/// The two halves openraft drives, plus a reader for the API.
pub struct Store {
    pub log: LogStore,
    pub state_machine: StateMachine,
    pub reader: StoreReader,
}

/// Opens (or creates) the store under `dir`: the database in `dir/db`, the
/// snapshot files beside it (`snapshot.meta`, `snapshots/`).
pub fn open(dir: &Path, history_revisions: u64) -> Result<Store> {
    std::fs::create_dir_all(dir).map_err(|source| Error::SnapshotFile {
        path: dir.to_path_buf(),
        source,
    })?;
    let db_path = dir.join("db");
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    // Never keep acknowledged data only in a memtable: every write goes to the
    // WAL, and log appends are written with sync.
    opts.set_manual_wal_flush(false);
    let cfs = ALL_CFS
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
    let db = DB::open_cf_descriptors(&opts, &db_path, cfs).map_err(|source| Error::Open {
        path: db_path.clone(),
        source,
    })?;
    let db = Arc::new(db);
    let state_machine = StateMachine::new(db.clone(), dir, history_revisions.max(1))?;
    let reader = state_machine.reader();
    Ok(Store {
        log: LogStore::new(db),
        state_machine,
        reader,
    })
}

pub(crate) fn cf<'a>(db: &'a DB, name: &'static str) -> &'a rocksdb::ColumnFamily {
    // Every family is created in `open`; a missing one is a programming error
    // that `open` would already have reported.
    #[allow(clippy::expect_used)]
    db.cf_handle(name).expect("column family created at open")
}

/// Big-endian so that RocksDB's byte order is numeric order.
pub(crate) fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub(crate) fn from_be(bytes: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| Error::Decode {
        what: "index key",
        reason: format!("{} bytes, expected 8", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(arr))
}

pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Join(e.to_string()))?
}
