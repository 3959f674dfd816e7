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

/// Whether the cluster answered and said no: the request's content, the
/// state it met or the caller's rights refused it, so sending it again
/// unchanged gets the same answer until something else changes. Every
/// other code (Unavailable, DeadlineExceeded, Internal, ...) may pass on a
/// retry. The codes are the ones the server's error boundary gives to its
/// refusals, plus OutOfRange (a compacted revision: list again).
///
/// A refused credential (Unauthenticated) is not in this list: it is about
/// the caller, not the request.
pub fn is_refusal(s: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        s.code(),
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::AlreadyExists
            | Code::OutOfRange
            | Code::PermissionDenied
    )
}

#[cfg(test)]
mod refusal_tests {
    use super::is_refusal;
    use tonic::{Code, Status};

    #[test]
    fn refusals_are_the_requests_own_and_failures_may_pass() {
        for c in [
            Code::InvalidArgument,
            Code::FailedPrecondition,
            Code::NotFound,
            Code::AlreadyExists,
            Code::OutOfRange,
            Code::PermissionDenied,
        ] {
            assert!(is_refusal(&Status::new(c, "")), "{c:?}");
        }
        for c in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Internal,
            Code::Unknown,
            Code::Cancelled,
            Code::ResourceExhausted,
            Code::Aborted,
            Code::Unauthenticated,
        ] {
            assert!(!is_refusal(&Status::new(c, "")), "{c:?}");
        }
    }
}
