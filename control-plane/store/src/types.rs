//! Raft type configuration and the commands the state machine applies.

use serde::{Deserialize, Serialize};

pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The openraft type configuration of the ndc control plane.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type StorageError = openraft::StorageError<NodeId>;

/// Largest accepted key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest accepted value, in bytes. Objects are records (tenants, claims,
/// catalogue entries), not blobs: blobs belong in object storage.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most operations in one transaction.
pub const MAX_TXN_OPS: usize = 128;

/// A change proposed to the replicated log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Every compare must hold, then every op is applied, all at one revision.
    Txn(Txn),
    /// A tenancy request, authorised and checked against the state in apply.
    Domain(Box<ndc_core::domain::DomainRequest>),
    /// A change to the hosts of the data centre.
    Inventory(ndc_core::inventory::InventoryRequest),
    /// Requests from several clients carried by one log entry, applied in
    /// order; each gets its own response. Their changes share the entry's
    /// revision.
    Batch(Vec<Command>),
    /// A command with the client's request id: applied once; a retry with
    /// the same id gets the first response back and changes nothing.
    Once {
        request_id: String,
        command: Box<Command>,
    },
    /// A bucket or database claim, or the provisioner's report on one.
    /// (New variants go last: entries are encoded by variant position.)
    Claim(Box<ndc_core::claims::ClaimRequest>),
    /// A change to the shared-service catalogue or a subscription.
    Catalog(Box<ndc_core::catalog::CatalogRequest>),
}

impl Command {
    /// Counts the requests this command carries by what they do (a batch
    /// counts each of its commands; a key-value transaction is `kv.txn`).
    pub fn count_actions(&self, counts: &mut std::collections::BTreeMap<&'static str, u64>) {
        let action = match self {
            Command::Txn(_) => "kv.txn",
            Command::Domain(r) => r.op.action(),
            Command::Inventory(r) => r.op.action(),
            Command::Claim(r) => r.op.action(),
            Command::Catalog(r) => r.op.action(),
            Command::Once { command, .. } => return command.count_actions(counts),
            Command::Batch(cmds) => {
                for c in cmds {
                    c.count_actions(counts);
                }
                return;
            }
        };
        *counts.entry(action).or_default() += 1;
    }
}

/// Longest accepted request id.
pub const MAX_REQUEST_ID: usize = 64;

/// Why a request id is refused: 8 to 64 letters, digits, '-' or '_'.
pub fn validate_request_id(id: &str) -> Result<(), String> {
    let ok = (8..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "request id {id:?} must be 8 to {MAX_REQUEST_ID} letters, digits, '-' or '_'"
        ))
    }
}

/// A multi-object transaction: all-or-nothing.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
}

/// A precondition on one object's revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    /// The object's `mod_revision` must equal this; 0 means it must not exist.
    pub revision: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// What applying an entry produced, returned to the client that proposed it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Response {
    /// A blank or membership entry: nothing for a client.
    Empty,
    /// The transaction was applied at `revision`; one result per op.
    Applied {
        revision: u64,
        results: Vec<OpResult>,
    },
    /// A domain request was applied at `revision`.
    Domain {
        revision: u64,
        changed: Vec<ndc_core::Tenant>,
        removed: Vec<String>,
        plan: Option<ndc_core::Plan>,
    },
    /// A compare or a rule failed; nothing changed.
    Rejected(Rejection),
    /// One response per command of a batch, in order.
    Batch(Vec<Response>),
    /// A claim request was applied at `revision`: the claim as it is now
    /// (as it was last, if `removed`). (New variants go last.)
    Claim {
        revision: u64,
        claim: Box<ndc_core::claims::Claim>,
        removed: bool,
    },
    /// A catalogue request was applied at `revision`.
    Catalog {
        revision: u64,
        service: Option<Box<ndc_core::catalog::Service>>,
        subscription: Option<ndc_core::catalog::Subscription>,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OpResult {
    pub key: String,
    /// The object's revision before this op (0: it did not exist).
    pub prev_revision: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// `key` is at `actual` (0: absent), the request expected `expected`.
    RevisionMismatch {
        key: String,
        expected: u64,
        actual: u64,
    },
    /// The command broke a rule checked at apply time.
    Invalid { reason: String },
    /// A domain rule or the caller's roles refused the request.
    Domain {
        kind: ndc_core::domain::RejectKind,
        message: String,
    },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::RevisionMismatch {
                key,
                expected,
                actual: 0,
            } => write!(
                f,
                "key {key:?} does not exist, but revision {expected} was expected; get it again and retry"
            ),
            Rejection::RevisionMismatch {
                key,
                expected: 0,
                actual,
            } => write!(
                f,
                "key {key:?} already exists at revision {actual}, but it was expected to be absent"
            ),
            Rejection::RevisionMismatch {
                key,
                expected,
                actual,
            } => write!(
                f,
                "key {key:?} is at revision {actual}, not {expected}: it changed since it was read; get it again and retry"
            ),
            Rejection::Invalid { reason } => f.write_str(reason),
            Rejection::Domain { message, .. } => f.write_str(message),
        }
    }
}

