//! The provisioner: on the leader only, it makes every claim real outside
//! (a bucket and its key, a database and its role), and reports what it did
//! as the claim's status, through Raft.
//!
//! Every step is idempotent and every outside name comes from the claim's
//! uid, so a new leader that takes over half-way finds what the old one
//! created and finishes it: one bucket or database per claim, never two.
//! A failure is written to the claim's status with its reason, and the
//! claim is tried again with a backoff (1 s doubling to 60 s).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ndc_core::claims::{
    Claim, ClaimKind, ClaimOp, ClaimRequest, ClaimSpec, ClaimStatus, Condition, DeletionPolicy,
    Phase, StatusBasis,
};
use ndc_core::domain::{Actor, Role};
use ndc_storage::{BucketRequest, DatabaseRequest, DatabaseStore, ObjectStore, S3Credentials};
use tracing::{info, warn};

use crate::clock::now_ms;
use crate::secrets::Secret;

mod backends;
mod context;
mod queue;
#[cfg(test)]
mod tests;

pub use backends::{BackendsFile, Provisioning};
pub(crate) use context::{Context, Leadership, StatusWriter};
use queue::{load, Queue, NO_DATABASE_SERVER, NO_OBJECT_STORE};

/// Claims handled at once. A pass spends much of its time waiting (for
/// the backend, then for its status to commit), so more passes than cores
/// keep both busy.
const PARALLEL: usize = 16;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Longest a pass over one claim may take before it is abandoned (and
/// retried), so one stuck backend call does not hold up every claim.
const PASS_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the leader looks at its queue even when nothing changed
/// (retries whose backoff has passed).
const RESCAN: Duration = Duration::from_millis(500);

fn actor() -> Actor {
    Actor {
        name: "provisioner".into(),
        roles: vec![Role::Provisioner],
    }
}

/// Counters of the provisioner's work on this node, for benchmarks and
/// operators: how much it did and where its time went.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    full_scans: AtomicU64,
    passes: AtomicU64,
    failed_passes: AtomicU64,
    status_writes: AtomicU64,
    pass_micros: AtomicU64,
    object_store_micros: AtomicU64,
    database_micros: AtomicU64,
    bucket_passes: AtomicU64,
    database_passes: AtomicU64,
    status_write_micros: AtomicU64,
    max_queue: AtomicU64,
}

/// A reading of [`Stats`]. Times are summed over passes that ran at once,
/// so they can exceed the wall-clock time.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProvisionerStats {
    /// Times the leader read every claim (on taking over, or after falling
    /// behind the change feed).
    pub full_scans: u64,
    pub passes: u64,
    pub failed_passes: u64,
    pub status_writes: u64,
    pub pass_seconds: f64,
    /// Passes over bucket claims, and their time in the object store.
    pub bucket_passes: u64,
    pub object_store_seconds: f64,
    /// Passes over database claims, and their time in the database server.
    pub database_passes: u64,
    pub database_seconds: f64,
    pub status_write_seconds: f64,
    /// The most claims waiting for a pass at once.
    pub max_queue: u64,
}

impl Stats {
    pub(crate) fn read(&self) -> ProvisionerStats {
        let secs = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e6;
        ProvisionerStats {
            full_scans: self.full_scans.load(Ordering::Relaxed),
            passes: self.passes.load(Ordering::Relaxed),
            failed_passes: self.failed_passes.load(Ordering::Relaxed),
            status_writes: self.status_writes.load(Ordering::Relaxed),
            pass_seconds: secs(&self.pass_micros),
            bucket_passes: self.bucket_passes.load(Ordering::Relaxed),
            object_store_seconds: secs(&self.object_store_micros),
            database_passes: self.database_passes.load(Ordering::Relaxed),
            database_seconds: secs(&self.database_micros),
            status_write_seconds: secs(&self.status_write_micros),
            max_queue: self.max_queue.load(Ordering::Relaxed),
        }
    }
}

fn add_time(counter: &AtomicU64, since: Instant) {
    counter.fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
}

/// Times a backend call into `counter`.
async fn timed<T>(counter: &AtomicU64, f: impl std::future::Future<Output = T>) -> T {
    let start = Instant::now();
    let r = f.await;
    add_time(counter, start);
    r
}

/// What one pass over a claim ended with.
enum Done {
    Status(ClaimStatus),
    Forget(String),
}

/// Why a pass failed: the reason code and the message for the status.
struct Failure {
    reason: &'static str,
    message: String,
}

impl Failure {
    fn new(reason: &'static str, message: impl std::fmt::Display) -> Failure {
        Failure {
            reason,
            message: message.to_string(),
        }
    }
}

