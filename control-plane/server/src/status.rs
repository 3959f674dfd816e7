//! The one boundary where the core's and the store's errors become gRPC
//! statuses. Every conversion names every variant, so a new kind of error
//! does not compile until it is given a code here.
//!
//! | what | code |
//! |---|---|
//! | a rule refused the request ([`RejectKind`]) | by kind: NotFound, AlreadyExists, InvalidArgument, FailedPrecondition, PermissionDenied |
//! | a compare failed ([`Rejection::RevisionMismatch`]) | FailedPrecondition |
//! | a malformed command reached apply ([`Rejection::Invalid`]) | InvalidArgument |
//! | a compacted revision was asked for | OutOfRange |
//! | a snapshot install is under way on this node | Unavailable |
//! | anything else in the store | Internal |
//!
//! Clients tell a refusal from a failure with `ndc_api::is_refusal`.

use ndc_core::RejectKind;
use ndc_store::Rejection;
use tonic::Status;

/// A refusal by a rule, with its message.
pub(crate) fn refused(kind: RejectKind, message: impl Into<String>) -> Status {
    let message = message.into();
    match kind {
        RejectKind::NotFound => Status::not_found(message),
        RejectKind::AlreadyExists => Status::already_exists(message),
        RejectKind::Invalid => Status::invalid_argument(message),
        RejectKind::Precondition => Status::failed_precondition(message),
        RejectKind::PermissionDenied => Status::permission_denied(message),
    }
}

/// A tenancy rule's refusal.
pub(crate) fn core(e: &ndc_core::Error) -> Status {
    refused(e.kind(), e.to_string())
}

/// What the state machine refused (nothing changed).
pub(crate) fn rejected(r: Rejection) -> Status {
    match r {
        Rejection::Domain { kind, message } => refused(kind, message),
        r @ Rejection::RevisionMismatch { .. } => Status::failed_precondition(r.to_string()),
        r @ Rejection::Invalid { .. } => Status::invalid_argument(r.to_string()),
    }
}

/// A failed read or write of the store: `Unavailable` while a snapshot
/// install is under way on the node (another node, or a retry, answers),
/// `OutOfRange` for a compacted revision, `Internal` otherwise.
pub(crate) fn store(e: ndc_store::Error) -> Status {
    use ndc_store::Error as E;
    match e {
        E::Compacted { .. } => Status::out_of_range(e.to_string()),
        E::Installing => Status::unavailable(e.to_string()),
        E::Open { .. }
        | E::Engine(_)
        | E::Decode { .. }
        | E::Encode { .. }
        | E::SnapshotFile { .. }
        | E::Join(_) => Status::internal(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn a_read_during_an_install_is_unavailable_not_internal() {
        assert_eq!(
            store(ndc_store::Error::Installing).code(),
            Code::Unavailable
        );
        let compacted = ndc_store::Error::Compacted {
            requested: 1,
            oldest: 5,
        };
        assert_eq!(store(compacted).code(), Code::OutOfRange);
    }

    #[test]
    fn every_rejection_keeps_its_meaning() {
        let mismatch = Rejection::RevisionMismatch {
            key: "k".into(),
            expected: 1,
            actual: 2,
        };
        assert_eq!(rejected(mismatch).code(), Code::FailedPrecondition);
        let invalid = Rejection::Invalid {
            reason: "bad".into(),
        };
        assert_eq!(rejected(invalid).code(), Code::InvalidArgument);
        for (kind, code) in [
            (RejectKind::NotFound, Code::NotFound),
            (RejectKind::AlreadyExists, Code::AlreadyExists),
            (RejectKind::Invalid, Code::InvalidArgument),
            (RejectKind::Precondition, Code::FailedPrecondition),
            (RejectKind::PermissionDenied, Code::PermissionDenied),
        ] {
            let r = Rejection::Domain {
                kind,
                message: "no".into(),
            };
            let s = rejected(r);
            assert_eq!((s.code(), s.message()), (code, "no"));
        }
    }
}