/// An object as the store keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StoredObject {
    pub value: Vec<u8>,
    /// Revision of the change that created it.
    pub create_revision: u64,
    /// Revision of the last change to it.
    pub mod_revision: u64,
    /// Number of changes since it was created (1 after creation).
    pub version: u64,
}

/// One change, as watchers see it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub key: String,
    pub kind: EventKind,
    /// The object after a put; for a delete, the object as it was.
    pub object: StoredObject,
    pub revision: u64,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// Why a key or value is refused before it is proposed.
pub fn validate_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("key is empty: give a non-empty key such as /tenants/ha-noi".into());
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "key is {} bytes, more than the limit of {MAX_KEY_BYTES}",
            key.len()
        ));
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return Err(format!(
            "key contains the control character U+{:04X}; keys are printable text",
            c as u32
        ));
    }
    Ok(())
}

/// Checks a transaction's shape: keys, value sizes, op count.
pub fn validate_txn(txn: &Txn) -> Result<(), String> {
    if txn.ops.is_empty() && txn.compares.is_empty() {
        return Err("transaction has no operations".into());
    }
    if txn.ops.len() > MAX_TXN_OPS {
        return Err(format!(
            "transaction has {} operations, more than the limit of {MAX_TXN_OPS}",
            txn.ops.len()
        ));
    }
    for c in &txn.compares {
        validate_key(&c.key)?;
    }
    let mut seen = std::collections::HashSet::new();
    for op in &txn.ops {
        validate_key(op.key())?;
        if op.key().starts_with(crate::keys::RESERVED_PREFIX) {
            return Err(format!(
                "key {:?} is under {}, which holds the control plane's own records; change them with the ndc tenant and audit commands",
                op.key(),
                crate::keys::RESERVED_PREFIX
            ));
        }
        if !seen.insert(op.key()) {
            return Err(format!(
                "key {:?} appears twice in one transaction",
                op.key()
            ));
        }
        if let Op::Put { value, .. } = op {
            if value.len() > MAX_VALUE_BYTES {
                return Err(format!(
                    "value for key {:?} is {} bytes, more than the limit of {MAX_VALUE_BYTES}",
                    op.key(),
                    value.len()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_counted_through_batches_and_request_ids() {
        let forget = Command::Claim(Box::new(ndc_core::claims::ClaimRequest {
            actor: ndc_core::domain::Actor {
                name: "provisioner".into(),
                roles: Vec::new(),
            },
            at_ms: 0,
            op: ndc_core::claims::ClaimOp::Forget {
                uid: "c1".into(),
                outcome: "deleted".into(),
            },
        }));
        let cmd = Command::Batch(vec![
            Command::Txn(Txn::default()),
            Command::Once {
                request_id: "r1".into(),
                command: Box::new(forget.clone()),
            },
            forget,
        ]);
        let mut counts = std::collections::BTreeMap::new();
        cmd.count_actions(&mut counts);
        assert_eq!(
            counts,
            std::collections::BTreeMap::from([("claim.forget", 2), ("kv.txn", 1)])
        );
    }

    #[test]
    fn keys() {
        assert!(validate_key("/tenants/ha-noi").is_ok());
        assert!(validate_key("/tenants/Hà Nội").is_ok());
        assert!(validate_key("").is_err());
        assert!(validate_key("a\u{0}b").is_err());
        assert!(validate_key("a\nb").is_err());
        assert!(validate_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(validate_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
    }

    #[test]
    fn txns() {
        let put = |k: &str, n: usize| Op::Put {
            key: k.into(),
            value: vec![0; n],
        };
        let ok = Txn {
            compares: vec![],
            ops: vec![put("a", MAX_VALUE_BYTES)],
        };
        assert!(validate_txn(&ok).is_ok());
        let big = Txn {
            compares: vec![],
            ops: vec![put("a", MAX_VALUE_BYTES + 1)],
        };
        assert!(validate_txn(&big).unwrap_err().contains("limit"));
        let dup = Txn {
            compares: vec![],
            ops: vec![put("a", 1), Op::Delete { key: "a".into() }],
        };
        assert!(validate_txn(&dup).unwrap_err().contains("twice"));
        assert!(validate_txn(&Txn::default()).is_err());
    }
}