fn condition(status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: "Ready".into(),
        status,
        reason: reason.into(),
        message,
        at_ms: now_ms(),
    }
}

/// Provisions claims while this node leads, until the change feed closes.
pub(crate) async fn run(ctx: Arc<Context>) {
    let mut notices = ctx.claims.subscribe();
    let mut tick = tokio::time::interval(RESCAN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut queue = Queue::new(&ctx.backends);
    let mut running: tokio::task::JoinSet<(String, bool)> = tokio::task::JoinSet::new();
    let stats = &ctx.stats;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Ok((uid, ok)) = done {
                    queue.done(&uid, ok, Instant::now());
                }
            }
            r = notices.recv() => match r {
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => queue.loaded = false,
                Ok(b) => queue.apply(&b),
            }
        }
        // Everything else that changed meanwhile.
        loop {
            match notices.try_recv() {
                Ok(b) => queue.apply(&b),
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => queue.loaded = false,
                Err(_) => break,
            }
        }
        if !ctx.leadership.leads() {
            // Passes under way finish (their reports are fenced); nothing new starts.
            queue.clear();
            continue;
        }
        if !queue.loaded {
            // Everything committed before this point is applied here.
            if ctx.leadership.read_barrier().await.is_err() {
                continue;
            }
            let Some(revision) = load(&ctx.claims, &mut queue) else {
                continue;
            };
            stats.full_scans.fetch_add(1, Ordering::Relaxed);
            // Changes after the first page come from the feed again.
            queue.revision = revision;
            queue.loaded = true;
        }
        stats
            .max_queue
            .fetch_max(queue.len() as u64, Ordering::Relaxed);
        let now = Instant::now();
        queue.wake(now);
        let free = PARALLEL.saturating_sub(running.len());
        for uid in queue.take(free) {
            // The claim as it is now; one that converged or went meanwhile
            // leaves the queue.
            let c = match ctx.claims.claim(&uid) {
                Ok((Some(c), _)) if !c.converged() && queue.workable(&c) => c,
                Ok(_) => {
                    queue.remove(&uid);
                    continue;
                }
                Err(e) => {
                    warn!(%uid, error = %e, "cannot read a claim to provision it");
                    queue.done(&uid, false, now);
                    continue;
                }
            };
            let ctx = ctx.clone();
            running.spawn(async move {
                let uid = c.uid.clone();
                let start = Instant::now();
                let ok = match tokio::time::timeout(PASS_TIMEOUT, pass(&ctx, c)).await {
                    Ok(ok) => ok,
                    Err(_) => {
                        warn!(%uid, "a provisioning pass took longer than {PASS_TIMEOUT:?}; abandoned, retried later");
                        false
                    }
                };
                let stats = &ctx.stats;
                add_time(&stats.pass_micros, start);
                stats.passes.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    stats.failed_passes.fetch_add(1, Ordering::Relaxed);
                }
                (uid, ok)
            });
        }
    }
}

/// One pass over one claim: act, then record the outcome. Returns whether
/// the claim needs no retry.
async fn pass(ctx: &Context, claim: Claim) -> bool {
    let stats = &ctx.stats;
    let (backend_time, passes) = match claim.kind() {
        ClaimKind::Bucket => (&stats.object_store_micros, &stats.bucket_passes),
        ClaimKind::Database => (&stats.database_micros, &stats.database_passes),
    };
    passes.fetch_add(1, Ordering::Relaxed);
    let outcome = if claim.deletion.is_some() {
        timed(backend_time, delete(ctx, &claim)).await
    } else {
        timed(backend_time, provision(ctx, &claim)).await
    };
    let (op, ok) = match outcome {
        Ok(Done::Status(status)) => (
            ClaimOp::SetStatus {
                uid: claim.uid.clone(),
                status,
                basis: StatusBasis::of(&claim),
            },
            true,
        ),
        Ok(Done::Forget(outcome)) => {
            info!(uid = %claim.uid, tenant = %claim.tenant, name = %claim.name, %outcome, "claim deleted");
            (
                ClaimOp::Forget {
                    uid: claim.uid.clone(),
                    outcome,
                },
                true,
            )
        }
        Err(f) => {
            warn!(uid = %claim.uid, tenant = %claim.tenant, name = %claim.name, reason = f.reason, error = %f.message, "provisioning failed");
            let mut status = claim.status.clone();
            let same = status
                .ready_condition()
                .is_some_and(|c| !c.status && c.message == f.message);
            if same {
                // Already reported: no new revision for the same failure.
                return false;
            }
            status.phase = if claim.deletion.is_some() {
                Phase::Deleting
            } else {
                Phase::Failed
            };
            status.conditions = vec![condition(false, f.reason, f.message)];
            (
                ClaimOp::SetStatus {
                    uid: claim.uid.clone(),
                    status,
                    basis: StatusBasis::of(&claim),
                },
                false,
            )
        }
    };
    let req = ClaimRequest {
        actor: actor(),
        at_ms: now_ms(),
        op,
    };
    stats.status_writes.fetch_add(1, Ordering::Relaxed);
    let written = timed(&stats.status_write_micros, ctx.status.record(req)).await;
    match written {
        Ok(ndc_store::Response::Claim { .. }) => ok,
        Ok(other) => {
            warn!(uid = %claim.uid, "claim status not recorded: {other:?}");
            false
        }
        Err(e) => {
            warn!(uid = %claim.uid, error = %e, "claim status not recorded");
            false
        }
    }
}

