//! Claims: buckets and databases that tenants ask for. A claim is admitted
//! inside apply against its tenant's quota and state; the leader's
//! provisioner then makes it real outside and writes the outcome back as the
//! claim's status.
//!
//! The store keeps each claim as JSON (where: `ndc_store::keys`). These
//! types also travel in log entries (postcard, a positional format): no
//! internally tagged enums and no skipped fields here. The uid is chosen by the
//! proposer and never reused; every external name is derived from it, so a
//! new leader finds what an earlier one created.

use serde::{Deserialize, Serialize};

use crate::{Changeset, Quota, Registry, TenantState};

use crate::domain::{Actor, RejectKind, Role};

/// Length of a claim uid: lowercase hex.
pub const UID_LEN: usize = 16;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum ClaimKind {
    Bucket,
    Database,
}

impl ClaimKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimKind::Bucket => "bucket",
            ClaimKind::Database => "database",
        }
    }

    pub fn parse(s: &str) -> Option<ClaimKind> {
        match s {
            "bucket" => Some(ClaimKind::Bucket),
            "database" => Some(ClaimKind::Database),
            _ => None,
        }
    }
}

impl std::fmt::Display for ClaimKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens outside when a claim is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum DeletionPolicy {
    /// Keep the bucket or database (and its credentials); ndc forgets it.
    #[default]
    Retain,
    /// Remove it: a non-empty bucket only with `purge`, a database only
    /// after a final dump is stored in the backup bucket.
    Delete,
}

