//! Snapshots, streamed through files: built from a RocksDB snapshot straight
//! into a file, sent to peers from that file, received into a file and
//! installed from it in bounded batches. Memory stays flat whatever the size
//! of the state.
//!
//! On disk, beside the database:
//! - `snapshot.meta`: which body is current, and its meta;
//! - `snapshots/<id>.snap`: the current body (older ones are removed once a
//!   newer meta is in place; a peer still reading one keeps its open handle);
//! - `snapshots/*.part`: a body being built or received, removed at open.
//!
//! A body is `MAGIC`, the revision (u64 LE), then one record per object
//! (key length u32 LE, key, value length u32 LE, value), an end mark
//! (`u32::MAX`, then the record count as u64 LE) and the SHA-256 of every
//! byte before it, so a cut-off or damaged body is refused rather than
//! installed. Bodies of the previous format (`ndcsnap2`, without the
//! digest) are still read.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::{AnyError, RaftSnapshotBuilder, Snapshot, StorageIOError};
use rocksdb::{IteratorMode, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use super::*;
use crate::codec::{decode, encode};
use crate::db::{be, blocking, cf, CF_EVENTS, CF_KV, CF_SM};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"ndcsnap3";
/// The format before bodies carried a digest.
const MAGIC_UNCHECKED: &[u8; 8] = b"ndcsnap2";
const DIGEST_BYTES: usize = 32;
const END: u32 = u32::MAX;
/// Bytes of objects written to RocksDB per batch while installing.
const INSTALL_BATCH_BYTES: usize = 32 << 20;
/// Largest record a body may hold: far above any object the store accepts.
const MAX_RECORD_BYTES: u32 = 64 << 20;
const IO_BUFFER: usize = 4 << 20;
/// Set while an install has deleted the old objects but not yet written the
/// new applied state: at open, the install is redone from the body on disk.
pub(super) const KEY_INSTALLING: &[u8] = b"installing";

/// The meta file: the body it names is the current snapshot.
#[derive(Serialize, Deserialize, Clone)]
struct MetaFile {
    meta: SnapshotMeta,
    body: String,
    revision: u64,
}

/// The snapshot files of one store.
pub(super) struct Snapshots {
    meta_path: PathBuf,
    dir: PathBuf,
    /// The last log id of the snapshot on disk. Held across publishing, so
    /// bodies reach the disk one at a time and an older one never replaces
    /// a newer one (a build that started before an install finished must
    /// not: the log behind it is already purged).
    on_disk: Mutex<Option<LogId>>,
    /// The body being received, if any.
    incoming: Mutex<Option<PathBuf>>,
    seq: AtomicU64,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::SnapshotFile {
        path: path.to_path_buf(),
        source,
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::Join("snapshot lock poisoned".into())
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// A file name from a snapshot id: ids come from peers, so only plain
/// characters are kept.
fn body_name(snapshot_id: &str) -> String {
    let safe: String = snapshot_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{safe}.snap")
}

impl Snapshots {
    /// Opens the snapshot files under `store_dir`, removing unfinished
    /// bodies and bodies no meta names.
    pub(super) fn open(store_dir: &Path) -> Result<Self> {
        let dir = store_dir.join("snapshots");
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let meta_path = store_dir.join("snapshot.meta");
        // The single-file format of earlier builds: its state is in the
        // database already, and the next snapshot replaces it.
        let old = store_dir.join("snapshot.bin");
        if old.exists() {
            std::fs::remove_file(&old).map_err(io_err(&old))?;
        }
        let s = Self {
            meta_path,
            dir,
            on_disk: Mutex::new(None),
            incoming: Mutex::new(None),
            seq: AtomicU64::new(0),
        };
        let current = s.read_meta()?;
        *s.on_disk.lock().map_err(poisoned)? = current.as_ref().and_then(|m| m.meta.last_log_id);
        let keep = current.map(|m| m.body);
        for entry in std::fs::read_dir(&s.dir).map_err(io_err(&s.dir))? {
            let entry = entry.map_err(io_err(&s.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if Some(&name) != keep.as_ref() {
                let p = entry.path();
                std::fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        Ok(s)
    }

    fn read_meta(&self) -> Result<Option<MetaFile>> {
        match std::fs::read(&self.meta_path) {
            Ok(bytes) => Ok(Some(decode("snapshot meta", &bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::SnapshotFile {
                path: self.meta_path.clone(),
                source,
            }),
        }
    }

    fn part_path(&self, what: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{what}-{n}.part"))
    }

    /// Makes the body at `part` the current snapshot, if it is newer than
    /// the one on disk or `always`. Returns whether it did; `part` is gone
    /// either way (an open handle to it stays readable).
    fn publish(&self, part: &Path, m: &MetaFile, always: bool) -> Result<bool> {
        let mut current = self.on_disk.lock().map_err(poisoned)?;
        let newer = current.is_none() || m.meta.last_log_id > *current;
        if !(newer || always) {
            std::fs::remove_file(part).map_err(io_err(part))?;
            return Ok(false);
        }
        let body = self.dir.join(&m.body);
        std::fs::rename(part, &body).map_err(io_err(&body))?;
        sync_dir(&self.dir)?;
        let tmp = self.meta_path.with_extension("tmp");
        {
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&encode("snapshot meta", m)?)
                .map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        std::fs::rename(&tmp, &self.meta_path).map_err(io_err(&self.meta_path))?;
        if let Some(parent) = self.meta_path.parent() {
            sync_dir(parent)?;
        }
        *current = m.meta.last_log_id;
        // Older bodies: a peer still sending one keeps reading its handle.
        for entry in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "snap") && p != body {
                std::fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        Ok(true)
    }

    /// The current snapshot: its meta and an open handle on its body.
    pub(super) fn current(&self) -> Result<Option<(SnapshotMeta, File)>> {
        // Under the lock, so the body named is not replaced while opened.
        let _guard = self.on_disk.lock().map_err(poisoned)?;
        let Some(m) = self.read_meta()? else {
            return Ok(None);
        };
        let body = self.dir.join(&m.body);
        let f = File::open(&body).map_err(io_err(&body))?;
        Ok(Some((m.meta, f)))
    }

    /// A new file to receive a body into.
    pub(super) fn begin_receiving(&self) -> Result<File> {
        let path = self.part_path("incoming");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let earlier = self
            .incoming
            .lock()
            .map_err(poisoned)?
            .replace(path.clone());
        // A stream that was dropped for a newer one: its file is not needed.
        if let Some(p) = earlier {
            let _ = std::fs::remove_file(p);
        }
        Ok(f)
    }

    /// Takes a received body as the current snapshot. Returns where the
    /// body is kept. `received` is normally the file from [`Self::begin_receiving`];
    /// any other is copied.
    pub(super) fn publish_received(
        &self,
        meta: &SnapshotMeta,
        mut received: File,
    ) -> Result<PathBuf> {
        let incoming = self.incoming.lock().map_err(poisoned)?.take();
        let same = |p: &PathBuf| -> bool {
            match (std::fs::metadata(p), received.metadata()) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            }
        };
        let part = match incoming {
            Some(p) if same(&p) => p,
            other => {
                if let Some(p) = other {
                    let _ = std::fs::remove_file(p);
                }
                let p = self.part_path("copied");
                let mut out = File::create(&p).map_err(io_err(&p))?;
                use std::io::Seek;
                received
                    .seek(std::io::SeekFrom::Start(0))
                    .map_err(io_err(&p))?;
                std::io::copy(&mut received, &mut out).map_err(io_err(&p))?;
                p
            }
        };
        File::open(&part)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&part))?;
        // Check the whole body before the state is touched: a bad body is
        // refused and the old state stays.
        let revision = match read_body(&part, check_record) {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
        };
        let m = MetaFile {
            meta: meta.clone(),
            body: body_name(&meta.snapshot_id),
            revision,
        };
        self.publish(&part, &m, true)?;
        Ok(self.dir.join(&m.body))
    }

    /// The body of the current snapshot, for an install interrupted by a
    /// crash.
    fn current_body(&self) -> Result<Option<(MetaFile, PathBuf)>> {
        Ok(self.read_meta()?.map(|m| {
            let p = self.dir.join(&m.body);
            (m, p)
        }))
    }
}

/// Writes every object of `snap` as a body into `path`; returns the
/// revision and the number of objects.
fn write_body(db: &DB, snap: &rocksdb::Snapshot<'_>, revision: u64, path: &Path) -> Result<u64> {
    let io = io_err(path);
    let file = File::create(path).map_err(&io)?;
    let mut w = Digesting::new(BufWriter::with_capacity(IO_BUFFER, file));
    w.write_all(MAGIC).map_err(&io)?;
    w.write_all(&revision.to_le_bytes()).map_err(&io)?;
    let mut count: u64 = 0;
    for item in snap.iterator_cf(cf(db, CF_KV), IteratorMode::Start) {
        let (k, v) = item?;
        for part in [&*k, &*v] {
            let len = u32::try_from(part.len())
                .ok()
                .filter(|l| *l <= MAX_RECORD_BYTES)
                .ok_or_else(|| Error::Encode {
                    what: "snapshot record",
                    reason: format!("{} bytes", part.len()),
                })?;
            w.write_all(&len.to_le_bytes()).map_err(&io)?;
            w.write_all(part).map_err(&io)?;
        }
        count += 1;
    }
    w.write_all(&END.to_le_bytes()).map_err(&io)?;
    w.write_all(&count.to_le_bytes()).map_err(&io)?;
    let (mut w, digest) = w.finish();
    w.write_all(&digest).map_err(&io)?;
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(&io)?;
    Ok(count)
}

/// Reads a body, calling `each` on every object; returns its revision.
/// Refuses a body with a wrong header, an oversized record, no end mark or
/// a digest that does not match. `each` sees objects before the digest is
/// checked, so a body is read once to check it before it is installed.
fn read_body(path: &Path, mut each: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<u64> {
    let io = io_err(path);
    let bad = |reason: String| Error::Decode {
        what: "snapshot body",
        reason,
    };
    let mut r = Digesting::new(BufReader::with_capacity(
        IO_BUFFER,
        File::open(path).map_err(&io)?,
    ));
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            bad("cut off in its header".into())
        } else {
            io(e)
        }
    })?;
    let checked = match &magic {
        m if m == MAGIC => true,
        m if m == MAGIC_UNCHECKED => false,
        _ => return Err(bad("not an ndc snapshot body".into())),
    };
    let mut u64b = [0u8; 8];
    r.read_exact(&mut u64b).map_err(&io)?;
    let revision = u64::from_le_bytes(u64b);
    let mut count: u64 = 0;
    let (mut key, mut value) = (Vec::new(), Vec::new());
    let read_len = |r: &mut Digesting<BufReader<File>>, count: u64| -> Result<u32> {
        let mut b = [0u8; 4];
        r.read_exact(&mut b).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                bad(format!("cut off after {count} objects"))
            } else {
                io(e)
            }
        })?;
        Ok(u32::from_le_bytes(b))
    };
    loop {
        let klen = read_len(&mut r, count)?;
        if klen == END {
            break;
        }
        let vlen = {
            if klen > MAX_RECORD_BYTES {
                return Err(bad(format!("a key of {klen} bytes")));
            }
            key.resize(klen as usize, 0);
            r.read_exact(&mut key).map_err(&io)?;
            read_len(&mut r, count)?
        };
        if vlen > MAX_RECORD_BYTES {
            return Err(bad(format!("a value of {vlen} bytes")));
        }
        value.resize(vlen as usize, 0);
        r.read_exact(&mut value).map_err(&io)?;
        each(&key, &value)?;
        count += 1;
    }
    let cut = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            bad(format!("cut off in its end mark, after {count} objects"))
        } else {
            io(e)
        }
    };
    r.read_exact(&mut u64b).map_err(cut)?;
    let expected = u64::from_le_bytes(u64b);
    if expected != count {
        return Err(bad(format!(
            "{count} objects, its end mark says {expected}"
        )));
    }
    let (mut r, digest) = r.finish();
    if checked {
        let mut stated = [0u8; DIGEST_BYTES];
        r.read_exact(&mut stated).map_err(cut)?;
        if stated != digest {
            return Err(bad(
                "its SHA-256 does not match its contents: the body was damaged".into(),
            ));
        }
    }
    if r.read(&mut [0u8; 1]).map_err(&io)? != 0 {
        return Err(bad("bytes after the end mark".into()));
    }
    Ok(revision)
}

