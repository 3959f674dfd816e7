//! Watch fan-out: the changes watchers see, the watch handler, and the
//! markers that end open watches.

use std::sync::Arc;

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::query::*;
use crate::{Kind, Simulator};

/// One change, as a watcher sees it. A change whose `kind` is
/// [`COMPACTED`] is no change: it tells open watches that the history was
/// forgotten, and they end with `410 Expired`; one whose `kind` is
/// [`STOPPING`] ends them without a word (the server is stopping).
/// Changes are shared by every watcher (`Arc`), and each is serialised
/// once, by the first watcher that sends it.
#[derive(Debug)]
pub(super) struct Change {
    revision: u64,
    plural: String,
    namespace: String,
    kind: &'static str,
    object: Value,
    line: std::sync::OnceLock<Bytes>,
}

impl Change {
    pub(super) fn new(
        revision: u64,
        plural: &str,
        namespace: &str,
        kind: &'static str,
        object: Value,
    ) -> Self {
        Change {
            revision,
            plural: plural.to_string(),
            namespace: namespace.to_string(),
            kind,
            object,
            line: std::sync::OnceLock::new(),
        }
    }

    /// The watch event line: `{"type": kind, "object": object}`.
    fn line(&self) -> Bytes {
        self.line
            .get_or_init(|| event_line(self.kind, &self.object))
            .clone()
    }
}

/// One watch event, newline-terminated.
fn event_line(kind: &str, object: &Value) -> Bytes {
    // `kind` is one of the event types (plain ASCII words).
    let mut v = format!("{{\"type\":\"{kind}\",\"object\":").into_bytes();
    if serde_json::to_writer(&mut v, object).is_err() {
        v.extend_from_slice(b"null");
    }
    v.extend_from_slice(b"}\n");
    Bytes::from(v)
}

/// The `kind` of the marker [`Simulator::compact`] sends to open watches.
const COMPACTED: &str = "COMPACTED";
/// The `kind` of the marker that ends open watches when the server stops.
const STOPPING: &str = "STOPPING";

impl Simulator {
    /// Forgets the watch history, as etcd compaction does, and ends every
    /// open watch with a `410 Expired` error event, as the API server does
    /// to a watcher it has dropped. Watching again from any resourceVersion
    /// older than the current one is then `410 Gone` too, so clients must
    /// list again. For tests of watchers and controllers.
    pub fn compact(&self) {
        let mut o = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        o.history.clear();
        let marker = Arc::new(Change::new(o.revision, "", "", COMPACTED, Value::Null));
        let _ = o.live.send(marker);
    }

    /// Ends every open watch (its client sees the stream end and may watch
    /// again), so that a graceful stop need not wait for their timeouts.
    pub(super) fn end_watches(&self) {
        let mut o = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        o.stopping = true;
        let marker = Arc::new(Change::new(o.revision, "", "", STOPPING, Value::Null));
        let _ = o.live.send(marker);
    }