impl DeletionPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            DeletionPolicy::Retain => "retain",
            DeletionPolicy::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<DeletionPolicy> {
        match s {
            "retain" => Some(DeletionPolicy::Retain),
            "delete" => Some(DeletionPolicy::Delete),
            _ => None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketSpec {
    /// Size quota in bytes, counted against the tenant's storage.
    pub size_bytes: u64,
    #[serde(default)]
    pub versioning: bool,
    /// Minimum retention of objects (object lock), where the store has it.
    #[serde(default)]
    pub retention_days: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct DatabaseSpec {
    /// Expected size in bytes, counted against the tenant's storage.
    pub size_bytes: u64,
    /// Connection limit of the database's role; 0 means the server default.
    #[serde(default)]
    pub connection_limit: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ClaimSpec {
    Bucket(BucketSpec),
    Database(DatabaseSpec),
}

impl ClaimSpec {
    pub fn kind(&self) -> ClaimKind {
        match self {
            ClaimSpec::Bucket(_) => ClaimKind::Bucket,
            ClaimSpec::Database(_) => ClaimKind::Database,
        }
    }

    pub fn size_bytes(&self) -> u64 {
        match self {
            ClaimSpec::Bucket(b) => b.size_bytes,
            ClaimSpec::Database(d) => d.size_bytes,
        }
    }

    /// What the claim takes from its tenant's quota.
    pub fn usage(&self) -> Quota {
        let mut q = Quota {
            storage_bytes: self.size_bytes(),
            ..Quota::default()
        };
        match self {
            ClaimSpec::Bucket(_) => q.buckets = 1,
            ClaimSpec::Database(_) => q.databases = 1,
        }
        q
    }
}

/// Credentials encrypted by the control plane (AEAD); only the servers that
/// hold the secrets key can open them. Bound to the claim's uid and
/// `generation`, so a sealed value cannot be moved to another claim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// 1 for the first credentials, +1 for each rotation.
    pub generation: u64,
    /// Hex.
    pub nonce: String,
    /// Hex.
    pub ciphertext: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Admitted, not provisioned yet.
    #[default]
    Pending,
    Ready,
    /// The last attempt failed; the provisioner retries with backoff.
    Failed,
    /// Deletion requested; waiting for the outside resource to be handled.
    Deleting,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Ready => "Ready",
            Phase::Failed => "Failed",
            Phase::Deleting => "Deleting",
        }
    }
}

/// A Kubernetes-style condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
    pub at_ms: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimStatus {
    pub phase: Phase,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Where tenants connect: an S3 endpoint or `host:port`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The S3 region to sign with (buckets).
    #[serde(default)]
    pub region: Option<String>,
    /// The generation of the spec this status describes.
    #[serde(default)]
    pub observed_generation: u64,
    /// The credentials generation in force outside.
    #[serde(default)]
    pub observed_credentials: u64,
    /// The access key id in force outside (buckets), so a rotation can
    /// remove the old key.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Where the final dump of a deleted database was stored.
    #[serde(default)]
    pub backup: Option<String>,
}

impl ClaimStatus {
    pub fn ready_condition(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == "Ready")
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Deletion {
    pub at_ms: u64,
    pub by: String,
    /// Delete a non-empty bucket's objects too.
    pub purge: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub uid: String,
    pub tenant: String,
    pub name: String,
    pub spec: ClaimSpec,
    pub deletion_policy: DeletionPolicy,
    /// Bumped when the spec changes.
    pub generation: u64,
    pub created_revision: u64,
    pub created_at_ms: u64,
    pub created_by: String,
    pub credentials: Sealed,
    #[serde(default)]
    pub deletion: Option<Deletion>,
    #[serde(default)]
    pub status: ClaimStatus,
}

impl Claim {
    pub fn kind(&self) -> ClaimKind {
        self.spec.kind()
    }

    /// The name of the bucket, or of the database and its role, outside.
    pub fn external_name(&self) -> String {
        external_name(self.kind(), &self.uid)
    }

    /// Whether the outside matches what is asked: nothing for the
    /// provisioner to do.
    pub fn converged(&self) -> bool {
        self.deletion.is_none()
            && self.status.phase == Phase::Ready
            && self.status.observed_generation == self.generation
            && self.status.observed_credentials == self.credentials.generation
    }

    /// The additional data bound into the credentials' encryption.
    pub fn credentials_aad(uid: &str, generation: u64) -> Vec<u8> {
        format!("ndc-claim-credentials/{uid}/{generation}").into_bytes()
    }
}

/// Buckets are `ndc-<uid>` (DNS-safe); databases and roles `ndc_<uid>`
/// (a plain SQL identifier).
pub fn external_name(kind: ClaimKind, uid: &str) -> String {
    match kind {
        ClaimKind::Bucket => format!("ndc-{uid}"),
        ClaimKind::Database => format!("ndc_{uid}"),
    }
}

/// A change to claims, as proposed to the log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ClaimRequest {
    pub actor: Actor,
    /// The proposer's clock, milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub op: ClaimOp,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ClaimOp {
    Create {
        uid: String,
        tenant: String,
        name: String,
        spec: ClaimSpec,
        deletion_policy: DeletionPolicy,
        credentials: Sealed,
    },
    /// Marks the claim for deletion; the provisioner finishes it.
    Delete { uid: String, purge: bool },
    /// New credentials; their generation must follow the current one.
    Rotate { uid: String, credentials: Sealed },
    /// The provisioner's report of the outside, made from the claim as it
    /// was at `basis`; refused if the claim changed since in a way the
    /// report did not see (a rotation, a deletion).
    SetStatus {
        uid: String,
        status: ClaimStatus,
        basis: StatusBasis,
    },
    /// The provisioner handled a deletion: the claim goes, and its quota
    /// returns to the tenant. `outcome` says what was done, for the audit.
    Forget { uid: String, outcome: String },
}

impl ClaimOp {
    /// What the request does, for counts and logs.
    pub fn action(&self) -> &'static str {
        match self {
            ClaimOp::Create { .. } => "claim.create",
            ClaimOp::Delete { .. } => "claim.delete",
            ClaimOp::Rotate { .. } => "claim.rotate",
            ClaimOp::SetStatus { .. } => "claim.status",
            ClaimOp::Forget { .. } => "claim.forget",
        }
    }

    pub fn uid(&self) -> &str {
        match self {
            ClaimOp::Create { uid, .. }
            | ClaimOp::Delete { uid, .. }
            | ClaimOp::Rotate { uid, .. }
            | ClaimOp::SetStatus { uid, .. }
            | ClaimOp::Forget { uid, .. } => uid,
        }
    }
}

/// What a provisioner's report was based on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusBasis {
    pub generation: u64,
    pub credentials: u64,
    pub deleting: bool,
}

impl StatusBasis {
    pub fn of(c: &Claim) -> StatusBasis {
        StatusBasis {
            generation: c.generation,
            credentials: c.credentials.generation,
            deleting: c.deletion.is_some(),
        }
    }
}

