//! The objects in memory, their revisions and the change history that
//! watches replay.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

mod delete;
mod read;
mod server;
mod watch;
mod workloads;
mod write;

pub use server::Running;
use watch::Change;

/// (plural, namespace or "", name) → object.
pub(crate) type Key = (String, String, String);

/// Changes kept for watchers that resume from a resourceVersion; older
/// ones get `410 Gone` and list again.
const WATCH_HISTORY: usize = 10_000;

pub(crate) struct Objects {
    pub(crate) history_limit: usize,
    revision: u64,
    uids: u64,
    items: BTreeMap<Key, Value>,
    history: std::collections::VecDeque<Arc<Change>>,
    live: tokio::sync::broadcast::Sender<Arc<Change>>,
    /// The server is stopping: watches end once they have sent their backlog.
    stopping: bool,
}

impl Default for Objects {
    fn default() -> Self {
        Self {
            history_limit: WATCH_HISTORY,
            revision: 0,
            uids: 0,
            items: BTreeMap::new(),
            history: Default::default(),
            live: tokio::sync::broadcast::channel(1024).0,
            stopping: false,
        }
    }
}

impl Objects {
    /// Records a change at the current revision for watchers.
    fn record(&mut self, kind: &'static str, plural: &str, namespace: &str, object: Value) {
        let change = Arc::new(Change::new(self.revision, plural, namespace, kind, object));
        if self.history.len() >= self.history_limit {
            self.history.pop_front();
        }
        self.history.push_back(change.clone());
        let _ = self.live.send(change);
    }
}
