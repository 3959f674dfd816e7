//! Writes that arrive together travel in one log entry.
//!
//! openraft appends and syncs one entry at a time on the leader, so under
//! load the log, not the disk, sets the pace. Commands waiting while
//! earlier entries are in flight are gathered into one `Command::Batch`:
//! one append, one sync and one replication round for all of them. A lone
//! write is sent at once, so single-client latency does not change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ndc_store::{Command, NodeId, Raft, Response};
use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use tokio::sync::{oneshot, Semaphore};
use tonic::Status;
use tracing::Instrument;

/// Most commands in one entry; bounds the work one entry adds to apply.
const MAX_BATCH: usize = 64;
/// Most bytes of keys and values in one entry (a single larger command
/// still goes alone). With `MAX_ENTRIES_PER_MESSAGE` entries per Raft
/// message this keeps messages under the node-to-node limit.
const MAX_BATCH_BYTES: usize = 3 * 1024 * 1024;
/// Entries proposed and not yet applied at once. More lets batches overlap
/// the previous entry's replication; 4 keeps batches large under load.
const MAX_IN_FLIGHT: usize = 4;

/// How long a proposal may wait to be committed and applied. Past it the
/// outcome is unknown, and the caller is told so rather than left waiting.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Proposes one entry and waits, at most [`WRITE_TIMEOUT`], for its result;
/// a committed entry is counted in `stats`.
async fn write(raft: &Raft, cmd: Command, stats: &Stats) -> Result<Response, Outcome> {
    let mut counts = BTreeMap::new();
    cmd.count_actions(&mut counts);
    match tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(cmd)).await {
        Ok(Ok(r)) => {
            committed(stats, counts);
            Ok(r.data)
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
            Err(Outcome::NotLeader)
        }
        Ok(Err(e)) => Err(Outcome::Failed(write_error(e))),
        Err(_) => Err(Outcome::Failed(Status::deadline_exceeded(
            "the write was not committed in time; its outcome is unknown: read before retrying",
        ))),
    }
}

/// What became of a proposed command.
pub(crate) enum Outcome {
    Done(Response),
    /// This node is not the leader: the caller forwards the command.
    NotLeader,
    Failed(Status),
}

type Waiter = (Command, oneshot::Sender<Outcome>);

#[derive(Default)]
struct Queue {
    running: bool,
    waiting: Vec<Waiter>,
}

pub(crate) fn unavailable_no_leader() -> Status {
    Status::unavailable("no leader is known yet (an election may be under way); retry shortly")
}

pub(crate) fn fatal(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("this node's raft has stopped: {e}"))
}

/// Why a write (or a membership change) was refused, for the caller.
pub(crate) fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Status {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => unavailable_no_leader(),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Status::failed_precondition(format!("membership change refused: {e}"))
        }
        RaftError::Fatal(e) => fatal(e),
    }
}

/// What this node committed as leader: log entries, and the requests they
/// carried by what they do (`claim.status`, `service.register`, ...).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ProposalStats {
    pub entries: u64,
    pub requests: BTreeMap<String, u64>,
}

type Stats = Arc<Mutex<ProposalStats>>;

/// Counts one committed entry and the requests in `counts`.
fn committed(stats: &Stats, counts: BTreeMap<&'static str, u64>) {
    if let Ok(mut s) = stats.lock() {
        s.entries += 1;
        for (k, n) in counts {
            *s.requests.entry(k.to_string()).or_default() += n;
        }
    }
}

#[derive(Clone)]
pub(crate) struct Proposer {
    queue: Arc<Mutex<Queue>>,
    in_flight: Arc<Semaphore>,
    stats: Stats,
}

impl Default for Proposer {
    fn default() -> Self {
        Self {
            queue: Arc::default(),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            stats: Arc::default(),
        }
    }
}

