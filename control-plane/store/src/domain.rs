//! Domain requests (tenants and their reorganisation) applied inside the
//! state machine, with authorisation and the hash-chained audit log.
//!
//! Everything here runs in apply, on every node, from the log entry alone:
//! the time of a request is the proposer's clock written into the entry, so
//! every node computes the same records and the same hashes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use ndc_tenants::{Error as TenantError, Plan, Registry, Reorg, TenantPatch, TenantSpec};

/// Key prefix of everything the control plane itself owns. The raw object
/// API refuses writes under it.
pub const RESERVED_PREFIX: &str = "/ndc/";
pub const TENANTS_PREFIX: &str = "/ndc/tenants/";
pub const AUDIT_PREFIX: &str = "/ndc/audit/";
pub const AUDIT_HEAD_KEY: &str = "/ndc/audit-head";
/// Responses to requests that carried a request id, kept for
/// [`REQUEST_RETENTION`] revisions so a retry is answered, not re-applied.
pub const REQUESTS_PREFIX: &str = "/ndc/requests/";
/// Revisions a request id is remembered for. A client retries within
/// seconds; at thousands of writes a second this is still minutes.
pub const REQUEST_RETENTION: u64 = 200_000;
/// How often (in revisions) forgotten request ids are pruned.
pub const REQUEST_PRUNE_EVERY: u64 = 4_096;
/// Ids of deleted tenants, kept so they are never given again.
pub const RETIRED_IDS_PREFIX: &str = "/ndc/retired-tenant-ids/";

pub fn tenant_key(id: &str) -> String {
    format!("{TENANTS_PREFIX}{id}")
}

pub fn audit_key(seq: u64) -> String {
    format!("{AUDIT_PREFIX}{seq:020}")
}

/// What a caller may do.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Everything.
    DcOperator,
    /// The tenant and its subtree.
    TenantAdmin(String),
    /// Shared-service owners: read tenants to onboard them.
    ServiceOwner,
    /// Read-only, plus the audit log.
    Auditor,
    /// A host's agent: registers its host and reports heartbeats.
    NodeAgent,
    /// The control plane's own provisioner, reporting what it did outside.
    /// Never granted by a token: servers use it for their own requests.
    Provisioner,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, String> {
        match s {
            "dc-operator" => Ok(Role::DcOperator),
            "service-owner" => Ok(Role::ServiceOwner),
            "auditor" => Ok(Role::Auditor),
            "node-agent" => Ok(Role::NodeAgent),
            other => match other.strip_prefix("tenant-admin:") {
                Some(id) if !id.is_empty() => Ok(Role::TenantAdmin(id.to_string())),
                _ => Err(format!(
                    "unknown role {other:?}: use dc-operator, tenant-admin:<tenant id>, service-owner, auditor or node-agent"
                )),
            },
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::DcOperator => f.write_str("dc-operator"),
            Role::TenantAdmin(id) => write!(f, "tenant-admin:{id}"),
            Role::ServiceOwner => f.write_str("service-owner"),
            Role::Auditor => f.write_str("auditor"),
            Role::NodeAgent => f.write_str("node-agent"),
            Role::Provisioner => f.write_str("provisioner"),
        }
    }
}

/// Who makes a request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub roles: Vec<Role>,
}

impl Actor {
    pub fn is_operator(&self) -> bool {
        self.roles.contains(&Role::DcOperator)
    }

    /// Whether this actor may read every tenant, whatever the registry holds.
    pub fn reads_every_tenant(&self) -> bool {
        self.roles
            .iter()
            .any(|r| matches!(r, Role::DcOperator | Role::Auditor | Role::ServiceOwner))
    }

    /// Whether this actor may read `tenant` (resolved id).
    pub fn can_read(&self, reg: &Registry, tenant: &str) -> bool {
        self.reads_every_tenant()
            || self.roles.iter().any(|r| match r {
                // By current id only: an old id (after a merge or rename) grants nothing.
                Role::TenantAdmin(x) => reg
                    .get(x)
                    .is_some_and(|x| reg.is_ancestor_or_self(&x.id, tenant)),
                _ => false,
            })
    }

    /// The tenants this actor administers, resolved.
    fn administers<'a>(&'a self, reg: &'a Registry) -> impl Iterator<Item = String> + 'a {
        self.roles.iter().filter_map(move |r| match r {
            Role::TenantAdmin(x) => reg.get(x).map(|t| t.id.clone()),
            _ => None,
        })
    }

    /// Whether `tenant` is strictly below a tenant this actor administers.
    fn below_own(&self, reg: &Registry, tenant: &str) -> bool {
        self.administers(reg)
            .any(|x| x != tenant && reg.is_ancestor_or_self(&x, tenant))
    }

