//! ndc's gRPC API: the generated protobuf types and services, and a client
//! that talks to a cluster through any of its members.
//!
//! This crate must not depend on the store or on openraft: clients (the CLI,
//! the operator, the agents, the benchmarks) link it without the server.

pub mod client;
pub mod convert;
mod error;

pub use client::Client;
pub use error::{is_refusal, Error, Result};

/// The revisioned object API.
pub mod kv {
    tonic::include_proto!("ndc.kv.v1");
}

/// Cluster administration.
pub mod cluster {
    tonic::include_proto!("ndc.cluster.v1");
}

/// Node-to-node traffic (Raft messages, forwarded requests).
pub mod raft {
    tonic::include_proto!("ndc.raft.v1");
}

/// Tenants, reorganisations and the audit log.
pub mod tenants {
    tonic::include_proto!("ndc.tenants.v1");
}

/// The data centre's hosts.
pub mod inventory {
    tonic::include_proto!("ndc.inventory.v1");
}

/// Bucket and database claims.
pub mod claims {
    tonic::include_proto!("ndc.claims.v1");
}

/// The shared-service catalogue and subscriptions.
pub mod catalog {
    tonic::include_proto!("ndc.catalog.v1");
}

/// The encoded descriptors of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ndc_descriptor");

/// Metadata key a server sets on a refusal to name the leader's address.
pub const LEADER_HINT: &str = "ndc-leader";