/// Applies a provisioner's report to a claim. A report based on an older
/// claim is refused; a report never forgets where a final dump went or
/// which key is in force, and a claim being deleted stays Deleting.
pub fn merge_status(
    claim: &mut Claim,
    basis: StatusBasis,
    mut status: ClaimStatus,
) -> Result<(), Refusal> {
    if StatusBasis::of(claim) != basis {
        return Err((
            RejectKind::Precondition,
            format!(
                "stale report on claim {}: it changed since (now generation {}, credentials {}, deleting {})",
                claim.uid,
                claim.generation,
                claim.credentials.generation,
                claim.deletion.is_some()
            ),
        ));
    }
    if status.backup.is_none() {
        status.backup = claim.status.backup.take();
    }
    if status.access_key_id.is_none() {
        status.access_key_id = claim.status.access_key_id.take();
    }
    if claim.deletion.is_some() {
        status.phase = Phase::Deleting;
    }
    claim.status = status;
    Ok(())
}

/// Checks a claim name: a DNS label (it becomes part of Kubernetes names).
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "claim name {name:?} is not valid: use 1 to 63 lowercase letters, digits and '-', not starting or ending with '-'"
        ))
    }
}

pub fn validate_uid(uid: &str) -> Result<(), String> {
    if uid.len() == UID_LEN
        && uid
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "claim uid {uid:?} is not valid: {UID_LEN} lowercase hex digits"
        ))
    }
}

fn validate_sealed(s: &Sealed) -> Result<(), String> {
    let hex = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_hexdigit());
    if s.generation == 0 || !hex(&s.nonce) || !hex(&s.ciphertext) {
        return Err("sealed credentials are malformed".into());
    }
    Ok(())
}

pub fn validate_spec(spec: &ClaimSpec) -> Result<(), String> {
    if spec.size_bytes() == 0 {
        return Err(format!(
            "a {} claim needs a size greater than zero (it is counted against the tenant's storage quota)",
            spec.kind()
        ));
    }
    if let ClaimSpec::Bucket(BucketSpec {
        retention_days: Some(0),
        ..
    }) = spec
    {
        return Err("retention days must be at least 1 (leave it out for none)".into());
    }
    Ok(())
}

/// A refusal, as apply reports it.
pub type Refusal = (RejectKind, String);

fn denied(actor: &Actor, what: &str) -> Refusal {
    (
        RejectKind::PermissionDenied,
        format!(
            "{} may not {what}: that needs the dc-operator role or tenant-admin of the tenant or one above it",
            actor.name
        ),
    )
}

/// Refuses a claim request its actor may not make. `tenant` is the claim's
/// tenant (resolved), for requests on an existing claim.
pub fn authorize(reg: &Registry, actor: &Actor, op: &ClaimOp, tenant: &str) -> Result<(), Refusal> {
    let internal = matches!(op, ClaimOp::SetStatus { .. } | ClaimOp::Forget { .. });
    if internal {
        return if actor.roles.contains(&Role::Provisioner) {
            Ok(())
        } else {
            Err((
                RejectKind::PermissionDenied,
                format!(
                    "{} may not report provisioning: only the control plane's provisioner does",
                    actor.name
                ),
            ))
        };
    }
    if actor.is_operator() {
        return Ok(());
    }
    if actor.administers_or_above(reg, tenant) {
        Ok(())
    } else {
        let what = match op {
            ClaimOp::Create { spec, .. } => format!("create a {} for tenant {tenant}", spec.kind()),
            ClaimOp::Delete { .. } => format!("delete a claim of tenant {tenant}"),
            _ => format!("rotate credentials of tenant {tenant}"),
        };
        Err(denied(actor, &what))
    }
}

/// Whether this actor may see the claim's credentials.
pub fn may_see_credentials(reg: &Registry, actor: &Actor, tenant: &str) -> bool {
    actor.is_operator() || actor.administers_or_above(reg, tenant)
}