/// A reader or writer that keeps the SHA-256 of the bytes through it.
struct Digesting<T> {
    inner: T,
    hasher: sha2::Sha256,
}

impl<T> Digesting<T> {
    fn new(inner: T) -> Self {
        use sha2::Digest;
        Digesting {
            inner,
            hasher: sha2::Sha256::new(),
        }
    }

    /// The inner reader or writer, and the digest of what went through.
    fn finish(self) -> (T, [u8; DIGEST_BYTES]) {
        use sha2::Digest;
        (self.inner, self.hasher.finalize().into())
    }
}

impl<R: Read> Read for Digesting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Options for a write that reaches the disk before it returns.
fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

/// One record of a received body, checked before the old state is deleted:
/// a UTF-8 key (a key with the byte 0xff would outlive every later
/// install's range delete) and a value that decodes.
fn check_record(key: &[u8], value: &[u8]) -> Result<()> {
    std::str::from_utf8(key).map_err(|e| Error::Decode {
        what: "snapshot key",
        reason: e.to_string(),
    })?;
    decode::<StoredObject>("snapshot object", value)?;
    Ok(())
}

/// Sets the install mark for `snapshot_id`, durably, before the snapshot is
/// published: from then on a stop is followed by the install at open.
pub(super) fn mark_installing(db: &DB, snapshot_id: &str) -> Result<()> {
    let synced = synced();
    db.put_cf_opt(
        cf(db, CF_SM),
        KEY_INSTALLING,
        encode("install mark", &snapshot_id)?,
        &synced,
    )?;
    Ok(())
}