fn open(ctx: &Context, claim: &Claim) -> Result<Secret, Failure> {
    let key = ctx.secrets.as_ref().ok_or_else(|| {
        Failure::new(
            "NoSecretsKey",
            "the leader has no secrets key (--secrets-key-file) to open the credentials with",
        )
    })?;
    key.open(&claim.uid, &claim.credentials)
        .map_err(|e| Failure::new("CredentialsUnreadable", e))
}

fn objects(ctx: &Context) -> Result<&Arc<dyn ObjectStore>, Failure> {
    ctx.backends.objects.as_ref().ok_or_else(|| {
        Failure::new(
            NO_OBJECT_STORE,
            "no object store is configured on the control plane (ndc server --backends-file)",
        )
    })
}

fn databases(ctx: &Context) -> Result<&Arc<dyn DatabaseStore>, Failure> {
    ctx.backends.databases.as_ref().ok_or_else(|| {
        Failure::new(
            NO_DATABASE_SERVER,
            "no PostgreSQL server is configured on the control plane (ndc server --backends-file)",
        )
    })
}

fn backend(e: ndc_storage::Error) -> Failure {
    let reason = match e {
        ndc_storage::Error::Unsupported { .. } => "Unsupported",
        ndc_storage::Error::NotEmpty { .. } => "BucketNotEmpty",
        _ => "BackendError",
    };
    Failure::new(reason, e)
}

async fn provision(ctx: &Context, claim: &Claim) -> Result<Done, Failure> {
    let name = claim.external_name();
    let secret = open(ctx, claim)?;
    let mut status = ClaimStatus {
        phase: Phase::Ready,
        observed_generation: claim.generation,
        observed_credentials: claim.credentials.generation,
        ..ClaimStatus::default()
    };
    match (&claim.spec, secret) {
        (
            ClaimSpec::Bucket(b),
            Secret::S3 {
                access_key_id,
                secret_access_key,
            },
        ) => {
            let objects = objects(ctx)?;
            // After a rotation every earlier key goes, once the new one
            // works, however many rotations were interrupted.
            let removed = objects
                .ensure_bucket_with_key(
                    &BucketRequest {
                        name: name.clone(),
                        size_quota_bytes: b.size_bytes,
                        versioning: b.versioning,
                        retention_days: b.retention_days,
                    },
                    &format!("{name}-g{}", claim.credentials.generation),
                    &S3Credentials {
                        access_key_id: access_key_id.clone(),
                        secret_access_key,
                    },
                )
                .await
                .map_err(backend)?;
            if !removed.is_empty() {
                info!(bucket = %name, ?removed, "earlier keys removed");
            }
            status.endpoint = Some(objects.endpoint());
            status.region = Some(objects.region());
            status.access_key_id = Some(access_key_id);
            status.conditions = vec![condition(
                true,
                "Provisioned",
                format!("bucket {name} is ready in {}", objects.product()),
            )];
        }
        (ClaimSpec::Database(d), Secret::Password { password }) => {
            let dbs = databases(ctx)?;
            dbs.ensure_database(&DatabaseRequest {
                name: name.clone(),
                role: name.clone(),
                password,
                connection_limit: d.connection_limit,
            })
            .await
            .map_err(backend)?;
            status.endpoint = Some(format!("{}:{}", dbs.host(), dbs.port()));
            status.conditions = vec![condition(
                true,
                "Provisioned",
                format!("database {name} is ready in {}", dbs.product()),
            )];
        }
        _ => {
            return Err(Failure::new(
                "CredentialsUnreadable",
                "the credentials do not match the claim's kind",
            ))
        }
    }
    Ok(Done::Status(status))
}

