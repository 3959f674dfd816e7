//! Snapshots streamed through files: a body built on one store and received
//! by another replaces its whole state; a cut-off body is refused with the
//! old state kept; an install cut short by a crash is redone at open.

use std::path::Path;

use ndc_store::{Command, Op, StateMachine, Txn, TypeConfig};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

fn put(index: u64, keys: &[(&str, &str)]) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Command::Txn(Txn {
            compares: vec![],
            ops: keys
                .iter()
                .map(|(k, v)| Op::Put {
                    key: (*k).into(),
                    value: v.as_bytes().to_vec(),
                })
                .collect(),
        })),
    }
}

/// Every object under `/`, as (key, value, mod revision).
fn objects(reader: &ndc_store::StoreReader) -> Vec<(String, Vec<u8>, u64)> {
    let page = reader.list("/", None, 0).expect("list");
    page.items
        .into_iter()
        .map(|(k, o)| (k, o.value, o.mod_revision))
        .collect()
}

/// The store's database under `dir`, opened as it is, past the store.
fn raw_db(dir: &Path) -> rocksdb::DB {
    let cfs = ["logs", "raft", "kv", "events", "sm"];
    rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.join("db"), cfs)
        .expect("open the database")
}

/// A store with `n` objects over a few entries, and a snapshot of it.
async fn source(
    dir: &Path,
    n: usize,
) -> (
    ndc_store::Store,
    openraft::Snapshot<TypeConfig>,
    Vec<(String, Vec<u8>, u64)>,
) {
    let mut store = ndc_store::open(dir, 1000).expect("open source");
    let values: Vec<(String, String)> = (0..n)
        .map(|i| {
            (
                format!("/obj/{i:05}"),
                format!("value {i} {}", "x".repeat(i % 300)),
            )
        })
        .collect();
    for (i, chunk) in values.chunks(100).enumerate() {
        let kv: Vec<(&str, &str)> = chunk
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        store
            .state_machine
            .apply([put(i as u64 + 1, &kv)])
            .await
            .expect("apply");
    }
    let snap = store
        .state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let want = objects(&store.reader);
    (store, snap, want)
}

/// Sends `body` into `sm` the way openraft does: a file from
/// `begin_receiving_snapshot`, written in chunks, then installed.
/// A store under `dir` with one object of its own (that a refused body
/// must leave in place), and its objects.
async fn target_with_its_own_object(dir: &Path) -> (ndc_store::Store, Vec<(String, Vec<u8>, u64)>) {
    let mut dst = ndc_store::open(dir, 1000).expect("open target");
    dst.state_machine
        .apply([put(1, &[("/mine", "kept")])])
        .await
        .expect("apply");
    let before = objects(&dst.reader);
    (dst, before)
}

/// A store under `dir` that has installed `snap`, closed again.
async fn installed(dir: &Path, snap: &mut openraft::Snapshot<TypeConfig>) {
    let mut dst = ndc_store::open(dir, 1000).expect("open target");
    send(&mut dst.state_machine, snap, |_| {}).await;
}

async fn send(
    sm: &mut StateMachine,
    snap: &mut openraft::Snapshot<TypeConfig>,
    change: impl FnOnce(&mut Vec<u8>),
) {
    let meta = snap.meta.clone();
    let received = receive(sm, snap, change).await;
    sm.install_snapshot(&meta, received).await.expect("install");
}

async fn receive(
    sm: &mut StateMachine,
    snap: &mut openraft::Snapshot<TypeConfig>,
    change: impl FnOnce(&mut Vec<u8>),
) -> Box<tokio::fs::File> {
    let mut body = Vec::new();
    snap.snapshot
        .seek(std::io::SeekFrom::Start(0))
        .await
        .expect("seek");
    snap.snapshot
        .read_to_end(&mut body)
        .await
        .expect("read body");
    change(&mut body);
    let mut received = sm.begin_receiving_snapshot().await.expect("begin");
    for chunk in body.chunks(1000) {
        received.write_all(chunk).await.expect("write chunk");
    }
    received.shutdown().await.expect("shutdown");
    received
}

#[tokio::test]
async fn a_received_snapshot_replaces_the_whole_state_and_becomes_current() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_src, mut snap, want) = source(a.path(), 2500).await;
    assert_eq!(want.len(), 2500);

    let mut dst = ndc_store::open(b.path(), 1000).expect("open target");
    // An object the snapshot does not have: it must go.
    dst.state_machine
        .apply([put(1, &[("/stale", "old")])])
        .await
        .expect("apply");
    send(&mut dst.state_machine, &mut snap, |_| {}).await;

    assert_eq!(objects(&dst.reader), want);
    let (applied, _) = dst.state_machine.applied_state().await.expect("applied");
    assert_eq!(applied, snap.meta.last_log_id);
    let cur = dst
        .state_machine
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("a current snapshot");
    assert_eq!(cur.meta, snap.meta);

    // Reopened, the store has the same objects and offers the same body.
    drop(cur);
    drop(dst);
    let mut again = ndc_store::open(b.path(), 1000).expect("reopen");
    assert_eq!(objects(&again.reader), want);
    let mut cur = again
        .state_machine
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("a current snapshot after reopening");
    let (mut x, mut y) = (Vec::new(), Vec::new());
    cur.snapshot.read_to_end(&mut x).await.unwrap();
    snap.snapshot
        .seek(std::io::SeekFrom::Start(0))
        .await
        .unwrap();
    snap.snapshot.read_to_end(&mut y).await.unwrap();
    assert_eq!(x, y, "the body kept is the body received");
}