/// Clears the install mark of an install that never started (its body was
/// refused): the state was not touched.
pub(super) fn clear_installing(db: &DB) -> Result<()> {
    let synced = synced();
    db.delete_cf_opt(cf(db, CF_SM), KEY_INSTALLING, &synced)?;
    Ok(())
}

/// Replaces the whole state with the body at `path`: the old objects and
/// history go, the new objects are written in bounded batches, and the
/// applied state last. The install mark makes a crash in between redo the
/// install at open rather than leave half a state.
pub(super) fn install_body(db: &DB, path: &Path, meta: &SnapshotMeta) -> Result<u64> {
    let kv = cf(db, CF_KV);
    let sm = cf(db, CF_SM);
    let synced = synced();
    let mut batch = WriteBatch::default();
    batch.put_cf(
        sm,
        KEY_INSTALLING,
        encode("install mark", &meta.snapshot_id)?,
    );
    // Keys are UTF-8, which never contains the byte 0xff.
    batch.delete_range_cf(kv, b"".as_slice(), [0xffu8].as_slice());
    batch.delete_range_cf(cf(db, CF_EVENTS), be(0), be(u64::MAX));
    db.write_opt(batch, &synced)?;
    let mut batch = WriteBatch::default();
    let revision = read_body(path, |k, v| {
        batch.put_cf(kv, k, v);
        if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
            db.write(std::mem::take(&mut batch))?;
        }
        Ok(())
    })?;
    batch.put_cf(sm, KEY_APPLIED, encode("last applied", &meta.last_log_id)?);
    batch.put_cf(
        sm,
        KEY_MEMBERSHIP,
        encode("membership", &meta.last_membership)?,
    );
    batch.put_cf(sm, KEY_REVISION, encode("revision", &revision)?);
    batch.put_cf(sm, KEY_COMPACTED, encode("compacted revision", &revision)?);
    batch.delete_cf(sm, KEY_INSTALLING);
    // Every earlier batch went through the same write-ahead log, so this
    // synced write makes them durable too.
    db.write_opt(batch, &synced)?;
    Ok(revision)
}

