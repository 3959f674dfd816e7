//! ndc's pure core: every rule of the control plane, with no I/O.
//!
//! - at the root: agencies as tenants, their hierarchy, hierarchical quotas
//!   and reorganisations ([`Registry`], [`TenantSpec`], [`Reorg`]);
//! - [`domain`]: who may do what (roles, actors, authorisation of tenant
//!   changes), tenant requests, and the audit log's hashing rule;
//! - [`claims`]: buckets and databases, their admission against quotas and
//!   when a claim is ready;
//! - [`catalog`]: the shared-service catalogue and subscriptions;
//! - [`inventory`]: hosts, capacity and admission against it.
//!
//! This crate must not depend on tokio, tonic, kube, rocksdb, openraft or
//! any other crate of ours: it is what the control plane runs inside its
//! state machine (so every rule holds under concurrent requests), and what
//! tests exercise directly. Where objects are kept (keys, encodings) is the
//! store's business, not this crate's.

pub mod catalog;
pub mod claims;
pub mod domain;
mod error;
mod id;
pub mod inventory;
mod model;
mod registry;
mod reorg;
mod validate;

pub use error::{Error, RejectKind, Result};
pub use id::{validate_tenant_id, MAX_TENANT_ID_LEN};
pub use model::{Branch, Level, Quota, Resource, Tenant, TenantPatch, TenantSpec, TenantState};
pub use registry::{Changeset, Registry};
pub use reorg::{MergeTarget, Move, MoveKind, Plan, QuotaChange, Reorg};
pub use validate::{
    normalize_name, validate_code, validate_labels, validate_spec, MAX_LABELS, MAX_NAME_CHARS,
};
