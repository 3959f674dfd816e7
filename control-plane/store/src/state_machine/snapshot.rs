//! Snapshots: built from a RocksDB snapshot, written to disk newest-only.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use openraft::{AnyError, RaftSnapshotBuilder, Snapshot, StorageIOError};
use rocksdb::IteratorMode;

use super::*;
use crate::codec::{decode, encode};
use crate::db::{blocking, cf, CF_KV, CF_SM};
use crate::error::{Error, Result};

/// The last log id of the snapshot on disk. A snapshot is written only if
/// it is newer: a build that started before an install finished must not
/// replace the installed one (the log behind it is already purged).
pub(super) type SnapshotOnDisk = Arc<std::sync::Mutex<Option<LogId>>>;

pub(super) fn snapshot_on_disk(path: &std::path::Path) -> Result<SnapshotOnDisk> {
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

pub(super) async fn write_snapshot_file(
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
