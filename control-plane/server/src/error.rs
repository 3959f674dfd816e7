use std::path::PathBuf;

/// Errors that stop a node from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] ndc_store::Error),
    #[error("raft configuration: {0}")]
    RaftConfig(#[from] openraft::ConfigError),
    #[error("raft stopped: {0}")]
    Raft(String),
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot write {path}: {source}")]
    ReadyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("joining the cluster through {via} failed: {reason}")]
    Join { via: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
