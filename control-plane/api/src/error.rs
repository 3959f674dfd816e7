/// Errors of the API client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no endpoints given: pass at least one address such as 127.0.0.1:7700")]
    NoEndpoints,
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("the token contains characters that cannot go in a header")]
    InvalidToken,
    #[error("{0}")]
    Status(#[from] tonic::Status),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