/// At open: finishes an install a stop interrupted, from the body on disk.
///
/// The mark names the snapshot being installed and is set before that
/// snapshot is published. If the snapshot on disk is the one marked, it is
/// installed again; if not, the stop came before it was published, when
/// nothing had been touched, and the mark goes. A snapshot on disk newer
/// than the applied state (which no build makes) is installed too.
pub(super) fn finish_interrupted_install(db: &DB, snapshots: &Snapshots) -> Result<()> {
    let marked: Option<String> = match db.get_cf(cf(db, CF_SM), KEY_INSTALLING)? {
        Some(b) => Some(decode("install mark", &b)?),
        None => None,
    };
    let applied: Option<LogId> = match db.get_cf(cf(db, CF_SM), KEY_APPLIED)? {
        Some(b) => decode::<Option<LogId>>("last applied", &b)?,
        None => None,
    };
    let current = snapshots.current_body()?;
    let redo = match (&marked, &current) {
        (Some(id), Some((m, _))) => *id == m.meta.snapshot_id,
        (None, Some((m, _))) => m.meta.last_log_id > applied,
        _ => false,
    };
    if redo {
        if let Some((m, body)) = current {
            tracing::warn!(snapshot = %m.meta.snapshot_id, "redoing a snapshot install interrupted by a stop");
            // Checked whole first: a body damaged on disk stops the open
            // here, before the install deletes anything.
            read_body(&body, check_record)?;
            install_body(db, &body, &m.meta)?;
        }
    } else if marked.is_some() {
        clear_installing(db)?;
    }
    Ok(())
}

