//! The provisioner: on the leader only, it makes every claim real outside
//! (a bucket and its key, a database and its role), and reports what it did
//! as the claim's status, through Raft.
//!
//! Every step is idempotent and every outside name comes from the claim's
//! uid, so a new leader that takes over half-way finds what the old one
//! created and finishes it: one bucket or database per claim, never two.
//! A failure is written to the claim's status with its reason, and the
//! claim is tried again with a backoff (1 s doubling to 60 s).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ndc_storage::{BucketRequest, DatabaseRequest, DatabaseStore, ObjectStore, S3Credentials};
use ndc_store::claims::{
    Claim, ClaimKind, ClaimOp, ClaimRequest, ClaimSpec, ClaimStatus, Condition, DeletionPolicy,
    Phase, StatusBasis,
};
use ndc_store::domain::{Actor, Role};
use tracing::{info, warn};

use crate::node::Node;
use crate::secrets::Secret;

/// The outside systems claims are provisioned in. A kind without one stays
/// Pending with a status that says so.
#[derive(Clone, Debug, Default)]
pub struct Provisioning {
    pub objects: Option<Arc<dyn ObjectStore>>,
    pub databases: Option<Arc<dyn DatabaseStore>>,
    /// Where the final dump of a deleted database is stored (a bucket of
    /// the data centre's own, outside any claim).
    pub backup_bucket: Option<String>,
}

/// Claims handled at once.
const PARALLEL: usize = 8;
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Longest a pass over one claim may take before it is abandoned (and
/// retried), so one stuck backend call does not hold up every claim.
const PASS_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the leader looks at claims even when nothing changed (retries).
const RESCAN: Duration = Duration::from_millis(500);

fn actor() -> Actor {
    Actor {
        name: "provisioner".into(),
        roles: vec![Role::Provisioner],
    }
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
        at_ms: crate::node::now_ms(),
    }
}

