//! Passes over one claim against in-memory backends: what is made outside,
//! and what is recorded as the claim's status.

use std::collections::BTreeMap;
use std::sync::Mutex;

use ndc_core::claims::{BucketSpec, DatabaseSpec, Deletion};
use ndc_storage::{Error as StorageError, ObjectStoreFeatures, Result as StorageResult};
use ndc_store::Response;
use tonic::async_trait;

use super::*;
use crate::secrets::SecretsKey;

/// An object store in memory. With `fail` set, every call fails with it.
#[derive(Debug, Default)]
struct Objects {
    state: Mutex<ObjectsState>,
}

#[derive(Debug, Default)]
struct ObjectsState {
    /// Buckets and their objects.
    buckets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Access key id → the bucket it may use.
    keys: BTreeMap<String, String>,
    /// Buckets created, ever.
    created: usize,
    fail: Option<String>,
}

impl Objects {
    /// The state, or the failure every call is set to end with.
    fn state(&self, what: &str) -> StorageResult<std::sync::MutexGuard<'_, ObjectsState>> {
        let s = self.state.lock().expect("the fake's lock");
        match &s.fail {
            Some(reason) => Err(StorageError::backend(what, reason)),
            None => Ok(s),
        }
    }

    fn look(&self) -> std::sync::MutexGuard<'_, ObjectsState> {
        self.state.lock().expect("the fake's lock")
    }
}

#[async_trait]
impl ObjectStore for Objects {
    fn product(&self) -> &'static str {
        "FakeS3"
    }
    fn features(&self) -> ObjectStoreFeatures {
        ObjectStoreFeatures {
            versioning: true,
            object_lock: true,
            quotas: true,
        }
    }
    fn endpoint(&self) -> String {
        "http://objects.test".into()
    }
    fn region(&self) -> String {
        "test".into()
    }
    async fn ensure_bucket(&self, req: &BucketRequest) -> StorageResult<()> {
        let mut s = self.state("ensure_bucket")?;
        if !s.buckets.contains_key(&req.name) {
            s.buckets.insert(req.name.clone(), BTreeMap::new());
            s.created += 1;
        }
        Ok(())
    }
    async fn bucket_exists(&self, name: &str) -> StorageResult<bool> {
        Ok(self.state("bucket_exists")?.buckets.contains_key(name))
    }
    async fn is_empty(&self, name: &str) -> StorageResult<bool> {
        let s = self.state("is_empty")?;
        Ok(s.buckets.get(name).is_none_or(|o| o.is_empty()))
    }
    async fn delete_bucket(&self, name: &str, purge: bool) -> StorageResult<()> {
        let mut s = self.state("delete_bucket")?;
        let objects = s.buckets.get(name).map_or(0, |o| o.len() as u64);
        if objects > 0 && !purge {
            return Err(StorageError::NotEmpty {
                bucket: name.into(),
                objects,
            });
        }
        s.buckets.remove(name);
        Ok(())
    }
    async fn ensure_key(&self, bucket: &str, _: &str, creds: &S3Credentials) -> StorageResult<()> {
        let mut s = self.state("ensure_key")?;
        s.keys.insert(creds.access_key_id.clone(), bucket.into());
        Ok(())
    }
    async fn remove_key(&self, access_key_id: &str) -> StorageResult<()> {
        self.state("remove_key")?.keys.remove(access_key_id);
        Ok(())
    }
    async fn remove_other_keys(&self, bucket: &str, keep: &str) -> StorageResult<Vec<String>> {
        let mut s = self.state("remove_other_keys")?;
        let other: Vec<String> = s
            .keys
            .iter()
            .filter(|(k, b)| b.as_str() == bucket && k.as_str() != keep)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &other {
            s.keys.remove(k);
        }
        Ok(other)
    }
    async fn put_object(&self, bucket: &str, key: &str, body: Vec<u8>) -> StorageResult<()> {
        let mut s = self.state("put_object")?;
        let Some(objects) = s.buckets.get_mut(bucket) else {
            return Err(StorageError::backend("put_object", "no such bucket"));
        };
        objects.insert(key.into(), body);
        Ok(())
    }
    async fn object_exists(&self, bucket: &str, key: &str) -> StorageResult<bool> {
        let s = self.state("object_exists")?;
        Ok(s.buckets.get(bucket).is_some_and(|o| o.contains_key(key)))
    }
}