fn to_tokio(f: File) -> Box<tokio::fs::File> {
    Box::new(tokio::fs::File::from_std(f))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let db = self.db.clone();
        let snapshots = self.snapshots.clone();
        let (meta, file) = blocking(move || {
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
            let part = snapshots.part_path("build");
            let seq = snapshots.seq.fetch_add(1, Ordering::Relaxed);
            let snapshot_id = match applied {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, seq),
                None => format!("0-0-{seq}"),
            };
            if let Err(e) = write_body(&db, &snap, revision, &part) {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
            let meta = SnapshotMeta {
                last_log_id: applied,
                last_membership: membership,
                snapshot_id,
            };
            // Opened before publishing: the handle outlives a rename or a
            // removal.
            let file = File::open(&part).map_err(io_err(&part))?;
            let m = MetaFile {
                meta: meta.clone(),
                body: body_name(&meta.snapshot_id),
                revision,
            };
            snapshots.publish(&part, &m, false)?;
            Ok((meta, file))
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
        Ok(Snapshot {
            meta,
            snapshot: to_tokio(file),
        })
    }
}

pub(super) async fn begin_receiving(
    snapshots: Arc<Snapshots>,
) -> Result<Box<tokio::fs::File>, StorageError> {
    let f = blocking(move || snapshots.begin_receiving())
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?;
    Ok(to_tokio(f))
}

pub(super) async fn current(
    snapshots: Arc<Snapshots>,
) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
    let cur = blocking(move || snapshots.current())
        .await
        .map_err(|e| StorageIOError::read_snapshot(None, AnyError::new(&e)))?;
    Ok(cur.map(|(meta, f)| Snapshot {
        meta,
        snapshot: to_tokio(f),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_refused_while_an_install_is_under_way() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = crate::open(dir.path(), 100).expect("open");
        let db = store.state_machine.db.clone();
        assert!(store.reader.get("/k").is_ok());
        mark_installing(&db, "1-2-3").expect("mark");
        for r in [
            store.reader.get("/k").map(|_| ()),
            store.reader.list("/", None, 0).map(|_| ()),
            store.reader.scan_claims("", |_, _| true).map(|_| ()),
            store.reader.history(1, 2, 10).map(|_| ()),
        ] {
            assert!(matches!(r, Err(Error::Installing)), "{r:?}");
        }
        clear_installing(&db).expect("clear");
        assert!(store.reader.list("/", None, 0).is_ok());
    }
}
