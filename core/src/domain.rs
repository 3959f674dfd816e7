//! Domain requests (tenants and their reorganisation), who may make them
//! (roles, actors, authorisation), and the audit log's hashing and chaining
//! rules. The state machine applies them; this module decides.
//!
//! Everything here runs in apply, on every node, from the log entry alone:
//! the time of a request is the proposer's clock written into the entry, so
//! every node computes the same records and the same hashes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::RejectKind;
use crate::{Error as TenantError, Plan, Registry, Reorg, TenantPatch, TenantSpec};

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
        self.reads_every_tenant() || self.administers_or_above(reg, tenant)
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

    /// Whether this actor is the tenant-admin of `tenant` (resolved id) or
    /// of a tenant above it. By current id only: an old id (after a merge
    /// or rename) grants nothing.
    pub fn administers_or_above(&self, reg: &Registry, tenant: &str) -> bool {
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
                    crate::MergeTarget::Existing(id) => id.clone(),
                    crate::MergeTarget::New(s) => s.id.clone(),
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
                Some(p) if actor.administers_or_above(reg, &p) => Ok(()),
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
            if actor.below_own(reg, &id) || (own_cosmetic && actor.administers_or_above(reg, &id)) {
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
) -> Result<(crate::Changeset, Option<Plan>), TenantError> {
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

/// What an audit record says, before it is chained to the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub revision: u64,
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub decision: Option<String>,
}

impl AuditHead {
    /// The record that follows this head: the next number, linked to this
    /// hash, with its own hash.
    pub fn chain(&self, e: AuditEntry) -> AuditRecord {
        let mut r = AuditRecord {
            seq: self.seq + 1,
            revision: e.revision,
            at_ms: e.at_ms,
            actor: e.actor,
            action: e.action,
            target: e.target,
            decision: e.decision,
            prev_hash: self.hash.clone(),
            hash: String::new(),
        };
        r.hash = record_hash(&r);
        r
    }

    /// The head after `r`.
    pub fn of(r: &AuditRecord) -> AuditHead {
        AuditHead {
            seq: r.seq,
            hash: r.hash.clone(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, prev: &str) -> AuditRecord {
        let head = AuditHead {
            seq: seq - 1,
            hash: prev.into(),
        };
        head.chain(AuditEntry {
            revision: seq * 10,
            at_ms: 1,
            actor: "op".into(),
            action: "tenant.create".into(),
            target: format!("t{seq}"),
            decision: None,
        })
    }

    #[test]
    fn an_old_id_grants_no_rights() {
        use crate::{Branch, Level, MergeTarget, Quota, TenantSpec};
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