/// A database server in memory.
#[derive(Debug, Default)]
struct Databases {
    state: Mutex<DatabasesState>,
}

#[derive(Debug, Default)]
struct DatabasesState {
    /// Databases and the password of their role.
    databases: BTreeMap<String, String>,
    /// Databases created, ever.
    created: usize,
    /// Databases whose role was locked out.
    locked: Vec<String>,
}

impl Databases {
    fn look(&self) -> std::sync::MutexGuard<'_, DatabasesState> {
        self.state.lock().expect("the fake's lock")
    }
}

#[async_trait]
impl DatabaseStore for Databases {
    fn product(&self) -> &'static str {
        "FakeSQL"
    }
    fn host(&self) -> String {
        "db.test".into()
    }
    fn port(&self) -> u16 {
        5432
    }
    async fn ensure_database(&self, req: &DatabaseRequest) -> StorageResult<()> {
        let mut s = self.look();
        if !s.databases.contains_key(&req.name) {
            s.created += 1;
        }
        s.databases.insert(req.name.clone(), req.password.clone());
        Ok(())
    }
    async fn database_exists(&self, name: &str) -> StorageResult<bool> {
        Ok(self.look().databases.contains_key(name))
    }
    async fn lock_out(&self, name: &str, _: &str) -> StorageResult<()> {
        self.look().locked.push(name.into());
        Ok(())
    }
    async fn dump(&self, name: &str) -> StorageResult<Vec<u8>> {
        Ok(format!("-- dump of {name}").into_bytes())
    }
    async fn role_exists(&self, role: &str) -> StorageResult<bool> {
        Ok(self.look().databases.contains_key(role))
    }
    async fn drop_database(&self, name: &str, _: &str) -> StorageResult<()> {
        self.look().databases.remove(name);
        Ok(())
    }
}

/// Records claim requests as the store would apply them: a status replaces
/// the claim's, a forget removes it.
#[derive(Default)]
struct Recorder {
    claims: Mutex<BTreeMap<String, Claim>>,
    ops: Mutex<Vec<ClaimOp>>,
}

impl Recorder {
    fn ops(&self) -> Vec<ClaimOp> {
        self.ops.lock().expect("the recorder's lock").clone()
    }

    /// The claim as the recorded statuses left it.
    fn claim(&self, uid: &str) -> Option<Claim> {
        self.claims
            .lock()
            .expect("the recorder's lock")
            .get(uid)
            .cloned()
    }
}

#[async_trait]
impl StatusWriter for Recorder {
    async fn record(&self, req: ClaimRequest) -> Result<Response, String> {
        self.ops.lock().expect("lock").push(req.op.clone());
        let mut claims = self.claims.lock().expect("lock");
        let (claim, removed) = match req.op {
            ClaimOp::SetStatus { uid, status, .. } => {
                let c = claims.get_mut(&uid).ok_or("no such claim")?;
                c.status = status;
                (c.clone(), false)
            }
            ClaimOp::Forget { uid, .. } => (claims.remove(&uid).ok_or("no such claim")?, true),
            other => return Err(format!("not a provisioner's request: {other:?}")),
        };
        Ok(Response::Claim {
            revision: 1,
            claim: Box::new(claim),
            removed,
        })
    }
}

struct Leader;

#[async_trait]
impl Leadership for Leader {
    fn leads(&self) -> bool {
        true
    }
    async fn read_barrier(&self) -> Result<(), String> {
        Ok(())
    }
}

