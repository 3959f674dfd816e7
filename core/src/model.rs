//! The tenant record and its parts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Where an agency sits in the administrative hierarchy (no district level
/// since 1 July 2025).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    Central,
    Province,
    Commune,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Central, Level::Province, Level::Commune];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Central => "central",
            Level::Province => "province",
            Level::Commune => "commune",
        }
    }

    /// The level a parent of this level must have; `None` for a top-level
    /// central body (which may also sit under another central body).
    pub fn parent_level(self) -> Option<Level> {
        match self {
            Level::Central => None,
            Level::Province => Some(Level::Central),
            Level::Commune => Some(Level::Province),
        }
    }

    /// Digits of the administrative code (Decision 19/2025/QĐ-TTg); central
    /// bodies have none.
    pub fn code_digits(self) -> Option<usize> {
        match self {
            Level::Central => None,
            Level::Province => Some(2),
            Level::Commune => Some(5),
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "central" => Ok(Level::Central),
            "province" => Ok(Level::Province),
            "commune" => Ok(Level::Commune),
            other => Err(format!(
                "unknown level {other:?}: use central, province or commune"
            )),
        }
    }
}

/// Which branch of the political system an agency belongs to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Branch {
    Party,
    State,
    NationalAssembly,
    Other,
}

impl Branch {
    pub fn as_str(self) -> &'static str {
        match self {
            Branch::Party => "party",
            Branch::State => "state",
            Branch::NationalAssembly => "national-assembly",
            Branch::Other => "other",
        }
    }
}

impl fmt::Display for Branch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Branch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "party" => Ok(Branch::Party),
            "state" => Ok(Branch::State),
            "national-assembly" => Ok(Branch::NationalAssembly),
            "other" => Ok(Branch::Other),
            other => Err(format!(
                "unknown branch {other:?}: use party, state, national-assembly or other"
            )),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TenantState {
    #[default]
    Active,
    Suspended,
    Retired,
}

impl TenantState {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Active => "active",
            TenantState::Suspended => "suspended",
            TenantState::Retired => "retired",
        }
    }
}

impl fmt::Display for TenantState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TenantState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "active" => Ok(TenantState::Active),
            "suspended" => Ok(TenantState::Suspended),
            "retired" => Ok(TenantState::Retired),
            other => Err(format!(
                "unknown state {other:?}: use active, suspended or retired"
            )),
        }
    }
}

/// The resources a quota limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    Memory,
    Storage,
    Buckets,
    Databases,
    Namespaces,
}

impl Resource {
    pub const ALL: [Resource; 6] = [
        Resource::Cpu,
        Resource::Memory,
        Resource::Storage,
        Resource::Buckets,
        Resource::Databases,
        Resource::Namespaces,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu (millicores)",
            Resource::Memory => "memory (bytes)",
            Resource::Storage => "storage (bytes)",
            Resource::Buckets => "buckets",
            Resource::Databases => "databases",
            Resource::Namespaces => "namespaces",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Amounts of every resource. Used for a tenant's quota, for what it has
/// handed to its children and for what it uses itself.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Quota {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    pub buckets: u64,
    pub databases: u64,
    pub namespaces: u64,
}

impl Quota {
    pub fn get(&self, r: Resource) -> u64 {
        match r {
            Resource::Cpu => self.cpu_millis,
            Resource::Memory => self.memory_bytes,
            Resource::Storage => self.storage_bytes,
            Resource::Buckets => self.buckets,
            Resource::Databases => self.databases,
            Resource::Namespaces => self.namespaces,
        }
    }

    fn map2(&self, other: &Quota, f: impl Fn(u64, u64) -> Option<u64>) -> Option<Quota> {
        Some(Quota {
            cpu_millis: f(self.cpu_millis, other.cpu_millis)?,
            memory_bytes: f(self.memory_bytes, other.memory_bytes)?,
            storage_bytes: f(self.storage_bytes, other.storage_bytes)?,
            buckets: f(self.buckets, other.buckets)?,
            databases: f(self.databases, other.databases)?,
            namespaces: f(self.namespaces, other.namespaces)?,
        })
    }

    /// Sum, or `None` if any resource overflows.
    pub fn checked_add(&self, other: &Quota) -> Option<Quota> {
        self.map2(other, u64::checked_add)
    }

    /// Difference, or `None` if any resource would go below zero.
    pub fn checked_sub(&self, other: &Quota) -> Option<Quota> {
        self.map2(other, u64::checked_sub)
    }

    /// The first resource where `self` exceeds `limit`.
    pub fn first_excess(&self, limit: &Quota) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|r| self.get(*r) > limit.get(*r))
    }

    pub fn is_zero(&self) -> bool {
        *self == Quota::default()
    }
}

/// What a caller gives to create a tenant.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    pub id: String,
    pub display_name: String,
    pub level: Level,
    pub branch: Branch,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub admin_code: Option<String>,
    pub security_level: u8,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub quota: Quota,
    #[serde(default)]
    pub deletion_protection: bool,
}

/// What a caller may change on an existing tenant; `None` leaves it as is.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TenantPatch {
    pub display_name: Option<String>,
    pub quota: Option<Quota>,
    /// Replaces the labels when given.
    pub labels: Option<BTreeMap<String, String>>,
    pub state: Option<TenantState>,
    pub deletion_protection: Option<bool>,
    pub security_level: Option<u8>,
}

/// A tenant as the control plane keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub display_name: String,
    pub level: Level,
    pub branch: Branch,
    pub parent: Option<String>,
    pub admin_code: Option<String>,
    pub security_level: u8,
    pub labels: BTreeMap<String, String>,
    pub quota: Quota,
    pub state: TenantState,
    pub deletion_protection: bool,
    /// What it has handed to its children: the sum of their quotas.
    pub allocated: Quota,
    /// What it uses itself (its claims).
    pub used: Quota,
    /// Old ids that resolve to this tenant (renames and merges).
    pub aliases: BTreeSet<String>,
    /// Claims it owns (bucket, database, namespace claims), by id.
    pub claims: BTreeSet<String>,
    /// Shared services it subscribes to, by subscription id.
    pub subscriptions: BTreeSet<String>,
}

impl Tenant {
    /// The caller-settable part of the tenant.
    pub fn spec(&self) -> TenantSpec {
        TenantSpec {
            id: self.id.clone(),
            display_name: self.display_name.clone(),
            level: self.level,
            branch: self.branch,
            parent: self.parent.clone(),
            admin_code: self.admin_code.clone(),
            security_level: self.security_level,
            labels: self.labels.clone(),
            quota: self.quota,
            deletion_protection: self.deletion_protection,
        }
    }

    /// What it has promised: to its children plus what it uses itself.
    pub fn committed(&self) -> Option<Quota> {
        self.allocated.checked_add(&self.used)
    }

    pub(crate) fn from_spec(spec: TenantSpec) -> Tenant {
        Tenant {
            id: spec.id,
            display_name: spec.display_name,
            level: spec.level,
            branch: spec.branch,
            parent: spec.parent,
            admin_code: spec.admin_code,
            security_level: spec.security_level,
            labels: spec.labels,
            quota: spec.quota,
            state: TenantState::Active,
            deletion_protection: spec.deletion_protection,
            allocated: Quota::default(),
            used: Quota::default(),
            aliases: BTreeSet::new(),
            claims: BTreeSet::new(),
            subscriptions: BTreeSet::new(),
        }
    }
}