impl Proposer {
    pub(crate) fn stats(&self) -> ProposalStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub(crate) async fn propose(&self, raft: &Raft, cmd: Command) -> Outcome {
        // Fast path: nothing waiting and a free slot, so there is nothing to
        // gather: propose from this task, without a hand-off.
        if let Ok(permit) = self.in_flight.clone().try_acquire_owned() {
            let idle = self
                .queue
                .lock()
                .map(|q| q.waiting.is_empty() && !q.running)
                .unwrap_or(false);
            if idle {
                let out = match write(raft, cmd, &self.stats).await {
                    Ok(r) => Outcome::Done(r),
                    Err(o) => o,
                };
                drop(permit);
                return out;
            }
            drop(permit);
        }
        let (tx, rx) = oneshot::channel();
        let start = match self.queue.lock() {
            Ok(mut q) => {
                q.waiting.push((cmd, tx));
                !std::mem::replace(&mut q.running, true)
            }
            Err(_) => return Outcome::Failed(Status::internal("the proposal queue is poisoned")),
        };
        if start {
            tokio::spawn(
                drive(
                    self.queue.clone(),
                    self.in_flight.clone(),
                    raft.clone(),
                    self.stats.clone(),
                )
                .instrument(tracing::debug_span!("proposer")),
            );
        }
        rx.await.unwrap_or_else(|_| {
            Outcome::Failed(Status::unavailable(
                "the node stopped while proposing; retry",
            ))
        })
    }
}

async fn drive(queue: Arc<Mutex<Queue>>, in_flight: Arc<Semaphore>, raft: Raft, stats: Stats) {
    loop {
        // Wait for a slot first: commands keep gathering meanwhile.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let batch: Vec<Waiter> = match queue.lock() {
            Ok(mut q) => {
                if q.waiting.is_empty() {
                    q.running = false;
                    return;
                }
                let taken = pick(q.waiting.iter().map(|(c, _)| c));
                let mut batch = Vec::with_capacity(taken.len());
                for (removed, at) in taken.into_iter().enumerate() {
                    batch.push(q.waiting.remove(at - removed));
                }
                batch
            }
            Err(_) => return,
        };
        let raft = raft.clone();
        let stats = stats.clone();
        tokio::spawn(
            async move {
                let _permit = permit;
                let (mut cmds, txs): (Vec<Command>, Vec<oneshot::Sender<Outcome>>) =
                    batch.into_iter().unzip();
                let single = cmds.len() == 1;
                let cmd = match cmds.pop() {
                    Some(last) if single => last,
                    Some(last) => {
                        cmds.push(last);
                        Command::Batch(cmds)
                    }
                    None => return,
                };
                let n = txs.len();
                let outcomes: Vec<Outcome> = match write(&raft, cmd, &stats).await {
                    Ok(resp) if single => vec![Outcome::Done(resp)],
                    Ok(Response::Batch(rs)) if rs.len() == n => {
                        rs.into_iter().map(Outcome::Done).collect()
                    }
                    Ok(other) => (0..n)
                        .map(|_| {
                            Outcome::Failed(Status::internal(format!(
                                "a batch was answered with {other:?}"
                            )))
                        })
                        .collect(),
                    Err(Outcome::NotLeader) => (0..n).map(|_| Outcome::NotLeader).collect(),
                    Err(Outcome::Failed(s)) => (0..n).map(|_| Outcome::Failed(s.clone())).collect(),
                    Err(Outcome::Done(_)) => (0..n)
                        .map(|_| {
                            Outcome::Failed(Status::internal("a failed write reported success"))
                        })
                        .collect(),
                };
                for (tx, o) in txs.into_iter().zip(outcomes) {
                    let _ = tx.send(o);
                }
            }
            .instrument(tracing::debug_span!("proposal")),
        );
    }
}

/// Which waiting commands (by position) travel in the next entry. The
/// oldest always goes; later ones join it unless they clash with what is
/// already in, and those that clash wait, in order, for a later entry.
/// Commands waiting together were sent concurrently, so none is owed an
/// order, and the oldest going first means none waits forever.
fn pick<'a>(waiting: impl Iterator<Item = &'a Command>) -> Vec<usize> {
    let mut taken = Vec::new();
    let mut bytes = 0;
    let mut keys = std::collections::HashSet::new();
    for (i, cmd) in waiting.enumerate() {
        if taken.len() == MAX_BATCH || keys.contains(EVERYTHING) {
            break;
        }
        let size = approx_size(cmd);
        // Changes in one entry share its revision: two commands touching
        // the same key must not, or a compare-and-swap on that revision
        // could pass over a write it never saw.
        let touched = touched_keys(cmd);
        let clashes = !taken.is_empty()
            && (bytes + size > MAX_BATCH_BYTES
                || touched.iter().any(|k| k == EVERYTHING)
                || touched.iter().any(|k| keys.contains(k)));
        if clashes {
            continue;
        }
        keys.extend(touched);
        bytes += size;
        taken.push(i);
    }
    taken
}