struct Harness {
    ctx: Context,
    objects: Arc<Objects>,
    databases: Arc<Databases>,
    recorder: Arc<Recorder>,
    key: SecretsKey,
    _store: ndc_store::Store,
    _dir: tempfile::TempDir,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = ndc_store::open(dir.path(), 100).expect("a store");
    let key = SecretsKey::from_hex(&"5a".repeat(32)).expect("a key");
    let objects = Arc::new(Objects::default());
    let databases = Arc::new(Databases::default());
    let recorder = Arc::new(Recorder::default());
    let ctx = Context {
        claims: store.reader.clone(),
        status: recorder.clone(),
        leadership: Arc::new(Leader),
        secrets: Some(key.clone()),
        backends: Provisioning {
            objects: Some(objects.clone()),
            databases: Some(databases.clone()),
            backup_bucket: Some("backups".into()),
        },
        stats: Arc::default(),
    };
    Harness {
        ctx,
        objects,
        databases,
        recorder,
        key,
        _store: store,
        _dir: dir,
    }
}

impl Harness {
    /// A new claim, known to the recorder.
    fn claim(&self, uid: &str, spec: ClaimSpec, policy: DeletionPolicy) -> Claim {
        let secret = match spec {
            ClaimSpec::Bucket(_) => Secret::S3 {
                access_key_id: format!("GK{uid}"),
                secret_access_key: "s3cret".into(),
            },
            ClaimSpec::Database(_) => Secret::Password {
                password: "pa55word".into(),
            },
        };
        let c = Claim {
            uid: uid.into(),
            tenant: "t1".into(),
            name: format!("n{uid}"),
            spec,
            deletion_policy: policy,
            generation: 1,
            created_revision: 1,
            created_at_ms: 0,
            created_by: "test".into(),
            credentials: self.key.seal(uid, 1, &secret).expect("sealed"),
            deletion: None,
            status: ClaimStatus::default(),
        };
        self.recorder
            .claims
            .lock()
            .expect("lock")
            .insert(uid.into(), c.clone());
        c
    }

    fn bucket(&self, uid: &str, policy: DeletionPolicy) -> Claim {
        let spec = ClaimSpec::Bucket(BucketSpec {
            size_bytes: 1 << 20,
            ..BucketSpec::default()
        });
        self.claim(uid, spec, policy)
    }

    fn database(&self, uid: &str, policy: DeletionPolicy) -> Claim {
        let spec = ClaimSpec::Database(DatabaseSpec {
            size_bytes: 1 << 20,
            connection_limit: 5,
        });
        self.claim(uid, spec, policy)
    }

    /// The claim as recorded, now asked to be deleted.
    fn deleting(&self, uid: &str, purge: bool) -> Claim {
        let mut c = self.recorder.claim(uid).expect("the claim is recorded");
        c.deletion = Some(Deletion {
            at_ms: 0,
            by: "test".into(),
            purge,
        });
        c
    }
}

/// The status of a recorded `SetStatus`, checked to be based on `claim`.
fn status_of(op: &ClaimOp, claim: &Claim) -> ClaimStatus {
    match op {
        ClaimOp::SetStatus { uid, status, basis } => {
            assert_eq!(uid, &claim.uid);
            assert_eq!(basis, &StatusBasis::of(claim));
            status.clone()
        }
        other => panic!("expected a status, got {other:?}"),
    }
}

