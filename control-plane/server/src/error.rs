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

/// The status a failed read of the store answers with: `Unavailable` while
/// a snapshot install is under way on the node (another node, or a retry,
/// answers), `OutOfRange` for a compacted revision, `Internal` otherwise.
pub(crate) fn store_status(e: ndc_store::Error) -> tonic::Status {
    match e {
        ndc_store::Error::Compacted { .. } => tonic::Status::out_of_range(e.to_string()),
        ndc_store::Error::Installing => tonic::Status::unavailable(e.to_string()),
        other => tonic::Status::internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn a_read_during_an_install_is_unavailable_not_internal() {
        assert_eq!(
            store_status(ndc_store::Error::Installing).code(),
            Code::Unavailable
        );
        let compacted = ndc_store::Error::Compacted {
            requested: 1,
            oldest: 5,
        };
        assert_eq!(store_status(compacted).code(), Code::OutOfRange);
    }
}
