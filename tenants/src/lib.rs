//! ndc's tenancy domain: the rules about agencies as tenants, with no I/O.
//!
//! This crate must not depend on tokio, tonic, kube or rocksdb: it is the
//! pure core that the control plane, the operators and the tests share.

mod error;
mod id;

pub use error::{Error, Result};
pub use id::{validate_tenant_id, MAX_TENANT_ID_LEN};
