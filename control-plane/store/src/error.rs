use std::path::PathBuf;

/// Errors of the store crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the store at {path}: {source}")]
    Open {
        path: PathBuf,
        source: rocksdb::Error,
    },
    #[error("storage engine error: {0}")]
    Engine(#[from] rocksdb::Error),
    #[error("cannot decode {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("cannot encode {what}: {reason}")]
    Encode { what: &'static str, reason: String },
    #[error("revision {requested} has been compacted (oldest watchable revision is {oldest}); list again and watch from the listed revision")]
    Compacted { requested: u64, oldest: u64 },
    #[error("snapshot file {path}: {source}")]
    SnapshotFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("this node is installing a snapshot from the leader; read from another node, or again in a moment")]
    Installing,
    #[error("blocking task failed: {0}")]
    Join(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
