//! A Kubernetes API simulator: an HTTP server that speaks the Kubernetes API
//! for the resources ndc touches, without kubelets, controllers or etcd. It
//! exists so that tests and `ndc up` can run the real kube-rs and kubectl
//! code paths on one machine. It is not a Kubernetes distribution.
//!
//! This crate must not depend on rocksdb or the control plane: objects live
//! in memory for the life of the process.
//!
//! So far: discovery (`/version`, `/api`, `/api/v1`, `/apis`) and core/v1
//! Namespace, ConfigMap, Secret and ServiceAccount with create, get, list,
//! replace and delete; `uid`, `resourceVersion`, `generation` and
//! `creationTimestamp`; `409 Conflict` on a stale `resourceVersion`,
//! `AlreadyExists`, `NotFound` and `Invalid`, each with a `Status` body;
//! deleting a namespace deletes what is in it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// A kind the simulator serves.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
}

/// core/v1 kinds served so far.
pub const CORE_V1: &[Kind] = &[
    Kind {
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
    },
    Kind {
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        namespaced: true,
        short_names: &["cm"],
    },
    Kind {
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        namespaced: true,
        short_names: &[],
    },
    Kind {
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        namespaced: true,
        short_names: &["sa"],
    },
];

/// (plural, namespace or "", name) → object.
type Key = (String, String, String);

/// Changes kept for watchers that resume from a resourceVersion; older
/// ones get `410 Gone` and list again.
const WATCH_HISTORY: usize = 10_000;

/// One change, as a watcher sees it.
#[derive(Clone, Debug)]
struct Change {
    revision: u64,
    plural: String,
    namespace: String,
    kind: &'static str,
    object: Value,
}

struct Objects {
    history_limit: usize,
    revision: u64,
    uids: u64,
    items: BTreeMap<Key, Value>,
    history: std::collections::VecDeque<Change>,
    live: tokio::sync::broadcast::Sender<Change>,
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
        }
    }
}

impl Objects {
    /// Records a change at the current revision for watchers.
    fn record(&mut self, kind: &'static str, plural: &str, namespace: &str, object: Value) {
        let change = Change {
            revision: self.revision,
            plural: plural.to_string(),
            namespace: namespace.to_string(),
            kind,
            object,
        };
        if self.history.len() >= self.history_limit {
            self.history.pop_front();
        }
        self.history.push_back(change.clone());
        let _ = self.live.send(change);
    }
}

/// The simulator's state, shared by the HTTP handlers.
#[derive(Clone, Default)]
pub struct Simulator {
    objects: Arc<Mutex<Objects>>,
}

/// A `Status` failure body, as the API server sends it.
fn status(code: StatusCode, reason: &str, message: String, kind: &str, name: &str) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"name": name, "kind": kind},
        "code": code.as_u16(),
    });
    (code, Json(body)).into_response()
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

type Query = std::collections::HashMap<String, String>;

/// The query string's parameters, percent-decoded.
fn query(uri: &Uri) -> Query {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (hex(b[i + 1]), hex(b[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// One requirement of an equality-based label selector.
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Absent(String),
}

impl LabelReq {
    fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => get(k) != Some(v.as_str()),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::Absent(k) => get(k).is_none(),
        }
    }
}

fn parse_label_selector(sel: Option<&String>) -> Result<Vec<LabelReq>, String> {
    let Some(sel) = sel.filter(|s| !s.is_empty()) else {
        return Ok(vec![]);
    };
    if sel.contains('(') {
        return Err(format!(
            "set-based selector {sel:?} is not supported yet; use key=value, key!=value, key or !key"
        ));
    }
    sel.split(',')
        .map(|r| {
            let r = r.trim();
            Ok(if let Some((k, v)) = r.split_once("!=") {
                LabelReq::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
                LabelReq::Eq(k.trim().into(), v.trim().into())
            } else if let Some(k) = r.strip_prefix('!') {
                LabelReq::Absent(k.trim().into())
            } else {
                LabelReq::Exists(r.into())
            })
        })
        .collect()
}

/// (field, value, equal) for metadata.name and metadata.namespace.
fn parse_field_selector(sel: Option<&String>) -> Result<Vec<(String, String, bool)>, String> {
    let Some(sel) = sel.filter(|s| !s.is_empty()) else {
        return Ok(vec![]);
    };
    sel.split(',')
        .map(|r| {
            let (f, v, eq) = if let Some((f, v)) = r.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
                (f, v, true)
            } else {
                return Err(format!(
                    "field selector {r:?} must be field=value or field!=value"
                ));
            };
            match f.trim() {
                "metadata.name" | "metadata.namespace" => {
                    Ok((f.trim().to_string(), v.trim().to_string(), eq))
                }
                other => Err(format!("field label not supported: {other}")),
            }
        })
        .collect()
}