    fn at_or_below_own(&self, reg: &Registry, tenant: &str) -> bool {
        self.administers(reg)
            .any(|x| reg.is_ancestor_or_self(&x, tenant))
    }
}

/// A change to the domain, as proposed to the log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DomainRequest {
    pub actor: Actor,
    /// The decision that authorises the change, e.g. "QĐ 123/QĐ-TTg".
    pub decision: Option<String>,
    /// The proposer's clock, milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub op: DomainOp,
    /// For a reorganisation: the digest of the plan the caller was shown.
    /// If the plan made at apply time differs, nothing is applied.
    pub expected_plan: Option<String>,
}

/// A digest of a plan, so a caller can say "apply what I was shown".
pub fn plan_digest(plan: &Plan) -> String {
    let bytes = serde_json::to_vec(plan).unwrap_or_default();
    hex::encode(Sha256::digest(&bytes))
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum DomainOp {
    CreateTenant(TenantSpec),
    UpdateTenant { id: String, patch: TenantPatch },
    DeleteTenant { id: String },
    Reorganise(Reorg),
}

impl DomainOp {
    pub fn action(&self) -> &'static str {
        match self {
            DomainOp::CreateTenant(_) => "tenant.create",
            DomainOp::UpdateTenant { .. } => "tenant.update",
            DomainOp::DeleteTenant { .. } => "tenant.delete",
            DomainOp::Reorganise(Reorg::Merge { .. }) => "tenant.merge",
            DomainOp::Reorganise(Reorg::Reparent { .. }) => "tenant.reparent",
            DomainOp::Reorganise(Reorg::Rename { .. }) => "tenant.rename",
        }
    }

    pub fn target(&self) -> String {
        match self {
            DomainOp::CreateTenant(s) => s.id.clone(),
            DomainOp::UpdateTenant { id, .. } | DomainOp::DeleteTenant { id } => id.clone(),
            DomainOp::Reorganise(Reorg::Merge { sources, into }) => {
                let to = match into {
                    ndc_tenants::MergeTarget::Existing(id) => id.clone(),
                    ndc_tenants::MergeTarget::New(s) => s.id.clone(),
                };
                format!("{} -> {to}", sources.join(","))
            }
            DomainOp::Reorganise(Reorg::Reparent { tenant, parent }) => {
                format!("{tenant} -> {parent}")
            }
            DomainOp::Reorganise(Reorg::Rename { from, to }) => format!("{from} -> {to}"),
        }
    }
}

/// How a domain request was refused; maps to a gRPC code at the edge.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectKind {
    NotFound,
    AlreadyExists,
    Invalid,
    Precondition,
    PermissionDenied,
}

pub fn reject_kind(e: &TenantError) -> RejectKind {
    use TenantError::*;
    match e {
        NotFound { .. } => RejectKind::NotFound,
        AlreadyExists { .. }
        | AliasTaken { .. }
        | CodeTaken { .. }
        | ClaimExists { .. }
        | IdRetired { .. } => RejectKind::AlreadyExists,
        EmptyId
        | IdTooLong { .. }
        | IdBadChar { .. }
        | IdBadEdge { .. }
        | NameEmpty
        | NameTooLong { .. }
        | NameControl { .. }
        | NameBidiControl { .. }
        | CodeMissing { .. }
        | CodeUnexpected { .. }
        | CodeFormat { .. }
        | SecurityLevel { .. }
        | LabelKey { .. }
        | LabelValue { .. }
        | TooManyLabels { .. }
        | ParentMissing { .. }
        | ParentWrongLevel { .. }
        | MergeEmpty
        | MergeDuplicate { .. }
        | MergeIntoSelf { .. }
        | MergeLevel { .. }
        | MergeTargetQuota
        | SameParent { .. }
        | RenameSame { .. }
        | UseCurrentId { .. } => RejectKind::Invalid,
        _ => RejectKind::Precondition,
    }
}

