//! Linearizable reads that arrive together share one leadership check.
//!
//! Confirming leadership costs a round of heartbeats to a quorum. A read
//! that arrives while a check is running waits for the next one, which
//! starts after it arrived, so every read is still ordered after every
//! write acknowledged before it.

use std::sync::{Arc, Mutex};

use ndc_store::Raft;
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::oneshot;
use tracing::Instrument;

/// Why the leader could not give a read index.
#[derive(Debug, Clone)]
pub(crate) enum ReadIndexError {
    NotLeader,
    NoQuorum(String),
    Stopped(String),
}

/// How long a leadership check may take before the reads waiting on it
/// are told there is no quorum.
const READ_INDEX_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

type Waiter = oneshot::Sender<Result<Option<u64>, ReadIndexError>>;

#[derive(Default)]
struct Queue {
    running: bool,
    waiters: Vec<Waiter>,
}

#[derive(Default, Clone)]
pub(crate) struct ReadBatcher {
    queue: Arc<Mutex<Queue>>,
}

impl ReadBatcher {
    /// The log index up to which this leader has applied, confirmed as
    /// still leading after the call began.
    pub(crate) async fn read_index(&self, raft: &Raft) -> Result<Option<u64>, ReadIndexError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self
                .queue
                .lock()
                .map_err(|_| ReadIndexError::Stopped("read queue poisoned".into()))?;
            q.waiters.push(tx);
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            let queue = self.queue.clone();
            let raft = raft.clone();
            tokio::spawn(drive(queue, raft).instrument(tracing::debug_span!("read-index")));
        }
        rx.await
            .map_err(|_| ReadIndexError::Stopped("the read batch was dropped".into()))?
    }
}

/// Runs checks while reads are waiting; each check answers everyone who
/// was waiting when it started.
async fn drive(queue: Arc<Mutex<Queue>>, raft: Raft) {
    loop {
        let batch = match queue.lock() {
            Ok(mut q) => {
                if q.waiters.is_empty() {
                    q.running = false;
                    return;
                }
                std::mem::take(&mut q.waiters)
            }
            Err(_) => return,
        };
        let res = match tokio::time::timeout(READ_INDEX_TIMEOUT, raft.ensure_linearizable()).await {
            Err(_) => Err(ReadIndexError::NoQuorum(
                "leadership was not confirmed in time".into(),
            )),
            Ok(Ok(log_id)) => Ok(log_id.map(|l| l.index)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                Err(ReadIndexError::NotLeader)
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))) => {
                Err(ReadIndexError::NoQuorum(e.to_string()))
            }
            Ok(Err(RaftError::Fatal(e))) => Err(ReadIndexError::Stopped(e.to_string())),
        };
        for w in batch {
            let _ = w.send(res.clone());
        }
    }
}