/// A continue token: the last namespace and name returned, hex-encoded.
fn encode_continue(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(token: &str) -> Result<(String, String), String> {
    let bad = || format!("continue token {token:?} is not one this server gave");
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let s = String::from_utf8(bytes).map_err(|_| bad())?;
    let (ns, name) = s.split_once('/').ok_or_else(bad)?;
    Ok((ns.to_string(), name.to_string()))
}

/// DNS-1123 label (namespaces) or subdomain (other names).
fn valid_name(name: &str, label: bool) -> bool {
    let max = if label { 63 } else { 253 };
    !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (!label && b == b'.')
        })
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

fn find_kind(plural: &str) -> Option<&'static Kind> {
    CORE_V1.iter().find(|k| k.plural == plural)
}

fn discovery_v1() -> Value {
    let resources: Vec<Value> = CORE_V1
        .iter()
        .map(|k| {
            json!({
                "name": k.plural, "singularName": k.singular, "namespaced": k.namespaced, "kind": k.kind,
                "verbs": ["create", "delete", "get", "list", "update"],
                "shortNames": k.short_names,
            })
        })
        .collect();
    json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": resources})
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

    /// The HTTP router.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .fallback(handle)
            .with_state(self.clone())
    }

    /// Serves on `addr` (port 0 picks one) until `stop` resolves; returns the bound address at once.
    pub async fn serve(
        self,
        addr: SocketAddr,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let app = self.router();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop)
                .await
        });
        Ok((bound, task))
    }

    fn list(&self, plural: &str, ns: Option<&str>, q: &Query) -> Result<Value, String> {
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
            .filter(|((p, n, _), _)| p == plural && ns.is_none_or(|ns| n == ns))
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
        let kind = find_kind(plural).map(|k| k.kind).unwrap_or("Object");
        Ok(
            json!({"kind": format!("{kind}List"), "apiVersion": "v1", "metadata": meta, "items": items}),
        )
    }

    /// A watch: newline-separated JSON events, from `resourceVersion` on
    /// (absent or 0: the current objects first, as ADDED), with bookmarks
    /// when asked, until `timeoutSeconds` or the client goes.
    fn watch(&self, plural: &str, ns: Option<&str>, q: &Query) -> Result<Response, String> {
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
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(std::time::Duration::from_secs);
        let plural = plural.to_string();
        let ns = ns.map(str::to_string);
        let wanted = move |c: &Change| {
            c.plural == plural
                && ns.as_ref().is_none_or(|n| &c.namespace == n)
                && labels
                    .iter()
                    .all(|r| r.matches(&c.object["metadata"]["labels"]))
                && fields.iter().all(|(f, want, eq)| {
                    let got = match f.as_str() {
                        "metadata.name" => c.object["metadata"]["name"].as_str(),
                        _ => c.object["metadata"]["namespace"].as_str(),
                    }
                    .unwrap_or("");
                    (got == want) == *eq
                })
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::convert::Infallible>>(256);
        let (backlog, mut live, mut at) = {
            let o = self.objects.lock().unwrap_or_else(|e| e.into_inner());
            let live = o.live.subscribe();
            let oldest = o
                .history
                .front()
                .map(|c| c.revision)
                .unwrap_or(o.revision + 1);
            let backlog: Vec<(String, Value)> = if from == 0 {
                o.items
                    .iter()
                    .map(|((p, n, _), v)| Change {
                        revision: 0,
                        plural: p.clone(),
                        namespace: n.clone(),
                        kind: "ADDED",
                        object: v.clone(),
                    })
                    .filter(|c| wanted(c))
                    .map(|c| ("ADDED".to_string(), c.object))
                    .collect()
            } else if from + 1 < oldest && from < o.revision {
                let gone = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("too old resource version: {from} ({})", oldest.saturating_sub(1)),
                    "reason": "Expired", "code": 410});
                vec![("ERROR".to_string(), gone)]
            } else {
                o.history
                    .iter()
                    .filter(|c| c.revision > from && wanted(c))
                    .map(|c| (c.kind.to_string(), c.object.clone()))
                    .collect()
            };
            (backlog, live, o.revision.max(from))
        };
        let expired = backlog.first().is_some_and(|(t, _)| t == "ERROR");
        let line =
            |t: &str, obj: &Value| Bytes::from(format!("{}\n", json!({"type": t, "object": obj})));
        tokio::spawn(async move {
            let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
            for (t, obj) in &backlog {
                if tx.send(Ok(line(t, obj))).await.is_err() {
                    return;
                }
            }
            if expired {
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
                        let mark = json!({"kind": "Bookmark", "apiVersion": "v1", "metadata": {"resourceVersion": at.to_string()}});
                        if tx.send(Ok(line("BOOKMARK", &mark))).await.is_err() {
                            return;
                        }
                    }
                    c = live.recv() => match c {
                        Ok(c) => {
                            at = at.max(c.revision);
                            if c.revision > from && wanted(&c) && tx.send(Ok(line(c.kind, &c.object))).await.is_err() {
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

    fn get(&self, key: &Key) -> Option<Value> {
        self.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .items
            .get(key)
            .cloned()
    }

    fn create(&self, kind: &Kind, ns: &str, mut obj: Value) -> Response {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if !valid_name(&name, !kind.namespaced) {
            return status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!("{} \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 name must consist of lower case alphanumeric characters or '-'", kind.kind),
                kind.kind,
                &name,
            );
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
        let key = (kind.plural.to_string(), ns.to_string(), name.clone());
        if o.items.contains_key(&key) {
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", kind.plural),
                kind.plural,
                &name,
            );
        }
        o.revision += 1;
        o.uids += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", o.uids);
        obj["apiVersion"] = json!("v1");
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
        o.items.insert(key, obj.clone());
        o.record("ADDED", kind.plural, ns, obj.clone());
        (StatusCode::CREATED, Json(obj)).into_response()
    }

    fn replace(&self, kind: &Kind, ns: &str, name: &str, mut obj: Value) -> Response {
        let mut o = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        let key = (kind.plural.to_string(), ns.to_string(), name.to_string());
        let Some(current) = o.items.get(&key).cloned() else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{} \"{name}\" not found", kind.plural),
                kind.plural,
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
                format!("Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again", kind.plural),
                kind.plural,
                name,
            );
        }
        o.revision += 1;
        // As the API server does: only a spec change is a new generation.
        let changed_spec = obj.get("spec") != current.get("spec");
        let generation =
            current["metadata"]["generation"].as_u64().unwrap_or(1) + u64::from(changed_spec);
        obj["apiVersion"] = json!("v1");
        obj["kind"] = json!(kind.kind);
        let meta = &mut obj["metadata"];
        for f in ["uid", "creationTimestamp", "name", "namespace"] {
            if let Some(v) = current["metadata"].get(f) {
                meta[f] = v.clone();
            }
        }
        meta["resourceVersion"] = json!(o.revision.to_string());
        meta["generation"] = json!(generation);
        o.items.insert(key, obj.clone());
        o.record("MODIFIED", kind.plural, ns, obj.clone());
        (StatusCode::OK, Json(obj)).into_response()
    }

    fn delete(&self, kind: &Kind, ns: &str, name: &str) -> Response {
        let mut o = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        let key = (kind.plural.to_string(), ns.to_string(), name.to_string());
        let Some(obj) = o.items.remove(&key) else {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{} \"{name}\" not found", kind.plural),
                kind.plural,
                name,
            );
        };
        o.revision += 1;
        let mut obj = obj;
        obj["metadata"]["resourceVersion"] = json!(o.revision.to_string());
        o.record("DELETED", kind.plural, ns, obj.clone());
        if kind.plural == "namespaces" {
            // Everything in the namespace goes with it.
            let inside: Vec<Key> = o
                .items
                .keys()
                .filter(|(_, n, _)| n == name)
                .cloned()
                .collect();
            for k in inside {
                if let Some(mut v) = o.items.remove(&k) {
                    o.revision += 1;
                    v["metadata"]["resourceVersion"] = json!(o.revision.to_string());
                    o.record("DELETED", &k.0, &k.1, v);
                }
            }
        }
        (StatusCode::OK, Json(obj)).into_response()
    }
}