/// Refuses a request its actor may not make. Runs in apply, against the
/// hierarchy as it is at that point in the log.
pub fn authorize(reg: &Registry, actor: &Actor, op: &DomainOp) -> Result<(), String> {
    if actor.is_operator() {
        return Ok(());
    }
    let who = format!(
        "{} ({})",
        actor.name,
        actor
            .roles
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let resolved = |id: &str| {
        reg.resolve(id)
            .map(|t| t.id.clone())
            .unwrap_or_else(|| id.to_string())
    };
    match op {
        DomainOp::CreateTenant(spec) => {
            let parent = spec.parent.as_deref().map(resolved);
            match parent {
                Some(p) if actor.at_or_below_own(reg, &p) => Ok(()),
                _ => Err(format!(
                    "{who} may not create tenant {} there: a tenant-admin creates tenants only under its own tenant",
                    spec.id
                )),
            }
        }
        DomainOp::UpdateTenant { id, patch } => {
            let id = resolved(id);
            let own_cosmetic = patch.quota.is_none()
                && patch.state.is_none()
                && patch.deletion_protection.is_none()
                && patch.security_level.is_none();
            if actor.below_own(reg, &id) || (own_cosmetic && actor.at_or_below_own(reg, &id)) {
                Ok(())
            } else {
                Err(format!(
                    "{who} may not change tenant {id}: a tenant-admin changes tenants below its own, and only the name and labels of its own"
                ))
            }
        }
        DomainOp::DeleteTenant { id } => {
            let id = resolved(id);
            if actor.below_own(reg, &id) {
                Ok(())
            } else {
                Err(format!(
                    "{who} may not delete tenant {id}: only tenants below its own"
                ))
            }
        }
        DomainOp::Reorganise(_) => Err(format!(
            "{who} may not reorganise tenants: that needs the dc-operator role"
        )),
    }
}

/// Plans a request's changes (nothing is changed).
pub fn plan(
    reg: &Registry,
    op: &DomainOp,
) -> Result<(ndc_tenants::Changeset, Option<Plan>), TenantError> {
    match op {
        DomainOp::CreateTenant(spec) => Ok((reg.check_create(spec.clone())?, None)),
        DomainOp::UpdateTenant { id, patch } => Ok((reg.check_update(id, patch.clone())?, None)),
        DomainOp::DeleteTenant { id } => Ok((reg.check_delete(id)?, None)),
        DomainOp::Reorganise(r) => {
            let p = reg.plan(r)?;
            Ok((p.changeset.clone(), Some(p)))
        }
    }
}

/// One accepted change, chained to the one before by its hash.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    pub seq: u64,
    pub revision: u64,
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub decision: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// The last record's sequence number and hash.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: String,
}

/// The hash of a record: SHA-256 over its fields (not its own hash), in a
/// fixed order, each length-prefixed so no two records share an encoding.
pub fn record_hash(r: &AuditRecord) -> String {
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(&r.seq.to_be_bytes());
    field(&r.revision.to_be_bytes());
    field(&r.at_ms.to_be_bytes());
    field(r.actor.as_bytes());
    field(r.action.as_bytes());
    field(r.target.as_bytes());
    field(r.decision.as_deref().unwrap_or("").as_bytes());
    field(&[u8::from(r.decision.is_some())]);
    field(r.prev_hash.as_bytes());
    hex::encode(h.finalize())
}

/// The outcome of checking the chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    pub checked: u64,
    /// The first record found altered, missing or out of place, and why.
    pub problem: Option<(u64, String)>,
}

