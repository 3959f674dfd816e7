use serde::{Deserialize, Serialize};

use crate::model::{Level, Resource, TenantState};

/// Why a tenant request is refused. Each message says what was wrong and
/// how to fix it, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("tenant id is empty: use lowercase letters, digits and '-', e.g. ha-noi")]
    EmptyId,
    #[error(
        "tenant id {id:?} is {len} characters; the limit is {max} so derived namespace names fit"
    )]
    IdTooLong { id: String, len: usize, max: usize },
    #[error("tenant id {id:?} has {found:?} at position {pos}: only lowercase ASCII letters, digits and '-' are allowed")]
    IdBadChar { id: String, found: char, pos: usize },
    #[error("tenant id {id:?} must start and end with a letter or digit")]
    IdBadEdge { id: String },
    #[error(
        "display name is empty: give the agency's name, e.g. \"Ủy ban nhân dân thành phố Hà Nội\""
    )]
    NameEmpty,
    #[error("display name is {len} characters; the limit is {max}")]
    NameTooLong { len: usize, max: usize },
    #[error("display name contains the control character U+{code:04X}; use plain text")]
    NameControl { code: u32 },
    #[error("display name contains the invisible direction control U+{code:04X}, which can make it show as another name; remove it")]
    NameBidiControl { code: u32 },
    #[error("a {level} tenant needs an administrative code of {digits} digits (Decision 19/2025/QĐ-TTg)")]
    CodeMissing { level: Level, digits: usize },
    #[error("a central tenant has no administrative code; remove admin_code {code:?}")]
    CodeUnexpected { code: String },
    #[error("administrative code {code:?} for a {level} must be exactly {digits} digits")]
    CodeFormat {
        code: String,
        level: Level,
        digits: usize,
    },
    #[error("administrative code {code} is already used by {level} tenant {by}")]
    CodeTaken {
        code: String,
        level: Level,
        by: String,
    },
    #[error("security level {got} is out of range: use 1 to 5 (Decree 85/2016)")]
    SecurityLevel { got: u8 },
    #[error("label key {key:?} is invalid: {reason}")]
    LabelKey { key: String, reason: &'static str },
    #[error("label {key:?} has an invalid value {value:?}: {reason}")]
    LabelValue {
        key: String,
        value: String,
        reason: &'static str,
    },
    #[error("{count} labels is more than the limit of {max}")]
    TooManyLabels { count: usize, max: usize },
    #[error("tenant {id} already exists")]
    AlreadyExists { id: String },
    #[error("{id:?} is an old id of tenant {target}: pick another id")]
    AliasTaken { id: String, target: String },
    #[error(
        "{id:?} belonged to a tenant that was deleted; ids are never given again: pick another id"
    )]
    IdRetired { id: String },
    #[error("tenant {id} not found")]
    NotFound { id: String },
    #[error("a {level} tenant needs a parent of level {expected}")]
    ParentMissing { level: Level, expected: Level },
    #[error("parent {parent} not found: create it first or pick an existing parent")]
    ParentNotFound { parent: String },
    #[error(
        "parent {parent} is a {found} tenant, but a {level} tenant's parent must be {expected}"
    )]
    ParentWrongLevel {
        parent: String,
        found: Level,
        level: Level,
        expected: Level,
    },
    #[error("parent {parent} is {state}; only an active tenant can take children")]
    ParentInactive { parent: String, state: TenantState },
    #[error(
        "making {parent} the parent of {id} would create a cycle ({parent} is {id} or below it)"
    )]
    Cycle { id: String, parent: String },
    #[error("{parent} cannot hand out {requested} more {resource}: it has {available} left (quota {quota}, already committed {committed})")]
    QuotaExceedsParent {
        parent: String,
        resource: Resource,
        requested: u64,
        available: u64,
        quota: u64,
        committed: u64,
    },
    #[error("quota of {id} for {resource} cannot go below {committed}, which it has already handed to its children or uses (asked for {quota})")]
    QuotaBelowCommitted {
        id: String,
        resource: Resource,
        quota: u64,
        committed: u64,
    },
    #[error("quota arithmetic for {id} overflows: use smaller amounts")]
    QuotaOverflow { id: String },
    #[error("tenant {id} still has {count} child tenant(s): move or delete them first")]
    HasChildren { id: String, count: usize },
    #[error("tenant {id} still has {count} claim(s) or subscription(s): release them first")]
    HasClaims { id: String, count: usize },
    #[error("tenant {id} has deletion protection: turn it off first (update --deletion-protection=false)")]
    Protected { id: String },
    #[error("tenant {id} is {state}: reactivate it first")]
    NotActive { id: String, state: TenantState },
    #[error("a merge needs at least one source tenant")]
    MergeEmpty,
    #[error("tenant {id} appears twice in the merge")]
    MergeDuplicate { id: String },
    #[error("cannot merge {id} into itself")]
    MergeIntoSelf { id: String },
    #[error("cannot merge {id} ({found}) with {level} tenants: merged tenants must share a level")]
    MergeLevel {
        id: String,
        found: Level,
        level: Level,
    },
    #[error("a new merge target gets the sum of its sources' quotas; leave its quota empty")]
    MergeTargetQuota,
    #[error("{id} is already the parent of {tenant}")]
    SameParent { tenant: String, id: String },
    #[error("rename {id} to a different id")]
    RenameSame { id: String },
    #[error("{id} is an old id of {current}: use the current id {current}")]
    UseCurrentId { id: String, current: String },
    #[error("claim {claim} is already recorded for {tenant}")]
    ClaimExists { tenant: String, claim: String },
    #[error("claim {claim} not found on {tenant}")]
    ClaimNotFound { tenant: String, claim: String },
    #[error(
        "{tenant} cannot take {requested} more {resource}: {available} left of its quota {quota}"
    )]
    QuotaExceeded {
        tenant: String,
        resource: Resource,
        requested: u64,
        available: u64,
        quota: u64,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a request was refused, whatever refused it; the server maps each to
/// one gRPC code, in one place.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectKind {
    NotFound,
    AlreadyExists,
    Invalid,
    Precondition,
    PermissionDenied,
}

impl Error {
    /// The kind of refusal, named for every variant: a new variant does not
    /// compile until it is given one.
    pub fn kind(&self) -> RejectKind {
        use Error::*;
        match self {
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
            ParentNotFound { .. }
            | ParentInactive { .. }
            | Cycle { .. }
            | QuotaExceedsParent { .. }
            | QuotaBelowCommitted { .. }
            | QuotaOverflow { .. }
            | HasChildren { .. }
            | HasClaims { .. }
            | Protected { .. }
            | NotActive { .. }
            | ClaimNotFound { .. }
            | QuotaExceeded { .. } => RejectKind::Precondition,
        }
    }
}