    /// A watch: newline-separated JSON events, from `resourceVersion` on
    /// (absent or 0: the current objects first, as ADDED), with bookmarks
    /// when asked, until `timeoutSeconds` or the client goes.
    pub(crate) fn watch(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        q: &Query,
    ) -> Result<Response, String> {
        let WatchQuery {
            labels,
            fields,
            from,
            bookmarks,
            initial_events,
            timeout,
        } = watch_query(q)?;
        let plural = kind.id();
        // Bookmarks are objects of the watched kind with only a resourceVersion.
        let (kind_name, api_version) = (kind.kind, kind.api_version());
        let filter = Filter {
            plural,
            ns: ns.map(str::to_string),
            labels,
            fields,
        };
        let wanted_object = move |p: &str, n: &str, object: &Value| filter.wants(p, n, object);
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(256);
        let mut expired = false;
        let (backlog, mut live, mut at, stopping) = {
            let o = self.objects.lock().unwrap_or_else(|e| e.into_inner());
            let live = o.live.subscribe();
            let oldest = o
                .history
                .front()
                .map(|c| c.revision)
                .unwrap_or(o.revision + 1);
            let backlog: Vec<Bytes> = if from == 0 {
                o.items
                    .iter()
                    .filter(|((p, n, _), v)| wanted_object(p, n, v))
                    .map(|(_, v)| event_line("ADDED", v))
                    .collect()
            } else if from + 1 < oldest && from < o.revision {
                let gone = expired_status(from, oldest.saturating_sub(1));
                expired = true;
                vec![event_line("ERROR", &gone)]
            } else {
                o.history
                    .iter()
                    .filter(|c| {
                        c.revision > from && wanted_object(&c.plural, &c.namespace, &c.object)
                    })
                    .map(|c| c.line())
                    .collect()
            };
            (backlog, live, o.revision.max(from), o.stopping)
        };
        let wanted = move |c: &Change| wanted_object(&c.plural, &c.namespace, &c.object);
        let line = event_line;
        tokio::spawn(async move {
            let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
            for l in backlog {
                if tx.send(Ok(l)).await.is_err() {
                    return;
                }
            }
            if initial_events && !expired {
                let end = json!({"kind": kind_name, "apiVersion": api_version, "metadata": {
                    "resourceVersion": at.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"}}});
                if tx.send(Ok(line("BOOKMARK", &end))).await.is_err() {
                    return;
                }
            }
            if expired || stopping {
                return;
            }
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                let sleep_until = deadline.unwrap_or_else(|| {
                    tokio::time::Instant::now() + std::time::Duration::from_secs(3600)
                });
                tokio::select! {
                    _ = tokio::time::sleep_until(sleep_until) => return,
                    _ = tx.closed() => return,
                    _ = tick.tick(), if bookmarks => {
                        let mark = json!({"kind": kind_name, "apiVersion": api_version, "metadata": {"resourceVersion": at.to_string()}});
                        if tx.send(Ok(line("BOOKMARK", &mark))).await.is_err() {
                            return;
                        }
                    }
                    c = live.recv() => match c {
                        Ok(c) if c.kind == STOPPING => return,
                        Ok(c) if c.kind == COMPACTED => {
                            let gone = expired_status(at, c.revision);
                            let _ = tx.send(Ok(line("ERROR", &gone))).await;
                            return;
                        }
                        Ok(c) => {
                            at = at.max(c.revision);
                            if c.revision > from && wanted(&c) && tx.send(Ok(c.line())).await.is_err() {
                                return;
                            }
                        }
                        // Fell behind the live channel: end; the client watches again.
                        Err(_) => return,
                    }
                }
            }
        });
        let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        Ok((
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response())
    }
}

/// What a watch asks for, read from its query.
struct WatchQuery {
    labels: Vec<LabelReq>,
    fields: Vec<(String, String, bool)>,
    /// The resource version to watch from (0: the current objects first).
    from: u64,
    bookmarks: bool,
    /// A streaming list: the current objects, then a bookmark marking their end.
    initial_events: bool,
    timeout: Option<std::time::Duration>,
}

fn watch_query(q: &Query) -> Result<WatchQuery, String> {
    let labels = parse_label_selector(q.get("labelSelector"))?;
    let fields = parse_field_selector(q.get("fieldSelector"))?;
    let from: u64 = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") => 0,
        Some(v) => v
            .parse()
            .map_err(|_| format!("resourceVersion {v:?} is not a number"))?,
    };
    let bookmarks = matches!(
        q.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    // A streaming list: the current objects, then a bookmark marking their end.
    let initial_events = matches!(
        q.get("sendInitialEvents").map(String::as_str),
        Some("true" | "1")
    );
    if initial_events && from != 0 {
        return Err("sendInitialEvents requires resourceVersion \"\" or \"0\"".into());
    }
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(std::time::Duration::from_secs);
    Ok(WatchQuery {
        labels,
        fields,
        from,
        bookmarks,
        initial_events,
        timeout,
    })
}

/// The 410 a watch ends with when `from` is older than what is kept
/// (`oldest`).
fn expired_status(from: u64, oldest: u64) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {from} ({oldest})"),
        "reason": "Expired", "code": 410})
}

/// Which objects a watch sends: of its kind, in its namespace (if any),
/// matching its label and field selectors.
struct Filter {
    plural: String,
    ns: Option<String>,
    labels: Vec<LabelReq>,
    fields: Vec<(String, String, bool)>,
}

impl Filter {
    fn wants(&self, plural: &str, ns: &str, object: &Value) -> bool {
        plural == self.plural
            && self.ns.as_ref().is_none_or(|want| ns == want)
            && self
                .labels
                .iter()
                .all(|r| r.matches(&object["metadata"]["labels"]))
            && self.fields.iter().all(|(f, want, eq)| {
                let got = match f.as_str() {
                    "metadata.name" => object["metadata"]["name"].as_str(),
                    _ => object["metadata"]["namespace"].as_str(),
                }
                .unwrap_or("");
                (got == want) == *eq
            })
    }
}