/// Walks the records in order and checks each hash, each link and the head.
pub fn verify_chain(records: &[(String, Vec<u8>)], head: Option<&AuditHead>) -> VerifyReport {
    let mut prev = AuditHead::default();
    let mut checked = 0;
    for (key, bytes) in records {
        let expected_seq = prev.seq + 1;
        let r: AuditRecord = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) => {
                return VerifyReport {
                    checked,
                    problem: Some((expected_seq, format!("record {key} cannot be read: {e}"))),
                }
            }
        };
        if key != &audit_key(r.seq) {
            return VerifyReport {
                checked,
                problem: Some((
                    expected_seq,
                    format!("record stored at {key} says it is number {}", r.seq),
                )),
            };
        }
        if r.seq != expected_seq {
            return VerifyReport {
                checked,
                problem: Some((
                    expected_seq,
                    format!("record {expected_seq} is missing (next found is {})", r.seq),
                )),
            };
        }
        if r.prev_hash != prev.hash {
            return VerifyReport {
                checked,
                problem: Some((
                    r.seq,
                    "its link to the previous record does not match".into(),
                )),
            };
        }
        if record_hash(&r) != r.hash {
            return VerifyReport {
                checked,
                problem: Some((
                    r.seq,
                    "its content does not match its hash: it was altered".into(),
                )),
            };
        }
        checked += 1;
        prev = AuditHead {
            seq: r.seq,
            hash: r.hash,
        };
    }
    if let Some(h) = head {
        if h.seq != prev.seq || h.hash != prev.hash {
            return VerifyReport {
                checked,
                problem: Some((
                    prev.seq + 1,
                    format!(
                        "the chain ends at record {} but the head says {}: records were removed",
                        prev.seq, h.seq
                    ),
                )),
            };
        }
    }
    VerifyReport {
        checked,
        problem: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, prev: &str) -> AuditRecord {
        let mut r = AuditRecord {
            seq,
            revision: seq * 10,
            at_ms: 1,
            actor: "op".into(),
            action: "tenant.create".into(),
            target: format!("t{seq}"),
            decision: None,
            prev_hash: prev.into(),
            hash: String::new(),
        };
        r.hash = record_hash(&r);
        r
    }

    fn chain(n: u64) -> (Vec<(String, Vec<u8>)>, AuditHead) {
        let mut out = Vec::new();
        let mut prev = String::new();
        for s in 1..=n {
            let r = rec(s, &prev);
            prev = r.hash.clone();
            out.push((audit_key(s), serde_json::to_vec(&r).unwrap()));
        }
        (out, AuditHead { seq: n, hash: prev })
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (records, head) = chain(5);
        assert_eq!(
            verify_chain(&records, Some(&head)),
            VerifyReport {
                checked: 5,
                problem: None
            }
        );
    }

    #[test]
    fn alterations_are_found_at_the_first_bad_record() {
        let (mut records, head) = chain(5);
        let mut r: AuditRecord = serde_json::from_slice(&records[2].1).unwrap();
        r.actor = "someone else".into();
        records[2].1 = serde_json::to_vec(&r).unwrap();
        let rep = verify_chain(&records, Some(&head));
        assert_eq!(rep.checked, 2);
        assert_eq!(rep.problem.as_ref().map(|p| p.0), Some(3));

        let (mut records, head) = chain(5);
        records.remove(1);
        assert_eq!(
            verify_chain(&records, Some(&head)).problem.map(|p| p.0),
            Some(2)
        );

        let (mut records, head) = chain(5);
        records.pop();
        assert!(verify_chain(&records, Some(&head))
            .problem
            .is_some_and(|p| p.1.contains("removed")));
    }

    #[test]
    fn an_old_id_grants_no_rights() {
        use ndc_tenants::{Branch, Level, MergeTarget, Quota, TenantSpec};
        let spec = |id: &str, level: Level, parent: Option<&str>, code: Option<&str>| TenantSpec {
            id: id.into(),
            display_name: id.into(),
            level,
            branch: Branch::State,
            parent: parent.map(Into::into),
            admin_code: code.map(Into::into),
            security_level: 3,
            labels: Default::default(),
            quota: Quota::default(),
            deletion_protection: false,
        };
        let mut reg = Registry::default();
        for s in [
            spec("vn", Level::Central, None, None),
            spec("ha-giang", Level::Province, Some("vn"), Some("02")),
            spec("tuyen-quang", Level::Province, Some("vn"), Some("08")),
        ] {
            let cs = reg.check_create(s).unwrap();
            reg.apply(&cs);
        }
        let admin = Actor {
            name: "hg".into(),
            roles: vec![Role::TenantAdmin("ha-giang".into())],
        };
        assert!(admin.can_read(&reg, "ha-giang"));
        assert!(!admin.reads_every_tenant());
        // Those who read every tenant read each one; the others none.
        for role in [Role::DcOperator, Role::Auditor, Role::ServiceOwner] {
            let a = Actor {
                name: "x".into(),
                roles: vec![Role::NodeAgent, role],
            };
            assert!(a.reads_every_tenant());
            assert!(reg.iter().all(|t| a.can_read(&reg, &t.id)));
        }
        for role in [Role::NodeAgent, Role::Provisioner] {
            let a = Actor {
                name: "x".into(),
                roles: vec![role],
            };
            assert!(!a.reads_every_tenant());
            assert!(!reg.iter().any(|t| a.can_read(&reg, &t.id)));
        }
        let plan = reg
            .plan(&Reorg::Merge {
                sources: vec!["ha-giang".into()],
                into: MergeTarget::Existing("tuyen-quang".into()),
            })
            .unwrap();
        reg.apply(&plan.changeset);
        // ha-giang now resolves to tuyen-quang, but its admin does not
        // become tuyen-quang's admin.
        assert!(!admin.can_read(&reg, "tuyen-quang"));
        let op = DomainOp::UpdateTenant {
            id: "tuyen-quang".into(),
            patch: TenantPatch::default(),
        };
        assert!(authorize(&reg, &admin, &op).is_err());
    }

    #[test]
    fn decision_none_and_empty_hash_differently() {
        let mut a = rec(1, "");
        a.decision = Some(String::new());
        assert_ne!(record_hash(&a), rec(1, "").hash);
    }
}
