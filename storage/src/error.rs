/// Why a driver operation failed. The message is shown in a claim's status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bucket {bucket} is not empty ({objects} object(s) or more); delete it with --purge to delete its objects too")]
    NotEmpty { bucket: String, objects: u64 },
    #[error("{product} does not support {feature}")]
    Unsupported {
        product: &'static str,
        feature: &'static str,
    },
    #[error("{what}: {reason}")]
    Backend { what: String, reason: String },
    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A failure of the backend (or of reaching it) while doing `what`.
    pub fn backend(what: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Backend {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