async fn handle(
    State(sim): State<Simulator>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    // Bodies are JSON only; clients that send protobuf are told so, and
    // client-go then falls back to JSON.
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !body.is_empty() && content_type.contains("protobuf") {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the body of type {content_type} is not supported: send application/json"),
            "",
            "",
        );
    }
    let segs: Vec<&str> = uri
        .path()
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let parse = |body: &Bytes| -> Result<Value, Box<Response>> {
        serde_json::from_slice::<Value>(body).map_err(|e| {
            Box::new(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("the body is not a JSON object: {e}"),
                "",
                "",
            ))
        })
    };
    match (method.clone(), segs.as_slice()) {
        (Method::GET, ["version"]) => Json(json!({
            "major": "1", "minor": "32", "gitVersion": "v1.32.0-ndc-sim", "platform": "linux/amd64",
        }))
        .into_response(),
        (Method::GET, ["api"]) => Json(json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        }))
        .into_response(),
        (Method::GET, ["api", "v1"]) => Json(discovery_v1()).into_response(),
        (Method::GET, ["apis"]) => {
            Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []})).into_response()
        }
        (_, ["api", "v1", rest @ ..]) => {
            // namespaces/{ns}/{plural}[/{name}] or {plural}[/{name}]
            let (ns, plural, name) = match rest {
                ["namespaces", ns, plural] => (Some(*ns), *plural, None),
                ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
                [plural] => (None, *plural, None),
                [plural, name] => (None, *plural, Some(*name)),
                _ => {
                    return status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("the server could not find {}", uri.path()),
                        "",
                        "",
                    )
                }
            };
            let Some(kind) = find_kind(plural) else {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("the server could not find the requested resource {plural}"),
                    plural,
                    "",
                );
            };
            if kind.namespaced != ns.is_some()
                && !(kind.namespaced && name.is_none() && method == Method::GET)
            {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!(
                        "{plural} are {}namespaced",
                        if kind.namespaced { "" } else { "not " }
                    ),
                    plural,
                    "",
                );
            }
            let ns_key = ns.unwrap_or("");
            match (method, name) {
                (Method::GET, None)
                    if matches!(
                        query(&uri).get("watch").map(String::as_str),
                        Some("true" | "1")
                    ) =>
                {
                    match sim.watch(plural, ns, &query(&uri)) {
                        Ok(r) => r,
                        Err(m) => status(StatusCode::BAD_REQUEST, "BadRequest", m, plural, ""),
                    }
                }
                (Method::GET, None) => match sim.list(plural, ns, &query(&uri)) {
                    Ok(v) => Json(v).into_response(),
                    Err(m) => status(StatusCode::BAD_REQUEST, "BadRequest", m, plural, ""),
                },
                (Method::POST, None) => match parse(&body) {
                    Ok(obj) => sim.create(kind, ns_key, obj),
                    Err(r) => *r,
                },
                (Method::GET, Some(n)) => {
                    match sim.get(&(plural.to_string(), ns_key.to_string(), n.to_string())) {
                        Some(v) => Json(v).into_response(),
                        None => status(
                            StatusCode::NOT_FOUND,
                            "NotFound",
                            format!("{plural} \"{n}\" not found"),
                            plural,
                            n,
                        ),
                    }
                }
                (Method::PUT, Some(n)) => match parse(&body) {
                    Ok(obj) => sim.replace(kind, ns_key, n, obj),
                    Err(r) => *r,
                },
                (Method::DELETE, Some(n)) => sim.delete(kind, ns_key, n),
                (m, _) => status(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    format!("{m} is not supported here yet"),
                    plural,
                    "",
                ),
            }
        }
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find {}", uri.path()),
            "",
            "",
        ),
    }
}