async fn delete(ctx: &Context, claim: &Claim) -> Result<Done, Failure> {
    let name = claim.external_name();
    if claim.deletion_policy == DeletionPolicy::Retain {
        return Ok(Done::Forget(format!(
            "retained: {} {name} and its credentials are kept",
            claim.kind()
        )));
    }
    match claim.kind() {
        ClaimKind::Bucket => delete_bucket(ctx, claim, &name).await,
        ClaimKind::Database => delete_database(ctx, claim, &name).await,
    }
}

/// Deletes a claim's bucket (refused while it holds objects, unless the
/// deletion purges) and every key of it.
async fn delete_bucket(ctx: &Context, claim: &Claim, name: &str) -> Result<Done, Failure> {
    let purge = claim.deletion.as_ref().is_some_and(|d| d.purge);
    let objects = objects(ctx)?;
    if objects.bucket_exists(name).await.map_err(backend)? {
        if !purge && !objects.is_empty(name).await.map_err(backend)? {
            return Err(Failure::new(
                "BucketNotEmpty",
                format!(
                    "bucket {} is not empty; nothing was deleted: delete it again with --purge to delete its objects too",
                    claim.name
                ),
            ));
        }
        // The tenant's keys go first, so nothing is written meanwhile.
        objects.remove_other_keys(name, "").await.map_err(backend)?;
        objects.delete_bucket(name, purge).await.map_err(backend)?;
    }
    let mut keys: Vec<String> = claim.status.access_key_id.iter().cloned().collect();
    if let Ok(Secret::S3 { access_key_id, .. }) = open(ctx, claim) {
        keys.push(access_key_id);
    }
    keys.dedup();
    for k in keys {
        objects.remove_key(&k).await.map_err(backend)?;
    }
    Ok(Done::Forget(format!(
        "deleted bucket {name}{}",
        if purge { " and its objects" } else { "" }
    )))
}

/// Drops a claim's database and its role, after storing a final dump in
/// the backup bucket and recording where it went.
async fn delete_database(ctx: &Context, claim: &Claim, name: &str) -> Result<Done, Failure> {
    let dbs = databases(ctx)?;
    if !dbs.database_exists(name).await.map_err(backend)? {
        dbs.drop_database(name, name).await.map_err(backend)?;
        return Ok(Done::Forget(match &claim.status.backup {
            Some(b) => format!("deleted database {name}; final dump at {b}"),
            None => format!("deleted database {name} (it was never created)"),
        }));
    }
    let objects = ctx.backends.objects.as_ref();
    let bucket = ctx.backends.backup_bucket.as_ref();
    let (Some(objects), Some(bucket)) = (objects, bucket) else {
        return Err(Failure::new(
            "NoBackupBucket",
            "a database is never dropped without a final dump, and no backup bucket is configured (backends file: backup_bucket)",
        ));
    };
    // Nothing is written after the dump; the dump is stored, and its
    // place recorded, before the drop.
    dbs.lock_out(name, name).await.map_err(backend)?;
    let dump = dbs.dump(name).await.map_err(backend)?;
    objects
        .ensure_bucket(&BucketRequest {
            name: bucket.clone(),
            size_quota_bytes: 0,
            versioning: false,
            retention_days: None,
        })
        .await
        .map_err(backend)?;
    let key = format!(
        "databases/{}/{}-{}/{}.sql",
        claim.tenant,
        claim.name,
        claim.uid,
        now_ms()
    );
    objects
        .put_object(bucket, &key, dump)
        .await
        .map_err(backend)?;
    if !objects.object_exists(bucket, &key).await.map_err(backend)? {
        return Err(Failure::new(
            "BackupMissing",
            format!("the final dump s3://{bucket}/{key} was written but cannot be found; the database is kept"),
        ));
    }
    let location = format!("s3://{bucket}/{key}");
    let mut status = claim.status.clone();
    status.backup = Some(location.clone());
    status.conditions = vec![condition(
        false,
        "Deleting",
        format!("final dump stored at {location}; dropping the database"),
    )];
    let req = ClaimRequest {
        actor: actor(),
        at_ms: now_ms(),
        op: ClaimOp::SetStatus {
            uid: claim.uid.clone(),
            status,
            basis: StatusBasis::of(claim),
        },
    };
    ctx.status
        .record(req)
        .await
        .map_err(|e| Failure::new("StatusNotRecorded", e))?;
    dbs.drop_database(name, name).await.map_err(backend)?;
    Ok(Done::Forget(format!(
        "deleted database {name}; final dump at {location}"
    )))
}
