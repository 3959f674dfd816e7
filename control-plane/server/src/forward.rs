//! What a follower hands to the leader over the node-to-node service, and
//! what comes back. A refusal carries the gRPC code so the client sees the
//! leader's answer unchanged.

use ndc_store::{Command, NodeId, Response};
use serde::{Deserialize, Serialize};
use tonic::{Code, Status};

#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum ForwardRequest {
    /// Propose a command; `from` must be a member.
    Write {
        from: NodeId,
        command: Command,
    },
    /// Confirm leadership and return the log index a linearizable read must
    /// wait for.
    ReadIndex {
        from: NodeId,
    },
    AddLearner {
        id: NodeId,
        addr: String,
    },
    Promote {
        id: NodeId,
    },
    Remove {
        id: NodeId,
    },
}

/// Sent by the leader to a node it removed.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct RetireNotice {
    pub id: NodeId,
    /// The log index of the membership change that removed it.
    pub log_index: u64,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum ForwardReply {
    Written(Response),
    ReadIndex(Option<u64>),
    Membership(MembershipView),
}

/// The membership after a change, and the log index of that change.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub(crate) struct MembershipView {
    /// (id, address, voter)
    pub members: Vec<(NodeId, String, bool)>,
    pub log_index: u64,
}

#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct Refusal {
    code: i32,
    message: String,
}

impl From<Status> for Refusal {
    fn from(s: Status) -> Self {
        Refusal {
            code: s.code() as i32,
            message: s.message().to_string(),
        }
    }
}

impl From<Refusal> for Status {
    fn from(r: Refusal) -> Self {
        Status::new(Code::from_i32(r.code), r.message)
    }
}

pub(crate) type ForwardResult = Result<ForwardReply, Refusal>;