/// Checks a new claim against its tenant before the quota: shape and state.
pub fn check_create(
    reg: &Registry,
    tenant: &str,
    name: &str,
    spec: &ClaimSpec,
    credentials: &Sealed,
    siblings: &[Claim],
) -> Result<(), Refusal> {
    validate_name(name).map_err(|m| (RejectKind::Invalid, m))?;
    validate_spec(spec).map_err(|m| (RejectKind::Invalid, m))?;
    validate_sealed(credentials).map_err(|m| (RejectKind::Invalid, m))?;
    if credentials.generation != 1 {
        return Err((
            RejectKind::Invalid,
            "the first credentials of a claim are generation 1".into(),
        ));
    }
    reg.get(tenant)
        .ok_or_else(|| (RejectKind::NotFound, format!("tenant {tenant} not found")))?;
    check_active(reg, tenant)?;
    if let Some(c) = siblings
        .iter()
        .find(|c| c.kind() == spec.kind() && c.name == name)
    {
        return Err((
            RejectKind::AlreadyExists,
            format!(
                "tenant {tenant} already has a {} named {name} (uid {})",
                spec.kind(),
                c.uid
            ),
        ));
    }
    Ok(())
}

/// Refuses unless the tenant and every tenant above it is active.
pub fn check_active(reg: &Registry, tenant: &str) -> Result<(), Refusal> {
    let mut at = reg.get(tenant);
    while let Some(t) = at {
        if t.state != TenantState::Active {
            let whose = if t.id == tenant {
                format!("tenant {tenant} is {}", t.state.as_str())
            } else {
                format!("tenant {} above {tenant} is {}", t.id, t.state.as_str())
            };
            return Err((
                RejectKind::Precondition,
                format!(
                    "{whose}: only an active tenant may claim resources or get new credentials"
                ),
            ));
        }
        at = t.parent.as_deref().and_then(|p| reg.get(p));
    }
    Ok(())
}

pub fn check_rotate(reg: &Registry, claim: &Claim, credentials: &Sealed) -> Result<(), Refusal> {
    check_active(reg, &claim.tenant)?;
    validate_sealed(credentials).map_err(|m| (RejectKind::Invalid, m))?;
    if claim.deletion.is_some() {
        return Err((
            RejectKind::Precondition,
            format!(
                "{} {} is being deleted; its credentials are not rotated",
                claim.kind(),
                claim.name
            ),
        ));
    }
    if credentials.generation != claim.credentials.generation + 1 {
        return Err((
            RejectKind::Precondition,
            format!(
                "credentials changed meanwhile (now generation {}); rotate again",
                claim.credentials.generation
            ),
        ));
    }
    Ok(())
}

/// What a claim request does to its claim, decided by the rules alone.
#[derive(Debug)]
pub enum Decision {
    /// Nothing changes (a deletion asked for again): the claim as it is.
    Unchanged(Claim),
    Write(Change),
}

/// A change to one claim, as the store writes it.
#[derive(Debug)]
pub struct Change {
    pub claim: Claim,
    /// The tenants' usage changes it brings (a claim made or forgotten).
    pub changeset: Option<Changeset>,
    /// The audit record's action and target, for changes people make.
    pub audit: Option<(String, String)>,
    /// The claim is forgotten: its record goes.
    pub removed: bool,
}

fn missing(uid: &str) -> Refusal {
    (RejectKind::NotFound, format!("claim {uid} not found"))
}

/// New credentials for a claim: a failed claim is tried again, and an old
/// failure is forgotten. With the audit record's action and target.
fn rotate(
    reg: &Registry,
    mut c: Claim,
    credentials: Sealed,
) -> Result<(Claim, (String, String)), Refusal> {
    check_rotate(reg, &c, &credentials)?;
    c.credentials = credentials;
    if c.status.phase == Phase::Failed {
        c.status.phase = Phase::Pending;
    }
    // An old failure says nothing about the new credentials.
    c.status.conditions.clear();
    let what = (
        format!(
            "{}.{}",
            c.kind(),
            match c.kind() {
                ClaimKind::Bucket => "rotate-key",
                ClaimKind::Database => "rotate-password",
            }
        ),
        format!("{}/{} ({})", c.tenant, c.name, c.uid),
    );
    Ok((c, what))
}

