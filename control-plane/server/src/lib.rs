//! An ndc control-plane node: openraft over gRPC, the object API, cluster
//! administration, health and reflection.
//!
//! This crate must not depend on kube: Kubernetes is the operator's business.
//! The store it runs on is chosen here, in [`node::start`], and nowhere else.

mod audit_service;
pub mod auth;
mod catalog_service;
mod claims_service;
mod clock;
mod cluster_service;
mod error;
mod forward;
mod inventory_service;
mod kv_service;
mod network;
mod node;
mod proposer;
pub mod provisioner;
mod raft_service;
mod read_index;
pub mod secrets;
mod start;
mod status;
mod tenant_service;
mod watch;

pub use auth::Auth;
pub use error::{Error, Result};
pub use ndc_store::DEFAULT_HISTORY_REVISIONS;
pub use proposer::ProposalStats;
pub use provisioner::{ProvisionerStats, Provisioning};
pub use secrets::SecretsKey;
pub use start::{start, NodeConfig, RunningNode};
