//! The objects in memory, their revisions and the change history that
//! watches replay.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::fields;
use crate::query::*;
use crate::{handle, now_rfc3339, status, valid_name, Kind, Simulator};

/// (plural, namespace or "", name) → object.
pub(crate) type Key = (String, String, String);

/// Changes kept for watchers that resume from a resourceVersion; older
/// ones get `410 Gone` and list again.
const WATCH_HISTORY: usize = 10_000;

/// One change, as a watcher sees it. A change whose `kind` is
/// [`COMPACTED`] is no change: it tells open watches that the history was
/// forgotten, and they end with `410 Expired`; one whose `kind` is
/// [`STOPPING`] ends them without a word (the server is stopping).
/// Changes are shared by every watcher (`Arc`), and each is serialised
/// once, by the first watcher that sends it.
#[derive(Debug)]
struct Change {
    revision: u64,
    plural: String,
    namespace: String,
    kind: &'static str,
    object: Value,
    line: std::sync::OnceLock<Bytes>,
}

impl Change {
    fn new(
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

/// What the simulator does in place of Kubernetes controllers (nothing
/// runs): a Service gets a cluster IP from 10.96.0.0/16 (an address only,
/// never a target); a Deployment or StatefulSet reports its replicas for its
/// current generation, ready at once when `ready` (otherwise none ready yet:
/// [`Simulator::ready_delay`] makes them ready later).
fn simulate_controllers(kind: &Kind, obj: &mut Value, serial: u64, ready: bool) {
    match (kind.group, kind.kind) {
        ("", "Service") if obj["spec"]["clusterIP"].is_null() && serial > 0 => {
            obj["spec"]["clusterIP"] = json!(format!(
                "10.96.{}.{}",
                (serial / 254) % 256,
                serial % 254 + 1
            ));
        }
        ("apps", "Deployment" | "StatefulSet") => {
            obj["status"] = workload_status(kind.kind, obj, ready);
        }
        _ => {}
    }
}

/// A Deployment's or StatefulSet's status for its current generation: all
/// replicas updated, and all or none of them ready. Shaped so that
/// `kubectl rollout status` waits while none are ready and then succeeds.
fn workload_status(kind: &str, obj: &Value, ready: bool) -> Value {
    let replicas = obj["spec"]["replicas"].as_u64().unwrap_or(1);
    let generation = obj["metadata"]["generation"].as_u64().unwrap_or(1);
    let ready = ready || replicas == 0;
    let ready_count = if ready { replicas } else { 0 };
    let now = now_rfc3339();
    if kind == "StatefulSet" {
        let revision = format!(
            "{}-{generation:x}",
            obj["metadata"]["name"].as_str().unwrap_or_default()
        );
        return json!({
            "observedGeneration": generation, "replicas": replicas, "readyReplicas": ready_count,
            "availableReplicas": ready_count, "currentReplicas": replicas, "updatedReplicas": replicas,
            "currentRevision": revision, "updateRevision": revision,
        });
    }
    let available = |yes: bool, reason: &str| {
        json!({"type": "Available", "status": if yes { "True" } else { "False" }, "reason": reason,
               "lastUpdateTime": now, "lastTransitionTime": now})
    };
    let mut status = json!({
        "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
        "conditions": [
            if ready { available(true, "MinimumReplicasAvailable") } else { available(false, "MinimumReplicasUnavailable") },
            {"type": "Progressing", "status": "True",
             "reason": if ready { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
             "lastUpdateTime": now, "lastTransitionTime": now},
        ],
    });
    if ready {
        status["readyReplicas"] = json!(replicas);
        status["availableReplicas"] = json!(replicas);
    } else if replicas > 0 {
        status["unavailableReplicas"] = json!(replicas);
    }
    status
}

/// The kinds whose replicas the simulator reports ready.
fn is_workload(kind: &Kind) -> bool {
    matches!(
        (kind.group, kind.kind),
        ("apps", "Deployment" | "StatefulSet")
    )
}

/// Defaults the API server fills in that clients rely on: a StatefulSet's
/// rolling update strategy (`kubectl rollout status` needs it).
fn default_spec(kind: &Kind, obj: &mut Value) {
    if (kind.group, kind.kind) == ("apps", "StatefulSet")
        && obj["spec"].is_object()
        && obj["spec"]["updateStrategy"].is_null()
    {
        obj["spec"]["updateStrategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}});
    }
}

/// A simulator serving in the background.
pub struct Running {
    pub addr: SocketAddr,
    sim: Simulator,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// `http://127.0.0.1:PORT`, for a client's configuration.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The simulator being served (the same objects).
    pub fn simulator(&self) -> &Simulator {
        &self.sim
    }

    /// See [`Simulator::compact`].
    pub fn compact(&self) {
        self.sim.compact();
    }

    /// A kubeconfig for this server: see [`crate::kubeconfig`].
    pub fn kubeconfig(&self) -> String {
        crate::kubeconfig(&self.url())
    }

    /// Writes [`Running::kubeconfig`] to `path`: see [`crate::write_kubeconfig`].
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        crate::write_kubeconfig(path, &self.url())
    }

    /// Stops serving and waits until the server has.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.stop.send(());
        self.task.await.map_err(std::io::Error::other)?
    }
}

/// `409 Conflict` for a server-side apply that would change fields other
/// managers own, naming them as the API server does (kubectl prints the
/// message and suggests `--force-conflicts`).
fn apply_conflict(kind: &Kind, name: &str, conflicts: Vec<fields::Conflict>) -> Response {
    let message = if let [c] = conflicts.as_slice() {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.manager, c.field
        )
    } else {
        let mut managers: Vec<&str> = conflicts.iter().map(|c| c.manager.as_str()).collect();
        managers.sort_unstable();
        managers.dedup();
        let parts: Vec<String> = managers
            .iter()
            .map(|m| {
                let fields: Vec<String> = conflicts
                    .iter()
                    .filter(|c| c.manager == *m)
                    .map(|c| format!("- {}", c.field))
                    .collect();
                format!("conflicts with {m}:\n{}", fields.join("\n"))
            })
            .collect();
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            parts.join("\n")
        )
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", c.manager), "field": c.field}))
        .collect();
    let mut details = json!({"name": name, "kind": kind.plural, "causes": causes});
    if !kind.group.is_empty() {
        details["group"] = json!(kind.group);
    }
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "Conflict", "details": details, "code": 409});
    (StatusCode::CONFLICT, Json(body)).into_response()
}