pub(crate) async fn run(node: Arc<Node>) {
    let mut notices = node.reader.subscribe();
    let mut tick = tokio::time::interval(RESCAN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // uid → (not before, next delay)
    let mut retry: HashMap<String, (Instant, Duration)> = HashMap::new();
    let touches_claims = |b: &ndc_store::WatchBatch| match b {
        ndc_store::WatchBatch::Changes { events, .. } => events
            .iter()
            .any(|e| e.key.starts_with(ndc_store::claims::CLAIMS_PREFIX)),
        ndc_store::WatchBatch::Reset { .. } => true,
    };
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = notices.recv() => match r {
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                // Other changes (tenants, the audit log...) are not our business.
                Ok(b) if !touches_claims(&b) => continue,
                _ => {}
            }
        }
        // One pass for everything that changed meanwhile.
        while notices.try_recv().is_ok() {}
        if node.metrics().current_leader != Some(node.id) || node.retired_at().is_some() {
            retry.clear();
            continue;
        }
        // Everything committed before this point is applied here.
        if node.read_barrier(false).await.is_err() {
            continue;
        }
        let Ok((claims, _)) = node.reader.claims() else {
            continue;
        };
        let now = Instant::now();
        retry.retain(|uid, _| claims.iter().any(|c| &c.uid == uid && !c.converged()));
        let todo: Vec<Claim> = claims
            .into_iter()
            .filter(|c| !c.converged())
            .filter(|c| retry.get(&c.uid).is_none_or(|(at, _)| *at <= now))
            .collect();
        if todo.is_empty() {
            continue;
        }
        let results: Vec<(String, bool)> = futures::stream::iter(todo)
            .map(|c| {
                let node = node.clone();
                async move {
                    let uid = c.uid.clone();
                    match tokio::time::timeout(PASS_TIMEOUT, pass(&node, c)).await {
                        Ok(ok) => (uid, ok),
                        Err(_) => {
                            warn!(%uid, "a provisioning pass took longer than {PASS_TIMEOUT:?}; abandoned, retried later");
                            (uid, false)
                        }
                    }
                }
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let now = Instant::now();
        for (uid, ok) in results {
            if ok {
                retry.remove(&uid);
            } else {
                let delay = retry.get(&uid).map_or(FIRST_RETRY, |(_, d)| *d);
                retry.insert(uid, (now + delay, (delay * 2).min(MAX_RETRY)));
            }
        }
    }
}

/// One pass over one claim: act, then record the outcome. Returns whether
/// the claim needs no retry.
async fn pass(node: &Node, claim: Claim) -> bool {
    let outcome = if claim.deletion.is_some() {
        delete(node, &claim).await
    } else {
        provision(node, &claim).await
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
        at_ms: crate::node::now_ms(),
        op,
    };
    match node.write(ndc_store::Command::Claim(Box::new(req))).await {
        Ok(ndc_store::Response::Claim { .. }) => ok,
        Ok(other) => {
            warn!(uid = %claim.uid, "claim status not recorded: {other:?}");
            false
        }
        Err(e) => {
            warn!(uid = %claim.uid, error = %e.message(), "claim status not recorded");
            false
        }
    }
}

fn open(node: &Node, claim: &Claim) -> Result<Secret, Failure> {
    let key = node.secrets.as_ref().ok_or_else(|| {
        Failure::new(
            "NoSecretsKey",
            "the leader has no secrets key (--secrets-key-file) to open the credentials with",
        )
    })?;
    key.open(&claim.uid, &claim.credentials)
        .map_err(|e| Failure::new("CredentialsUnreadable", e))
}

fn objects(node: &Node) -> Result<&Arc<dyn ObjectStore>, Failure> {
    node.provisioning.objects.as_ref().ok_or_else(|| {
        Failure::new(
            "NoObjectStore",
            "no object store is configured on the control plane (ndc server --backends-file)",
        )
    })
}

fn databases(node: &Node) -> Result<&Arc<dyn DatabaseStore>, Failure> {
    node.provisioning.databases.as_ref().ok_or_else(|| {
        Failure::new(
            "NoDatabaseServer",
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

async fn provision(node: &Node, claim: &Claim) -> Result<Done, Failure> {
    let name = claim.external_name();
    let secret = open(node, claim)?;
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
            let objects = objects(node)?;
            objects
                .ensure_bucket(&BucketRequest {
                    name: name.clone(),
                    size_quota_bytes: b.size_bytes,
                    versioning: b.versioning,
                    retention_days: b.retention_days,
                })
                .await
                .map_err(backend)?;
            objects
                .ensure_key(
                    &name,
                    &format!("{name}-g{}", claim.credentials.generation),
                    &S3Credentials {
                        access_key_id: access_key_id.clone(),
                        secret_access_key,
                    },
                )
                .await
                .map_err(backend)?;
            // After a rotation every earlier key goes, once the new one
            // works, however many rotations were interrupted.
            let removed = objects
                .remove_other_keys(&name, &access_key_id)
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
            let dbs = databases(node)?;
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

async fn delete(node: &Node, claim: &Claim) -> Result<Done, Failure> {
    let name = claim.external_name();
    let purge = claim.deletion.as_ref().is_some_and(|d| d.purge);
    if claim.deletion_policy == DeletionPolicy::Retain {
        return Ok(Done::Forget(format!(
            "retained: {} {name} and its credentials are kept",
            claim.kind()
        )));
    }
    match claim.kind() {
        ClaimKind::Bucket => {
            let objects = objects(node)?;
            if objects.bucket_exists(&name).await.map_err(backend)? {
                if !purge && !objects.is_empty(&name).await.map_err(backend)? {
                    return Err(Failure::new(
                        "BucketNotEmpty",
                        format!(
                            "bucket {} is not empty; nothing was deleted: delete it again with --purge to delete its objects too",
                            claim.name
                        ),
                    ));
                }
                // The tenant's keys go first, so nothing is written meanwhile.
                objects
                    .remove_other_keys(&name, "")
                    .await
                    .map_err(backend)?;
                objects.delete_bucket(&name, purge).await.map_err(backend)?;
            }
            let mut keys: Vec<String> = claim.status.access_key_id.iter().cloned().collect();
            if let Ok(Secret::S3 { access_key_id, .. }) = open(node, claim) {
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
        ClaimKind::Database => {
            let dbs = databases(node)?;
            if !dbs.database_exists(&name).await.map_err(backend)? {
                dbs.drop_database(&name, &name).await.map_err(backend)?;
                return Ok(Done::Forget(match &claim.status.backup {
                    Some(b) => format!("deleted database {name}; final dump at {b}"),
                    None => format!("deleted database {name} (it was never created)"),
                }));
            }
            let objects = node.provisioning.objects.as_ref();
            let bucket = node.provisioning.backup_bucket.as_ref();
            let (Some(objects), Some(bucket)) = (objects, bucket) else {
                return Err(Failure::new(
                    "NoBackupBucket",
                    "a database is never dropped without a final dump, and no backup bucket is configured (backends file: backup_bucket)",
                ));
            };
            // Nothing is written after the dump; the dump is stored, and its
            // place recorded, before the drop.
            dbs.lock_out(&name, &name).await.map_err(backend)?;
            let dump = dbs.dump(&name).await.map_err(backend)?;
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
                crate::node::now_ms()
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
                at_ms: crate::node::now_ms(),
                op: ClaimOp::SetStatus {
                    uid: claim.uid.clone(),
                    status,
                    basis: StatusBasis::of(claim),
                },
            };
            node.write(ndc_store::Command::Claim(Box::new(req)))
                .await
                .map_err(|e| Failure::new("StatusNotRecorded", e.message()))?;
            dbs.drop_database(&name, &name).await.map_err(backend)?;
            Ok(Done::Forget(format!(
                "deleted database {name}; final dump at {location}"
            )))
        }
    }
}

/// The backends file given to `ndc server --backends-file`: where claims
/// are provisioned. Every part is optional; a claim whose kind has no
/// backend stays Pending and says so.
///
/// ```yaml
/// garage:
///   s3_endpoint: http://127.0.0.1:3900
///   admin_endpoint: http://127.0.0.1:3903
///   admin_token: "..."
///   region: garage
/// postgres:
///   host: 127.0.0.1
///   port: 5432
///   admin_user: postgres
///   admin_password: "..."
/// backup_bucket: ndc-backups
/// ```
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendsFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub garage: Option<ndc_storage::GarageConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<ndc_storage::PostgresConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_bucket: Option<String>,
}

impl Provisioning {
    /// Reads a backends file and connects to what it names.
    pub async fn load(path: &std::path::Path) -> Result<Provisioning, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the backends file {}: {e}", path.display()))?;
        let file: BackendsFile =
            serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Provisioning::connect(file).await
    }

    /// Connects to the backends; an unreachable one is an error now rather
    /// than a surprise at the first claim.
    pub async fn connect(file: BackendsFile) -> Result<Provisioning, String> {
        let objects: Option<Arc<dyn ObjectStore>> = match file.garage {
            Some(g) => {
                let endpoint = g.admin_endpoint.clone();
                let store = ndc_storage::GarageStore::connect(g)
                    .await
                    .map_err(|e| format!("cannot use Garage at {endpoint}: {e}"))?;
                Some(Arc::new(store))
            }
            None => None,
        };
        let databases: Option<Arc<dyn DatabaseStore>> = match file.postgres {
            Some(p) => {
                let at = format!("{}:{}", p.host, p.port);
                let store = ndc_storage::PostgresStore::connect(p)
                    .await
                    .map_err(|e| format!("cannot use PostgreSQL at {at}: {e}"))?;
                Some(Arc::new(store))
            }
            None => None,
        };
        if file.backup_bucket.is_some() && objects.is_none() {
            return Err("backup_bucket needs an object store (garage) in the backends file".into());
        }
        Ok(Provisioning {
            objects,
            databases,
            backup_bucket: file.backup_bucket,
        })
    }
}