/// Bytes a command carries, roughly: its keys and values.
fn approx_size(cmd: &Command) -> usize {
    match cmd {
        Command::Txn(t) => {
            t.compares.iter().map(|c| c.key.len() + 8).sum::<usize>()
                + t.ops
                    .iter()
                    .map(|op| match op {
                        ndc_store::Op::Put { key, value } => key.len() + value.len(),
                        ndc_store::Op::Delete { key } => key.len(),
                    })
                    .sum::<usize>()
        }
        Command::Domain(_) => 4 * 1024,
        Command::Inventory(_) => 1024,
        Command::Claim(_) => 2048,
        Command::Catalog(_) => 2048,
        Command::Batch(cmds) => cmds.iter().map(approx_size).sum(),
        Command::Once { command, .. } => approx_size(command) + 64,
    }
}

/// Stands for every key: a command touching it shares its entry with no other.
const EVERYTHING: &str = "*";

/// The keys a command reads or writes. Domain requests may touch any
/// tenant and always the audit chain: they stand for the whole reserved
/// prefix, so one entry carries at most one of them.
fn touched_keys(cmd: &Command) -> Vec<String> {
    match cmd {
        Command::Txn(t) => t
            .compares
            .iter()
            .map(|c| c.key.as_str())
            .chain(t.ops.iter().map(|o| o.key()))
            .map(|k| {
                if k.starts_with(ndc_store::keys::RESERVED_PREFIX) {
                    ndc_store::keys::RESERVED_PREFIX.to_string()
                } else {
                    k.to_string()
                }
            })
            .collect(),
        // A reorganisation also rewrites the claims it moves: it shares its
        // entry with nothing.
        Command::Domain(d) if matches!(d.op, ndc_core::domain::DomainOp::Reorganise(_)) => {
            vec![EVERYTHING.to_string()]
        }
        Command::Domain(_) => vec![ndc_store::keys::RESERVED_PREFIX.to_string()],
        // Heartbeats touch only their host, so many share an entry; other
        // inventory changes also extend the audit chain.
        Command::Inventory(r) => {
            let mut keys: Vec<String> =
                r.op.hosts()
                    .iter()
                    .map(|h| ndc_store::keys::node_key(h))
                    .collect();
            if r.op.audited() {
                keys.push(ndc_store::keys::RESERVED_PREFIX.to_string());
            }
            keys
        }
        // Status reports touch only their claim, so many share an entry;
        // other claim changes move quota and extend the audit chain.
        Command::Claim(r) => {
            let mut keys = vec![ndc_store::keys::claim_key(r.op.uid())];
            if !matches!(r.op, ndc_core::claims::ClaimOp::SetStatus { .. }) {
                keys.push(ndc_store::keys::RESERVED_PREFIX.to_string());
            }
            keys
        }
        Command::Catalog(_) => vec![ndc_store::keys::RESERVED_PREFIX.to_string()],
        Command::Batch(cmds) => cmds.iter().flat_map(touched_keys).collect(),
        Command::Once {
            request_id,
            command,
        } => {
            let mut keys = touched_keys(command);
            keys.push(format!("{}{request_id}", ndc_store::keys::REQUESTS_PREFIX));
            keys
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndc_store::{Op, Txn};

    fn put(key: &str) -> Command {
        Command::Txn(Txn {
            compares: vec![],
            ops: vec![Op::Put {
                key: key.into(),
                value: vec![1],
            }],
        })
    }

    #[test]
    fn an_entry_takes_what_does_not_clash_and_leaves_the_rest_in_order() {
        // Two writes under the reserved prefix clash, as do two on one key.
        let waiting = [
            put("a"),
            put("/ndc/tenants/x"),
            put("b"),
            put("/ndc/tenants/y"),
            put("a"),
            put("c"),
        ];
        assert_eq!(pick(waiting.iter()), vec![0, 1, 2, 5]);
        let rest = [put("/ndc/tenants/y"), put("a")];
        assert_eq!(pick(rest.iter()), vec![0, 1]);
    }

    #[test]
    fn the_oldest_always_goes_and_the_batch_is_bounded() {
        let many: Vec<Command> = (0..MAX_BATCH + 10).map(|i| put(&format!("k{i}"))).collect();
        assert_eq!(pick(many.iter()).len(), MAX_BATCH);
        let same = [put("k"), put("k"), put("k")];
        assert_eq!(pick(same.iter()), vec![0]);
        assert!(pick(std::iter::empty()).is_empty());
    }
}