#[tokio::test]
async fn a_cut_off_body_is_refused_and_the_state_is_kept() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_src, mut snap, _) = source(a.path(), 500).await;
    let len = snap.snapshot.metadata().await.unwrap().len();

    let (mut dst, before) = target_with_its_own_object(b.path()).await;
    for cut in [len - 1, len - 9, len / 2, 20, 3] {
        let meta = snap.meta.clone();
        let received = receive(&mut dst.state_machine, &mut snap, |b| {
            b.truncate(cut as usize)
        })
        .await;
        let err = dst
            .state_machine
            .install_snapshot(&meta, received)
            .await
            .expect_err("a cut-off body must be refused");
        assert!(!err.to_string().is_empty());
        assert_eq!(objects(&dst.reader), before, "cut at {cut} of {len}");
        assert!(dst
            .state_machine
            .get_current_snapshot()
            .await
            .expect("current")
            .is_none());
    }
}

#[tokio::test]
async fn a_damaged_body_is_refused_by_its_digest_and_the_state_is_kept() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_src, mut snap, _) = source(a.path(), 500).await;
    let len = snap.snapshot.metadata().await.unwrap().len() as usize;

    let (mut dst, before) = target_with_its_own_object(b.path()).await;
    // One bit changed in a value, in the middle of the body, and in the
    // digest itself: every record still reads well; only the digest tells.
    for at in [len / 2, len - 1] {
        let meta = snap.meta.clone();
        let received = receive(&mut dst.state_machine, &mut snap, |b| b[at] ^= 0x01).await;
        let err = dst
            .state_machine
            .install_snapshot(&meta, received)
            .await
            .expect_err("a damaged body must be refused");
        assert!(err.to_string().contains("SHA-256"), "at {at}: {err}");
        assert_eq!(objects(&dst.reader), before, "damaged at {at} of {len}");
    }
}

#[tokio::test]
async fn a_body_of_the_format_without_a_digest_is_still_installed() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_src, mut snap, want) = source(a.path(), 300).await;
    let mut dst = ndc_store::open(b.path(), 1000).expect("open target");
    send(&mut dst.state_machine, &mut snap, |b| {
        assert_eq!(&b[..8], b"ndcsnap3");
        b[..8].copy_from_slice(b"ndcsnap2");
        b.truncate(b.len() - 32);
    })
    .await;
    assert_eq!(objects(&dst.reader), want);
}

#[tokio::test]
async fn an_install_cut_short_is_redone_at_open() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_src, mut snap, want) = source(a.path(), 800).await;
    installed(b.path(), &mut snap).await;
    // What a crash between deleting the old objects and writing the applied
    // state leaves: the install mark set, objects missing.
    {
        let db = raw_db(b.path());
        let sm = db.cf_handle("sm").unwrap();
        let mark = ndc_store::encode("mark", &snap.meta.snapshot_id).unwrap();
        db.put_cf(sm, b"installing", mark).unwrap();
        let kv = db.cf_handle("kv").unwrap();
        db.delete_range_cf(kv, b"/obj/00400".as_slice(), [0xffu8].as_slice())
            .unwrap();
        db.flush_cf(kv).unwrap();
    }
    let dst = ndc_store::open(b.path(), 1000).expect("reopen");
    assert_eq!(objects(&dst.reader), want);
}

#[tokio::test]
async fn a_body_damaged_on_disk_stops_the_redo_at_open() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_src, mut snap, _) = source(a.path(), 300).await;
    installed(b.path(), &mut snap).await;
    let kv_keys = |db: &rocksdb::DB| {
        let kv = db.cf_handle("kv").unwrap();
        db.iterator_cf(kv, rocksdb::IteratorMode::Start).count()
    };
    // The install is to be redone, and its body took damage meanwhile.
    let before = {
        let db = raw_db(b.path());
        let sm = db.cf_handle("sm").unwrap();
        let mark = ndc_store::encode("mark", &snap.meta.snapshot_id).unwrap();
        db.put_cf(sm, b"installing", mark).unwrap();
        db.flush_cf(sm).unwrap();
        kv_keys(&db)
    };
    assert!(before >= 300);
    let body = std::fs::read_dir(b.path().join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "snap"))
        .expect("the body on disk");
    let mut bytes = std::fs::read(&body).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&body, bytes).unwrap();
    let err = match ndc_store::open(b.path(), 1000) {
        Ok(_) => panic!("a damaged body must stop the open"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("SHA-256"), "{err}");
    // Found before the install deleted anything.
    assert_eq!(kv_keys(&raw_db(b.path())), before);
}

#[tokio::test]
async fn a_mark_for_a_snapshot_never_published_is_dropped_and_the_state_kept() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_src, mut snap, want) = source(a.path(), 300).await;
    {
        let mut dst = ndc_store::open(b.path(), 1000).expect("open target");
        send(&mut dst.state_machine, &mut snap, |_| {}).await;
        dst.state_machine
            .apply([put(100, &[("/after", "later")])])
            .await
            .expect("apply after the install");
    }
    // A stop after the mark of a newer snapshot was set, before it was
    // published: nothing was touched, so nothing is installed again.
    {
        let db = raw_db(b.path());
        let sm = db.cf_handle("sm").unwrap();
        let mark = ndc_store::encode("mark", &"9-999-0".to_string()).unwrap();
        db.put_cf(sm, b"installing", mark).unwrap();
    }
    let dst = ndc_store::open(b.path(), 1000).expect("reopen");
    let mut after = want.clone();
    after.insert(0, ("/after".into(), b"later".to_vec(), 100));
    assert_eq!(
        objects(&dst.reader),
        after,
        "the write after the install is kept"
    );
}