fn outcome_of(op: &ClaimOp) -> String {
    match op {
        ClaimOp::Forget { outcome, .. } => outcome.clone(),
        other => panic!("expected a forget, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bucket_claim_gets_its_bucket_and_key_and_is_reported_ready() {
    let h = harness();
    let c = h.bucket("b1", DeletionPolicy::Delete);
    assert!(pass(&h.ctx, c.clone()).await, "a good pass needs no retry");

    let objects = h.objects.look();
    assert_eq!(objects.created, 1);
    assert!(objects.buckets.contains_key("ndc-b1"));
    assert_eq!(objects.keys.get("GKb1").map(String::as_str), Some("ndc-b1"));
    let ops = h.recorder.ops();
    assert_eq!(ops.len(), 1, "one status: {ops:?}");
    let status = status_of(&ops[0], &c);
    assert_eq!(status.phase, Phase::Ready);
    assert_eq!(status.access_key_id.as_deref(), Some("GKb1"));
    assert_eq!(status.endpoint.as_deref(), Some("http://objects.test"));
    assert_eq!(status.region.as_deref(), Some("test"));
    assert_eq!(status.observed_generation, 1);
    assert_eq!(status.observed_credentials, 1);
    let ready = status.ready_condition().expect("a Ready condition");
    assert!(ready.status);
    assert_eq!(ready.reason, "Provisioned");
    assert!(h.recorder.claim("b1").expect("kept").converged());
    let stats = h.ctx.stats.read();
    assert_eq!((stats.bucket_passes, stats.status_writes), (1, 1));
}

#[tokio::test]
async fn a_second_pass_over_a_bucket_claim_makes_no_second_bucket() {
    let h = harness();
    let c = h.bucket("b2", DeletionPolicy::Delete);
    // As after a new leader that did not see the first pass's status.
    assert!(pass(&h.ctx, c.clone()).await);
    assert!(pass(&h.ctx, c.clone()).await);

    let objects = h.objects.look();
    assert_eq!(objects.created, 1, "one bucket, made once");
    assert_eq!(objects.buckets.len(), 1);
    assert_eq!(objects.keys.len(), 1, "one key: {:?}", objects.keys);
    let ops = h.recorder.ops();
    assert_eq!(ops.len(), 2);
    let (first, second) = (status_of(&ops[0], &c), status_of(&ops[1], &c));
    assert_eq!(second.phase, Phase::Ready);
    assert_eq!(second.access_key_id, first.access_key_id);
}

#[tokio::test]
async fn a_database_claim_gets_its_database_once_and_is_reported_ready() {
    let h = harness();
    let c = h.database("d1", DeletionPolicy::Delete);
    assert!(pass(&h.ctx, c.clone()).await);
    assert!(pass(&h.ctx, c.clone()).await);

    let dbs = h.databases.look();
    assert_eq!(dbs.created, 1, "one database, made once");
    assert_eq!(dbs.databases.len(), 1);
    assert_eq!(
        dbs.databases.get("ndc_d1").map(String::as_str),
        Some("pa55word")
    );
    let ops = h.recorder.ops();
    assert_eq!(ops.len(), 2);
    let status = status_of(&ops[0], &c);
    assert_eq!(status.phase, Phase::Ready);
    assert_eq!(status.endpoint.as_deref(), Some("db.test:5432"));
    assert_eq!(status.access_key_id, None);
    assert!(status.ready_condition().is_some_and(|r| r.status));
    assert_eq!(h.objects.look().created, 0, "no bucket for a database");
}

#[tokio::test]
async fn deleting_a_bucket_claim_removes_its_bucket_and_key() {
    let h = harness();
    let c = h.bucket("b3", DeletionPolicy::Delete);
    assert!(pass(&h.ctx, c).await);
    let c = h.deleting("b3", false);
    assert!(pass(&h.ctx, c).await);

    let objects = h.objects.look();
    assert!(objects.buckets.is_empty(), "{:?}", objects.buckets);
    assert!(objects.keys.is_empty(), "{:?}", objects.keys);
    let ops = h.recorder.ops();
    assert_eq!(outcome_of(&ops[1]), "deleted bucket ndc-b3");
    assert!(h.recorder.claim("b3").is_none(), "the claim is forgotten");
}

#[tokio::test]
async fn deleting_a_retained_claim_keeps_what_was_made() {
    let h = harness();
    let b = h.bucket("b4", DeletionPolicy::Retain);
    let d = h.database("d4", DeletionPolicy::Retain);
    assert!(pass(&h.ctx, b).await);
    assert!(pass(&h.ctx, d).await);
    assert!(pass(&h.ctx, h.deleting("b4", true)).await);
    assert!(pass(&h.ctx, h.deleting("d4", false)).await);

    let objects = h.objects.look();
    assert!(objects.buckets.contains_key("ndc-b4"));
    assert!(objects.keys.contains_key("GKb4"));
    assert!(h.databases.look().databases.contains_key("ndc_d4"));
    let ops = h.recorder.ops();
    assert_eq!(
        outcome_of(&ops[2]),
        "retained: bucket ndc-b4 and its credentials are kept"
    );
    assert_eq!(
        outcome_of(&ops[3]),
        "retained: database ndc_d4 and its credentials are kept"
    );
}

#[tokio::test]
async fn a_bucket_with_objects_is_kept_unless_purged() {
    let h = harness();
    assert!(pass(&h.ctx, h.bucket("b5", DeletionPolicy::Delete)).await);
    h.objects
        .look()
        .buckets
        .get_mut("ndc-b5")
        .expect("made")
        .insert("report.pdf".into(), b"%PDF".to_vec());

    assert!(!pass(&h.ctx, h.deleting("b5", false)).await);
    assert!(h.objects.look().buckets.contains_key("ndc-b5"));
    let status = status_of(&h.recorder.ops()[1], &h.deleting("b5", false));
    assert_eq!(status.phase, Phase::Deleting);
    let ready = status.ready_condition().expect("a Ready condition");
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (false, "BucketNotEmpty")
    );

    assert!(pass(&h.ctx, h.deleting("b5", true)).await);
    assert!(h.objects.look().buckets.is_empty());
    assert_eq!(
        outcome_of(&h.recorder.ops()[2]),
        "deleted bucket ndc-b5 and its objects"
    );
}

#[tokio::test]
async fn deleting_a_database_claim_stores_a_final_dump_then_drops_it() {
    let h = harness();
    assert!(pass(&h.ctx, h.database("d6", DeletionPolicy::Delete)).await);
    let c = h.deleting("d6", false);
    assert!(pass(&h.ctx, c.clone()).await);

    let dbs = h.databases.look();
    assert!(dbs.databases.is_empty(), "{:?}", dbs.databases);
    assert_eq!(dbs.locked, vec!["ndc_d6".to_string()]);
    let objects = h.objects.look();
    let dumps = objects.buckets.get("backups").expect("the backup bucket");
    let (key, dump) = dumps.iter().next().expect("a final dump");
    assert!(key.starts_with("databases/t1/nd6-d6/"), "{key}");
    assert_eq!(dump, b"-- dump of ndc_d6");
    // Where the dump went is recorded before the drop, and told at the end.
    let ops = h.recorder.ops();
    assert_eq!(ops.len(), 3, "{ops:?}");
    let location = format!("s3://backups/{key}");
    assert_eq!(status_of(&ops[1], &c).backup, Some(location.clone()));
    assert_eq!(
        outcome_of(&ops[2]),
        format!("deleted database ndc_d6; final dump at {location}")
    );
}

#[tokio::test]
async fn a_backend_failure_is_recorded_with_its_reason_once() {
    let h = harness();
    h.objects.look().fail = Some("the disks are full".into());
    let c = h.bucket("b7", DeletionPolicy::Delete);
    assert!(!pass(&h.ctx, c.clone()).await, "a failed pass is retried");

    assert!(h.objects.look().buckets.is_empty());
    let ops = h.recorder.ops();
    assert_eq!(ops.len(), 1);
    let status = status_of(&ops[0], &c);
    assert_eq!(status.phase, Phase::Failed);
    let ready = status.ready_condition().expect("a Ready condition");
    assert!(!ready.status);
    assert_eq!(ready.reason, "BackendError");
    assert_eq!(ready.message, "ensure_bucket: the disks are full");
    assert_eq!(h.ctx.stats.read().status_writes, 1);

    // The same failure again is not written again.
    let c = h.recorder.claim("b7").expect("kept");
    assert!(!pass(&h.ctx, c).await);
    assert_eq!(h.recorder.ops().len(), 1);
}

#[tokio::test]
async fn a_kind_without_a_backend_says_so() {
    let mut h = harness();
    h.ctx.backends.databases = None;
    let c = h.database("d8", DeletionPolicy::Delete);
    assert!(!pass(&h.ctx, c.clone()).await);

    let status = status_of(&h.recorder.ops()[0], &c);
    assert_eq!(status.phase, Phase::Failed);
    let ready = status.ready_condition().expect("a Ready condition");
    assert_eq!(ready.reason, NO_DATABASE_SERVER);
}
