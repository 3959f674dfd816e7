/// Why a tenant value is refused. Each message says what to fix.
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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
