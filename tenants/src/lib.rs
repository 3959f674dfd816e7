//! ndc's tenancy domain: agencies as tenants, their hierarchy, hierarchical
//! quotas and reorganisations, with no I/O.
//!
//! This crate must not depend on tokio, tonic, kube or rocksdb: it is the
//! pure core that the control plane runs inside its state machine (so every
//! rule holds under concurrent requests) and that tests exercise directly.

mod error;
mod id;
mod model;
mod registry;
mod reorg;
mod validate;

pub use error::{Error, Result};
pub use id::{validate_tenant_id, MAX_TENANT_ID_LEN};
pub use model::{Branch, Level, Quota, Resource, Tenant, TenantPatch, TenantSpec, TenantState};
pub use registry::{Changeset, Registry};
pub use reorg::{MergeTarget, Move, MoveKind, Plan, QuotaChange, Reorg};
pub use validate::{
    normalize_name, validate_code, validate_labels, validate_spec, MAX_LABELS, MAX_NAME_CHARS,
};
