//! Watches: history from a revision on, then live changes, as one stream
//! per client. The object API streams raw objects; the tenant and claim
//! services stream typed events built by their own `map`.

use std::pin::Pin;

use futures::Stream;
use ndc_store::{Event, StoreReader, WatchBatch};
use tokio::sync::{broadcast, mpsc};
use tonic::Status;
use tracing::Instrument;

use crate::status;

/// Messages a watch stream may hold for a slow client before the server
/// waits for it.
const WATCH_BUFFER: usize = 256;
/// Revisions read from history in one go while a watcher catches up.
const HISTORY_PAGE: usize = 1_000;

pub(crate) type Watch<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What a watch sends for the changes of one revision: `None` when none
/// of them concerns it.
pub(crate) trait Map<T>: FnMut(u64, &[Event]) -> Result<Option<T>, Status> + Send {}
impl<T, F: FnMut(u64, &[Event]) -> Result<Option<T>, Status> + Send> Map<T> for F {}

/// Opens a watch from `start_revision` (0: from the next change). The first
/// message is `established(the revision before the first change sent)`;
/// then
/// every revision's changes go through `map`. Fails with OutOfRange when
/// the revision was compacted, and ends with OutOfRange when the node
/// installs a snapshot (list again, then watch from the listed revision).
pub(crate) fn open<T: Send + 'static>(
    reader: StoreReader,
    start_revision: u64,
    established: impl FnOnce(u64) -> T,
    map: impl Map<T> + 'static,
) -> Result<Watch<T>, Status> {
    // Subscribe before reading history so no change falls in between.
    let live = reader.subscribe();
    let (current, compacted) = reader.revisions().map_err(status::store)?;
    let start = if start_revision == 0 {
        current + 1
    } else {
        start_revision
    };
    if start <= compacted {
        return Err(status::store(ndc_store::Error::Compacted {
            requested: start,
            oldest: compacted + 1,
        }));
    }
    let first = established(start - 1);
    let (tx, rx) = mpsc::channel(WATCH_BUFFER);
    tokio::spawn(
        async move {
            if tx.send(Ok(first)).await.is_ok() {
                if let Err(status) = pump(reader, live, start, map, &tx).await {
                    let _ = tx.send(Err(status)).await;
                }
            }
        }
        .instrument(tracing::debug_span!("watch")),
    );
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

/// Typed watches see every tenant's objects: only roles that read every
/// tenant may open them.
pub(crate) fn require_reads_every_tenant(
    actor: &ndc_core::domain::Actor,
    what: &str,
) -> Result<(), Status> {
    if actor.reads_every_tenant() {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "{} may not {what}: that needs a role that reads every tenant (dc-operator, auditor or service-owner)",
            actor.name
        )))
    }
}

/// The object of a watch event, decoded.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(e: &Event) -> Result<T, Status> {
    serde_json::from_slice(&e.object.value)
        .map_err(|err| Status::internal(format!("stored object {} cannot be read: {err}", e.key)))
}

type Tx<T> = mpsc::Sender<Result<T, Status>>;

/// Sends one revision's changes, if they concern the watcher. Returns
/// false when the client has gone away.
async fn send<T>(
    tx: &Tx<T>,
    map: &mut impl Map<T>,
    revision: u64,
    events: &[Event],
) -> Result<bool, Status> {
    match map(revision, events)? {
        Some(msg) => Ok(tx.send(Ok(msg)).await.is_ok()),
        None => Ok(true),
    }
}

/// Sends history from `next` on, then live changes. Returns Ok when the
/// client has gone away.
async fn pump<T>(
    reader: StoreReader,
    mut live: broadcast::Receiver<WatchBatch>,
    mut next: u64,
    mut map: impl Map<T>,
    tx: &Tx<T>,
) -> Result<(), Status> {
    loop {
        // Catch up from history (the first time, and after lagging).
        loop {
            let page = reader
                .history(next, u64::MAX, HISTORY_PAGE)
                .map_err(status::store)?;
            let Some(last) = page.last().map(|(rev, _)| *rev) else {
                break;
            };
            for (revision, events) in page {
                if !send(tx, &mut map, revision, &events).await? {
                    return Ok(());
                }
            }
            next = last + 1;
        }
        loop {
            // A client that went away ends the watch even when nothing changes.
            let next_notice = tokio::select! {
                n = live.recv() => n,
                _ = tx.closed() => return Ok(()),
            };
            match next_notice {
                Ok(WatchBatch::Changes { revision, events }) => {
                    if revision < next {
                        continue;
                    }
                    next = revision + 1;
                    if !send(tx, &mut map, revision, &events).await? {
                        return Ok(());
                    }
                }
                Ok(WatchBatch::Reset { revision }) => {
                    return Err(Status::out_of_range(format!(
                        "this node installed a snapshot at revision {revision}; list again and watch from the listed revision"
                    )));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => {
                    return Err(Status::unavailable(
                        "the node is shutting down; watch again",
                    ));
                }
            }
        }
    }
}