impl Simulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// A simulator that keeps only `changes` changes for watchers (tests of
    /// `410 Gone`).
    pub fn with_history(changes: usize) -> Self {
        let sim = Self::default();
        sim.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .history_limit = changes.max(1);
        sim
    }

    /// Requests served so far, by verb and resource: `"patch
    /// objectbuckets/status" → 1200`. Verbs are those of the API server's
    /// audit log (get, list, watch, create, update, patch, delete).
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn count_request(
        &self,
        method: &axum::http::Method,
        named: bool,
        plural: &str,
        status_only: bool,
        uri: &axum::http::Uri,
    ) {
        use axum::http::Method;
        let verb = match (method, named) {
            (&Method::GET, false)
                if uri
                    .query()
                    .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1")) =>
            {
                "watch"
            }
            (&Method::GET, false) => "list",
            (&Method::GET, true) => "get",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            (&Method::DELETE, _) => "delete",
            _ => "other",
        };
        let key = format!(
            "{verb} {plural}{}",
            if status_only { "/status" } else { "" }
        );
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default() += 1;
    }

    /// Deployments and StatefulSets report their replicas ready `delay`
    /// after each new generation (created, or spec changed) instead of at
    /// once; until then none are ready. The change is an ordinary update:
    /// watchers see it.
    pub fn ready_delay(mut self, delay: std::time::Duration) -> Self {
        self.ready_delay = delay;
        self
    }

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
    fn end_watches(&self) {
        let mut o = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        o.stopping = true;
        let marker = Arc::new(Change::new(o.revision, "", "", STOPPING, Value::Null));
        let _ = o.live.send(marker);
    }

    /// After the ready delay, reports a workload's replicas ready if it is
    /// still the same object at the same generation.
    fn schedule_ready(&self, kind: &Kind, key: Key, obj: &Value) {
        let (Some(uid), Some(generation)) = (
            obj["metadata"]["uid"].as_str().map(str::to_string),
            obj["metadata"]["generation"].as_u64(),
        ) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (sim, kind, delay) = (self.clone(), *kind, self.ready_delay);
        runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            let mut o = sim.objects.lock().unwrap_or_else(|e| e.into_inner());
            let Some(current) = o.items.get(&key) else {
                return;
            };
            let meta = &current["metadata"];
            if meta["uid"].as_str() != Some(uid.as_str())
                || meta["generation"].as_u64() != Some(generation)
                || !meta["deletionTimestamp"].is_null()
            {
                return;
            }
            let mut obj = current.clone();
            obj["status"] = workload_status(kind.kind, &obj, true);
            o.revision += 1;
            obj["metadata"]["resourceVersion"] = json!(o.revision.to_string());
            o.items.insert(key.clone(), obj.clone());
            o.record("MODIFIED", &key.0, &key.1, obj);
        });
    }

    /// The HTTP router.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .fallback(handle)
            .with_state(self.clone())
    }

    /// Serves on `addr` (port 0 picks one) until `stop` resolves; returns the bound address at once.
    /// Serves on a free port of 127.0.0.1 until [`Running::stop`]: the usual
    /// way for a test to have an API server of its own.
    pub async fn start(self) -> std::io::Result<Running> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let sim = self.clone();
        let (addr, task) = self
            .serve(SocketAddr::from(([127, 0, 0, 1], 0)), async {
                let _ = stopped.await;
            })
            .await?;
        Ok(Running {
            addr,
            sim,
            stop,
            task,
        })
    }

    pub async fn serve(
        self,
        addr: SocketAddr,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let app = self.router();
        let sim = self.clone();
        let stop = async move {
            stop.await;
            // Open watches would hold a graceful stop until their timeouts.
            sim.end_watches();
        };
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        });
        Ok((bound, task))
    }

    pub(crate) fn list(&self, kind: &Kind, ns: Option<&str>, q: &Query) -> Result<Value, String> {
        let plural = kind.id();
        let labels = parse_label_selector(q.get("labelSelector"))?;
        let fields = parse_field_selector(q.get("fieldSelector"))?;
        let limit: usize = match q.get("limit") {
            Some(l) if !l.is_empty() => l
                .parse()
                .map_err(|_| format!("limit {l:?} is not a number"))?,
            _ => 0,
        };
        let after = match q.get("continue") {
            Some(c) if !c.is_empty() => Some(decode_continue(c)?),
            _ => None,
        };
        let o = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        let matching: Vec<(&Key, &Value)> = o
            .items
            .iter()
            .filter(|((p, n, _), _)| *p == plural && ns.is_none_or(|ns| n == ns))
            .filter(|(k, _)| {
                after
                    .as_ref()
                    .is_none_or(|a| (k.1.as_str(), k.2.as_str()) > (a.0.as_str(), a.1.as_str()))
            })
            .filter(|(_, v)| labels.iter().all(|r| r.matches(&v["metadata"]["labels"])))
            .filter(|(_, v)| {
                fields.iter().all(|(f, want, eq)| {
                    let got = match f.as_str() {
                        "metadata.name" => v["metadata"]["name"].as_str(),
                        _ => v["metadata"]["namespace"].as_str(),
                    }
                    .unwrap_or("");
                    (got == want) == *eq
                })
            })
            .collect();
        let take = if limit == 0 {
            matching.len()
        } else {
            limit.min(matching.len())
        };
        let mut meta = json!({"resourceVersion": o.revision.to_string()});
        if take < matching.len() {
            let (k, _) = matching[take - 1];
            meta["continue"] = json!(encode_continue(&k.1, &k.2));
            meta["remainingItemCount"] = json!(matching.len() - take);
        }
        let items: Vec<Value> = matching[..take].iter().map(|(_, v)| (*v).clone()).collect();
        let (list_kind, api_version) = (kind.kind, kind.api_version());
        Ok(
            json!({"kind": format!("{list_kind}List"), "apiVersion": api_version, "metadata": meta, "items": items}),
        )
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
        let plural = kind.id();
        // Bookmarks are objects of the watched kind with only a resourceVersion.
        let (kind_name, api_version) = (kind.kind, kind.api_version());
        let ns = ns.map(str::to_string);
        let wanted_object = move |p: &str, n: &str, object: &Value| {
            p == plural
                && ns.as_ref().is_none_or(|want| n == want)
                && labels
                    .iter()
                    .all(|r| r.matches(&object["metadata"]["labels"]))
                && fields.iter().all(|(f, want, eq)| {
                    let got = match f.as_str() {
                        "metadata.name" => object["metadata"]["name"].as_str(),
                        _ => object["metadata"]["namespace"].as_str(),
                    }
                    .unwrap_or("");
                    (got == want) == *eq
                })
        };
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
                let gone = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("too old resource version: {from} ({})", oldest.saturating_sub(1)),
                    "reason": "Expired", "code": 410});
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
                            let gone = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": format!("too old resource version: {at} ({})", c.revision),
                                "reason": "Expired", "code": 410});
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

    pub(crate) fn get(&self, key: &Key) -> Option<Value> {
        self.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .items
            .get(key)
            .cloned()
    }

    /// Creates an object; `manager` made it (`None`: its `managedFields`
    /// are already set, by a server-side apply).
    pub(crate) fn create(
        &self,
        kind: &Kind,
        ns: &str,
        mut obj: Value,
        manager: Option<&str>,
    ) -> Response {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !valid_name(&name, kind.kind == "Namespace") {
            return status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!("{} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 name must consist of lower case alphanumeric characters or '-'", kind.kind),
                kind.kind,
                &name,
            );
        }
        if let Some(m) = manager {
            // Before the server adds its own fields: nobody owns those.
            fields::update(None, &mut obj, m, &kind.api_version(), false);
        }
        let mut o = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        if kind.namespaced
            && !o
                .items
                .contains_key(&("namespaces".into(), String::new(), ns.to_string()))
        {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("namespaces \"{ns}\" not found"),
                "namespaces",
                ns,
            );
        }
        let key = (kind.id(), ns.to_string(), name.clone());
        if o.items.contains_key(&key) {
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", kind.id()),
                &kind.id(),
                &name,
            );
        }
        if kind.kind == "CustomResourceDefinition" {
            // Its kinds are served from now on (lock order: objects, then kinds).
            if let Err(m) = self.define(&obj) {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!("CustomResourceDefinition \"{name}\" is invalid: {m}"),
                    kind.kind,
                    &name,
                );
            }
            obj["status"] = json!({"conditions": [{"type": "Established", "status": "True", "reason": "InitialNamesAccepted"}]});
        }
        o.revision += 1;
        o.uids += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", o.uids);
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.kind);
        let meta = &mut obj["metadata"];
        meta["uid"] = json!(uid);
        meta["resourceVersion"] = json!(o.revision.to_string());
        meta["creationTimestamp"] = json!(now_rfc3339());
        meta["generation"] = json!(1);
        if kind.namespaced {
            meta["namespace"] = json!(ns);
        }
        if kind.plural == "namespaces" {
            obj["status"] = json!({"phase": "Active"});
        }
        default_spec(kind, &mut obj);
        let ready_now = self.ready_delay.is_zero();
        simulate_controllers(kind, &mut obj, o.uids, ready_now);
        o.items.insert(key.clone(), obj.clone());
        o.record("ADDED", &kind.id(), ns, obj.clone());
        if !ready_now && is_workload(kind) {
            self.schedule_ready(kind, key, &obj);
        }
        (StatusCode::CREATED, Json(obj)).into_response()
    }

    /// Applies a patch to an object (or its status) for `manager`.
    /// Server-side apply creates the object when it is absent, and refuses
    /// (409) to change fields other managers own unless `force`d. A patch
    /// applies to the object as it is: if it changes between reading and
    /// writing, the patch is applied again, as the API server does.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &self,
        kind: &Kind,
        ns: &str,
        name: &str,
        how: crate::patch::PatchKind,
        body: &Value,
        status_only: bool,
        manager: &str,
        force: bool,
    ) -> Response {
        use crate::patch::{json_patch, merge, PatchKind};
        let key = (kind.id(), ns.to_string(), name.to_string());
        let api_version = kind.api_version();
        let mut last = None;
        for _ in 0..8 {
            let current = self.get(&key);
            let (response, pinned) = match (how, current) {
                (PatchKind::Apply, None) if !status_only => {
                    match fields::apply(None, body, manager, force, &api_version, false) {
                        Ok(mut obj) => {
                            obj["metadata"]["name"] = json!(name);
                            (self.create(kind, ns, obj, None), true)
                        }
                        Err(c) => return apply_conflict(kind, name, c),
                    }
                }
                (_, None) => {
                    return status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("{} \"{name}\" not found", kind.id()),
                        &kind.id(),
                        name,
                    )
                }
                (how, Some(current)) => {
                    let (patched, tracked) = if how == PatchKind::Apply {
                        let applied = fields::apply(
                            Some(&current),
                            body,
                            manager,
                            force,
                            &api_version,
                            status_only,
                        );
                        match applied {
                            Ok(obj) => (obj, None),
                            Err(c) => return apply_conflict(kind, name, c),
                        }
                    } else {
                        let mut patched = current.clone();
                        let result = match how {
                            PatchKind::Json => json_patch(&mut patched, body),
                            _ => {
                                merge(&mut patched, body);
                                Ok(())
                            }
                        };
                        if let Err(m) = result {
                            return status(
                                StatusCode::UNPROCESSABLE_ENTITY,
                                "Invalid",
                                m,
                                kind.kind,
                                name,
                            );
                        }
                        (patched, Some(manager))
                    };
                    // Unless the patch names a resourceVersion of its own, it
                    // is written only over the version it was applied to.
                    let pinned = patched["metadata"]["resourceVersion"]
                        == current["metadata"]["resourceVersion"];
                    (
                        self.replace(kind, ns, name, patched, status_only, tracked),
                        pinned,
                    )
                }
            };
            if !(pinned && response.status() == StatusCode::CONFLICT) {
                return response;
            }
            last = Some(response);
        }
        last.unwrap_or_else(|| {
            status(
                StatusCode::CONFLICT,
                "Conflict",
                format!("{} \"{name}\" kept changing", kind.id()),
                &kind.id(),
                name,
            )
        })
    }

    /// Replaces an object (`status_only`: only its status, as the status
    /// subresource does; otherwise everything but its status).
    ///
    /// `manager`: who makes the change, for `managedFields` (`None`: they
    /// are already as they should be, after a server-side apply).
    pub(crate) fn replace(
        &self,
        kind: &Kind,
        ns: &str,
        name: &str,
        mut obj: Value,
        status_only: bool,
        manager: Option<&str>,
    ) -> Response {
        let mut o = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        let key = (kind.id(), ns.to_string(), name.to_string());
        let Some(current) = o.items.get(&key).cloned() else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{} \"{name}\" not found", kind.id()),
                &kind.id(),
                name,
            );
        };
        let sent = obj["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_string);
        let have = current["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if sent.as_deref().is_some_and(|s| s != have) {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", kind.id()),
                &kind.id(),
                name,
            );
        }
        if status_only {
            let mut whole = current.clone();
            whole["status"] = obj.get("status").cloned().unwrap_or(Value::Null);
            whole["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"].clone();
            // Who owns what may change through the status too (an apply, or
            // a client that sets managedFields).
            match obj["metadata"].get("managedFields") {
                Some(m) => whole["metadata"]["managedFields"] = m.clone(),
                None if manager.is_none() => {
                    if let Some(m) = whole["metadata"].as_object_mut() {
                        m.remove("managedFields");
                    }
                }
                None => {}
            }
            obj = whole;
        } else {
            if let Some(st) = current.get("status") {
                obj["status"] = st.clone();
            }
            // A cluster IP, once given, stays.
            if kind.kind == "Service" && obj["spec"]["clusterIP"].is_null() {
                obj["spec"]["clusterIP"] = current["spec"]["clusterIP"].clone();
            }
            default_spec(kind, &mut obj);
        }
        // After an apply (no manager) the ownership it computed stands.
        if let Some(m) = manager {
            fields::update(
                Some(&current),
                &mut obj,
                m,
                &kind.api_version(),
                status_only,
            );
        }
        // As the API server does: a write that changes nothing (but the
        // times in managedFields) is not stored, keeps the resourceVersion
        // and wakes no watcher.
        if unchanged(&current, &obj) {
            return (StatusCode::OK, Json(current)).into_response();
        }
        o.revision += 1;
        // As the API server does: only a spec change is a new generation.
        let changed_spec = obj.get("spec") != current.get("spec");
        let generation =
            current["metadata"]["generation"].as_u64().unwrap_or(1) + u64::from(changed_spec);
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.kind);
        let meta = &mut obj["metadata"];
        for f in ["uid", "creationTimestamp", "name", "namespace"] {
            if let Some(v) = current["metadata"].get(f) {
                meta[f] = v.clone();
            }
        }
        meta["resourceVersion"] = json!(o.revision.to_string());
        meta["generation"] = json!(generation);
        // A new generation of a workload is rolled out again.
        let ready_now = self.ready_delay.is_zero();
        let roll_out = !status_only && changed_spec && is_workload(kind);
        if roll_out {
            simulate_controllers(kind, &mut obj, 0, ready_now);
        }
        // Deletion cannot be undone by an update; clearing the last
        // finalizer of an object being deleted completes the deletion.
        let deleting = current["metadata"].get("deletionTimestamp").cloned();
        if let Some(ts) = &deleting {
            obj["metadata"]["deletionTimestamp"] = ts.clone();
        }
        o.items.insert(key.clone(), obj.clone());
        o.record("MODIFIED", &kind.id(), ns, obj.clone());
        if roll_out && !ready_now && deleting.is_none() {
            self.schedule_ready(kind, key.clone(), &obj);
        }
        let cleared = obj["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
        if deleting.is_some() && cleared {
            let after = self.delete_key(&mut o, &key);
            return (StatusCode::OK, Json(after)).into_response();
        }
        (StatusCode::OK, Json(obj)).into_response()
    }

    pub(crate) fn delete(&self, kind: &Kind, ns: &str, name: &str) -> Response {
        let mut o = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        let key = (kind.id(), ns.to_string(), name.to_string());
        if !o.items.contains_key(&key) {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{} \"{name}\" not found", kind.id()),
                &kind.id(),
                name,
            );
        }
        let obj = self.delete_key(&mut o, &key);
        (StatusCode::OK, Json(obj)).into_response()
    }

    /// Deletes one object as the API server does. An object with finalizers
    /// is only marked (`deletionTimestamp`) until they are cleared; a
    /// namespace first deletes what is in it and stays Terminating while
    /// anything remains. Removing an object removes what it owns
    /// (`ownerReferences`) and, for a CRD, its custom objects. Returns the
    /// object as it is afterwards.
    pub(crate) fn delete_key(&self, o: &mut Objects, key: &Key) -> Value {
        let Some(mut obj) = o.items.get(key).cloned() else {
            return Value::Null;
        };
        if key.0 == "namespaces" {
            let inside: Vec<Key> = o
                .items
                .keys()
                .filter(|(_, n, _)| n == &key.2)
                .cloned()
                .collect();
            for k in &inside {
                self.delete_key(o, k);
            }
            if o.items.keys().any(|(_, n, _)| n == &key.2) {
                if obj["metadata"]["deletionTimestamp"].is_null() {
                    o.revision += 1;
                    obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                    obj["metadata"]["resourceVersion"] = json!(o.revision.to_string());
                    obj["status"] = json!({"phase": "Terminating"});
                    o.items.insert(key.clone(), obj.clone());
                    o.record("MODIFIED", &key.0, &key.1, obj.clone());
                }
                return obj;
            }
        }
        let finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if finalizers {
            if obj["metadata"]["deletionTimestamp"].is_null() {
                o.revision += 1;
                obj["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
                obj["metadata"]["resourceVersion"] = json!(o.revision.to_string());
                o.items.insert(key.clone(), obj.clone());
                o.record("MODIFIED", &key.0, &key.1, obj.clone());
            }
            return obj;
        }
        o.items.remove(key);
        o.revision += 1;
        obj["metadata"]["resourceVersion"] = json!(o.revision.to_string());
        o.record("DELETED", &key.0, &key.1, obj.clone());
        // What goes with it: a CRD's objects, and whatever it owns.
        let mut dependents: Vec<Key> = Vec::new();
        if obj["kind"] == "CustomResourceDefinition" {
            if let Some(id) = self.undefine(&obj) {
                dependents.extend(o.items.keys().filter(|(p, _, _)| p == &id).cloned());
            }
        }
        if let Some(uid) = obj["metadata"]["uid"].as_str() {
            dependents.extend(
                o.items
                    .iter()
                    .filter(|(_, v)| {
                        v["metadata"]["ownerReferences"]
                            .as_array()
                            .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
                    })
                    .map(|(k, _)| k.clone()),
            );
        }
        for d in &dependents {
            self.delete_key(o, d);
        }
        // The last object of a terminating namespace lets it go.
        if !key.1.is_empty() {
            let ns_key: Key = ("namespaces".into(), String::new(), key.1.clone());
            let terminating = o
                .items
                .get(&ns_key)
                .is_some_and(|n| !n["metadata"]["deletionTimestamp"].is_null());
            if terminating && !o.items.keys().any(|(_, n, _)| n == &key.1) {
                self.delete_key(o, &ns_key);
            }
        }
        obj
    }
}

/// Whether `new` would store nothing new over `current`: equal but for the
/// server's own fields (resourceVersion, generation, kind, apiVersion) and
/// the times in managedFields.
fn unchanged(current: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("apiVersion");
            o.remove("kind");
        }
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
            m.remove("generation");
            if let Some(Value::Array(fields)) = m.get_mut("managedFields") {
                for f in fields {
                    if let Some(f) = f.as_object_mut() {
                        f.remove("time");
                    }
                }
            }
        }
        v
    };
    strip(current) == strip(new)
}