/// Decides an authorised claim request at `revision`: `existing` is the
/// claim with its uid, if any; `siblings` are the tenant's other claims
/// (read only for a create, which checks its name against them).
pub fn decide(
    reg: &Registry,
    req: ClaimRequest,
    revision: u64,
    tenant: &str,
    existing: Option<Claim>,
    siblings: &[Claim],
) -> Result<Decision, Refusal> {
    let uid = req.op.uid().to_string();
    let mut changeset = None;
    let mut audit: Option<(String, String)> = None;
    let mut removed = false;
    let claim = match req.op {
        ClaimOp::Create {
            uid,
            name,
            spec,
            deletion_policy,
            credentials,
            ..
        } => {
            if existing.is_some() {
                return Err((
                    RejectKind::AlreadyExists,
                    format!("claim uid {uid} is taken"),
                ));
            }
            check_create(reg, tenant, &name, &spec, &credentials, siblings)?;
            let cs = match reg.check_add_claim(tenant, &uid, &spec.usage()) {
                Ok(cs) => cs,
                Err(e) => {
                    return Err((e.kind(), e.to_string()));
                }
            };
            audit = Some((
                format!("{}.create", spec.kind()),
                format!("{tenant}/{name} ({uid})"),
            ));
            changeset = Some(cs);
            Claim {
                uid,
                tenant: tenant.to_string(),
                name,
                spec,
                deletion_policy,
                generation: 1,
                created_revision: revision,
                created_at_ms: req.at_ms,
                created_by: req.actor.name.clone(),
                credentials,
                deletion: None,
                status: ClaimStatus::default(),
            }
        }
        ClaimOp::Delete { purge, .. } => {
            let mut c = existing.ok_or_else(|| missing(&uid))?;
            let again = c.deletion.as_ref().is_some_and(|d| d.purge || !purge);
            if again {
                // Already asked for, with at least this much: nothing new.
                return Ok(Decision::Unchanged(c));
            }
            c.deletion = Some(Deletion {
                at_ms: req.at_ms,
                by: req.actor.name.clone(),
                purge,
            });
            c.status.phase = Phase::Deleting;
            c.status.conditions.clear();
            audit = Some((
                format!("{}.delete", c.kind()),
                format!(
                    "{}/{} ({}) policy={}{}",
                    c.tenant,
                    c.name,
                    c.uid,
                    c.deletion_policy.as_str(),
                    if purge { " purge" } else { "" }
                ),
            ));
            c
        }
        ClaimOp::Rotate { credentials, .. } => {
            let c = existing.ok_or_else(|| missing(&uid))?;
            let (c, what) = rotate(reg, c, credentials)?;
            audit = Some(what);
            c
        }
        ClaimOp::SetStatus { status, basis, .. } => {
            let mut c = existing.ok_or_else(|| missing(&uid))?;
            merge_status(&mut c, basis, status)?;
            c
        }
        ClaimOp::Forget { outcome, .. } => {
            let c = existing.ok_or_else(|| missing(&uid))?;
            if c.deletion.is_none() {
                return Err((
                    RejectKind::Precondition,
                    format!("claim {} was not asked to be deleted", c.uid),
                ));
            }
            let cs = match reg.check_remove_claim(&c.tenant, &c.uid, &c.spec.usage()) {
                Ok(cs) => cs,
                Err(e) => return Err((e.kind(), e.to_string())),
            };
            changeset = Some(cs);
            audit = Some((
                format!("{}.deleted", c.kind()),
                format!("{}/{} ({}): {outcome}", c.tenant, c.name, c.uid),
            ));
            removed = true;
            c
        }
    };
    Ok(Decision::Write(Change {
        claim,
        changeset,
        audit,
        removed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        assert!(validate_name("archive-2026").is_ok());
        for bad in ["", "-a", "a-", "Archive", "a_b", &"a".repeat(64)] {
            assert!(validate_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn usage_counts_one_resource_and_its_size() {
        let b = ClaimSpec::Bucket(BucketSpec {
            size_bytes: 10,
            ..Default::default()
        });
        assert_eq!(b.usage().buckets, 1);
        assert_eq!(b.usage().databases, 0);
        assert_eq!(b.usage().storage_bytes, 10);
        let d = ClaimSpec::Database(DatabaseSpec {
            size_bytes: 7,
            connection_limit: 5,
        });
        assert_eq!(d.usage().databases, 1);
        assert_eq!(d.usage().storage_bytes, 7);
    }

    #[test]
    fn uids_are_fixed_length_hex() {
        assert!(validate_uid("0123456789abcdef").is_ok());
        assert!(validate_uid("0123456789ABCDEF").is_err());
        assert!(validate_uid("0123").is_err());
        assert_eq!(external_name(ClaimKind::Bucket, "ab"), "ndc-ab");
        assert_eq!(external_name(ClaimKind::Database, "ab"), "ndc_ab");
    }
}
