//! ndc's replicated store: the openraft log and state machine, both kept in
//! one RocksDB database.
//!
//! This crate must not depend on tonic, kube or any network code: it is the
//! storage half of the control plane, driven by openraft and read by the
//! server crate. Everything here is synchronous RocksDB work wrapped for
//! openraft's async traits; blocking calls run in `spawn_blocking`.
//!
//! Layout of the database (column families):
//! - `logs`: big-endian log index → encoded [`openraft::Entry`]
//! - `raft`: the vote, the last purged log id, the committed log id
//! - `kv`: object key → encoded [`StoredObject`]
//! - `events`: big-endian revision → encoded list of [`Event`]s (watch history)
//! - `sm`: last applied log id, membership, current and compacted revision,
//!   and the mark of a snapshot install under way
//!
//! All five share one write-ahead log, so a synced write (a log append, the
//! vote) also makes every earlier state-machine write durable.
//!
//! Beside the database: `snapshot.meta` and `snapshots/`, the current
//! snapshot as a file (see `state_machine::snapshot`).

pub mod audit;
mod codec;
mod db;
mod error;
pub mod keys;
mod log_store;
mod state_machine;
mod types;

pub use codec::{decode, encode, FORMAT_VERSION};
pub use db::{open, Store, DEFAULT_HISTORY_REVISIONS};
pub use error::{Error, Result};
pub use log_store::LogStore;
pub use state_machine::{StateMachine, StoreReader, WatchBatch};
pub use types::*;
