//! A Kubernetes API simulator: an HTTP server that speaks the Kubernetes API
//! for the resources ndc touches, without kubelets, controllers or etcd. It
//! exists so that tests and `ndc up` can run the real kube-rs and kubectl
//! code paths on one machine. It is not a Kubernetes distribution.
//!
//! This crate must not depend on rocksdb or the control plane: objects live
//! in memory for the life of the process.
//!
//! Served: discovery (`/version`, `/api`, `/apis`, each group version) and
//! the kinds in [`KINDS`] (core, apps, policy, networking, rbac,
//! coordination, events, apiextensions) and every kind a
//! CustomResourceDefinition defines, with create, get, list (equality- and
//! set-based label selectors, field selectors on name and namespace,
//! `limit`/`continue`), replace, patch (merge, JSON, strategic as merge,
//! server-side apply with field ownership, conflicts and `force`), the
//! `status` subresource, delete and watch (from a `resourceVersion`,
//! bookmarks, streaming lists, `410 Gone`); `uid`, `resourceVersion`,
//! `generation` and `creationTimestamp`; `409 Conflict` on a stale
//! `resourceVersion`, `AlreadyExists`, `NotFound` and `Invalid`, each with a
//! `Status` body; finalizers, owner-reference garbage collection; deleting
//! a namespace deletes what is in it; OpenAPI v3 documents (operations
//! only) so kubectl validates on the server, and an empty OpenAPI v2
//! document. Simulated controllers: Services get cluster IPs, Deployments
//! and StatefulSets report their replicas ready (after
//! [`Simulator::ready_delay`]). Bodies are JSON only (kubectl's typed
//! commands such as `kubectl create namespace` send protobuf: use
//! manifests).
//!
//! For tests: [`Simulator::start`] serves on a free port and hands back a
//! [`Running`] (`url()`, `write_kubeconfig()`, `compact()`, `stop()`). As a
//! process: `ndc-kube-sim --listen 127.0.0.1:0 --kubeconfig PATH`.

mod fields;
mod objects;
mod patch;
mod query;

use objects::Objects;
pub use objects::Running;

/// The context (and cluster and user) name in kubeconfigs the simulator writes.
pub const CONTEXT: &str = "ndc-kube-sim";

/// A kubeconfig (YAML) for a simulator at `server` (`http://host:port`): one
/// cluster, one user without credentials (the simulator asks for none) and
/// one context, [`CONTEXT`], made current. kubectl and kube-rs read it as is.
pub fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\npreferences: {{}}\nclusters:\n- name: {CONTEXT}\n  cluster:\n    server: \"{server}\"\nusers:\n- name: {CONTEXT}\n  user: {{}}\ncontexts:\n- name: {CONTEXT}\n  context:\n    cluster: {CONTEXT}\n    user: {CONTEXT}\ncurrent-context: {CONTEXT}\n"
    )
}

/// Writes [`kubeconfig`] for `server` to `path`, atomically (a temporary
/// file beside it, then a rename), so whoever waits for the file never
/// reads half of it.
pub fn write_kubeconfig(path: &std::path::Path, server: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, kubeconfig(server))?;
    std::fs::rename(&tmp, path)
}
use query::query;

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
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
}

impl Kind {
    /// `v1` for the core group, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The resource's name across groups: `plural` or `plural.group`.
    pub fn id(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn singular(&self) -> String {
        self.kind.to_ascii_lowercase()
    }
}

const fn k(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
) -> Kind {
    Kind {
        group,
        version,
        kind,
        plural,
        namespaced,
        short_names,
    }
}

/// Every kind served: what ndc's operators touch.
pub const KINDS: &[Kind] = &[
    k("", "v1", "Namespace", "namespaces", false, &["ns"]),
    k("", "v1", "ConfigMap", "configmaps", true, &["cm"]),
    k("", "v1", "Secret", "secrets", true, &[]),
    k("", "v1", "ServiceAccount", "serviceaccounts", true, &["sa"]),
    k("", "v1", "Service", "services", true, &["svc"]),
    k(
        "",
        "v1",
        "ResourceQuota",
        "resourcequotas",
        true,
        &["quota"],
    ),
    k("", "v1", "LimitRange", "limitranges", true, &["limits"]),
    k("", "v1", "Event", "events", true, &["ev"]),
    k("apps", "v1", "Deployment", "deployments", true, &["deploy"]),
    k("apps", "v1", "StatefulSet", "statefulsets", true, &["sts"]),
    k(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
        &["pdb"],
    ),
    k(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
        &["netpol"],
    ),
    k(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        true,
        &[],
    ),
    k(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
        &[],
    ),
    k(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
        &[],
    ),
    k(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        &[],
    ),
    k("coordination.k8s.io", "v1", "Lease", "leases", true, &[]),
    k("events.k8s.io", "v1", "Event", "events", true, &["ev"]),
    k(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
    ),
];

/// The simulator's state, shared by the HTTP handlers.
#[derive(Clone, Default)]
pub struct Simulator {
    objects: Arc<Mutex<Objects>>,
    /// Kinds defined by CustomResourceDefinitions, one per served version.
    custom: Arc<Mutex<Vec<Kind>>>,
    /// How long simulated workloads take to report their replicas ready.
    ready_delay: std::time::Duration,
    /// Requests served, by verb and resource (see [`Simulator::request_counts`]).
    requests: Arc<Mutex<std::collections::BTreeMap<String, u64>>>,
}

/// A `Status` failure body, as the API server sends it. `kind` is what
/// the details name: a resource (`plural` or `plural.group`) or a kind.
pub(crate) fn status(
    code: StatusCode,
    reason: &str,
    message: String,
    kind: &str,
    name: &str,
) -> Response {
    // A resource is named `plural` or `plural.group`; details name them apart.
    let mut details = json!({"name": name, "kind": kind});
    if let Some((plural, group)) = kind.split_once('.') {
        details = json!({"name": name, "group": group, "kind": plural});
    }
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code.as_u16(),
    });
    (code, Json(body)).into_response()
}

pub(crate) fn now_rfc3339() -> String {
    // Kubernetes times are whole seconds in UTC.
    let now = jiff::Timestamp::now().as_second();
    jiff::Timestamp::from_second(now)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// DNS-1123 label (namespaces) or subdomain (other names).
pub(crate) fn valid_name(name: &str, label: bool) -> bool {
    let max = if label { 63 } else { 253 };
    !name.is_empty()
        && name.len() <= max
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (!label && b == b'.')
        })
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

impl Simulator {
    /// Built-in kinds and those defined by CRDs.
    fn kinds(&self) -> Vec<Kind> {
        let custom = self.custom.lock().unwrap_or_else(|e| e.into_inner());
        KINDS
            .iter()
            .copied()
            .chain(custom.iter().copied())
            .collect()
    }

    pub(crate) fn find_kind(&self, group: &str, version: &str, plural: &str) -> Option<Kind> {
        self.kinds()
            .into_iter()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
    }

    /// Serves the kinds a CRD defines (one per served version), or says why not.
    pub(crate) fn define(&self, crd: &Value) -> Result<Vec<Kind>, String> {
        let spec = &crd["spec"];
        let text = |v: &Value, what: &str| -> Result<&'static str, String> {
            match v.as_str().filter(|s| !s.is_empty()) {
                // Kinds live as long as the simulator; a CRD's few names are kept for good.
                Some(s) => Ok(Box::leak(s.to_string().into_boxed_str())),
                None => Err(format!("spec.{what} is required")),
            }
        };
        let group = text(&spec["group"], "group")?;
        let plural = text(&spec["names"]["plural"], "names.plural")?;
        let kind = text(&spec["names"]["kind"], "names.kind")?;
        let namespaced = match spec["scope"].as_str() {
            Some("Namespaced") => true,
            Some("Cluster") => false,
            _ => return Err("spec.scope must be Namespaced or Cluster".into()),
        };
        let short: Vec<&'static str> = spec["names"]["shortNames"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str())
                    .map(|s| &*Box::leak(s.to_string().into_boxed_str()))
                    .collect()
            })
            .unwrap_or_default();
        let short_names: &'static [&'static str] = Box::leak(short.into_boxed_slice());
        let versions: Vec<Kind> = spec["versions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|v| v["served"].as_bool().unwrap_or(true))
                    .filter_map(|v| v["name"].as_str())
                    .map(|v| Kind {
                        group,
                        version: Box::leak(v.to_string().into_boxed_str()),
                        kind,
                        plural,
                        namespaced,
                        short_names,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if versions.is_empty() {
            return Err("spec.versions must list at least one served version".into());
        }
        let expected = format!("{plural}.{group}");
        if crd["metadata"]["name"].as_str() != Some(expected.as_str()) {
            return Err(format!(
                "metadata.name must be spec.names.plural+\".\"+spec.group: {expected}"
            ));
        }
        let mut custom = self.custom.lock().unwrap_or_else(|e| e.into_inner());
        custom.retain(|k| !(k.group == group && k.plural == plural));
        custom.extend(versions.iter().copied());
        Ok(versions)
    }

    /// Stops serving a CRD's kinds; returns their resource id.
    pub(crate) fn undefine(&self, crd: &Value) -> Option<String> {
        let group = crd["spec"]["group"].as_str()?;
        let plural = crd["spec"]["names"]["plural"].as_str()?;
        self.custom
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k| !(k.group == group && k.plural == plural));
        Some(format!("{plural}.{group}"))
    }
}

/// The resources of one group version, for discovery.
fn resource_list(kinds: &[Kind], group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = kinds
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .map(|k| {
            json!({
                "name": k.plural, "singularName": k.singular(), "namespaced": k.namespaced, "kind": k.kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                "shortNames": k.short_names,
            })
        })
        .collect();
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    (!resources.is_empty()).then(|| json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

/// `/openapi/v3`: one document per group version.
fn openapi_root(kinds: &[Kind]) -> Value {
    let mut paths = serde_json::Map::new();
    for k in kinds {
        let gv = if k.group.is_empty() {
            format!("api/{}", k.version)
        } else {
            format!("apis/{}/{}", k.group, k.version)
        };
        // The hash names the document's content: clients cache documents
        // by this URL, so it changes when a CRD changes the group version.
        let doc = openapi_gv(kinds, k.group, k.version).unwrap_or_default();
        let hash = doc
            .to_string()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        paths.insert(
            gv.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash:016X}")}),
        );
    }
    json!({"paths": paths})
}

/// The OpenAPI v3 document of one group version: the operations, with the
/// `fieldValidation` parameter so kubectl leaves validation to the server.
/// No schemas yet: the simulator does not validate bodies against them.
fn openapi_gv(kinds: &[Kind], group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for k in kinds
        .iter()
        .filter(|k| k.group == group && k.version == version)
    {
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let item = if k.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", k.plural)
        } else {
            format!("{prefix}/{}/{{name}}", k.plural)
        };
        let gvk = json!({"group": group, "version": version, "kind": k.kind});
        let op = |verb: &str| {
            json!({
                "operationId": format!("{verb}{}", k.kind),
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                               {"name": "fieldManager", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        paths.insert(item, json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
    }
    (!paths.is_empty()).then(|| {
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes (ndc simulator)", "version": "v1.32.0"},
               "paths": paths, "components": {"schemas": {}}})
    })
}

/// `/openapi/v2`: a document without definitions. kubectl falls back to it
/// for client-side validation of kinds the v3 documents do not name (a
/// custom kind whose CRD is in the same file); finding no schema there, it
/// validates nothing, as against a real cluster that does not know the kind
/// yet, and goes on to report the kind as not mapped. kubectl asks for
/// protobuf, in which an empty document is zero bytes.
fn openapi_v2(headers: &axum::http::HeaderMap) -> Response {
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("protobuf") {
        let ct = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";
        return ([(axum::http::header::CONTENT_TYPE, ct)], Vec::<u8>::new()).into_response();
    }
    Json(json!({"swagger": "2.0", "info": {"title": "Kubernetes (ndc simulator)", "version": "v1.32.0"},
                "paths": {}, "definitions": {}}))
    .into_response()
}

/// The named groups and their versions, for `/apis`.
fn group_list(kinds: &[Kind]) -> Value {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for k in kinds.iter().filter(|k| !k.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == k.group) {
            Some((_, vs)) if !vs.contains(&k.version) => vs.push(k.version),
            Some(_) => {}
            None => groups.push((k.group, vec![k.version])),
        }
    }
    let groups: Vec<Value> = groups
        .iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
            json!({"name": g, "versions": versions.clone(), "preferredVersion": versions[0].clone()})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// The answer for a path the server does not serve.
fn path_not_found(uri: &Uri) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("the server could not find {}", uri.path()),
        "",
        "",
    )
}

/// A request as the routes below need it.
struct Request<'a> {
    method: Method,
    uri: &'a Uri,
    headers: &'a axum::http::HeaderMap,
    content_type: &'a str,
    body: &'a Bytes,
}

impl Request<'_> {
    /// The body as JSON, or the answer that says it is not.
    fn json(&self) -> Result<Value, Box<Response>> {
        serde_json::from_slice::<Value>(self.body).map_err(|e| {
            Box::new(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("the body is not a JSON object: {e}"),
                "",
                "",
            ))
        })
    }

    /// Who writes, for managedFields: `fieldManager`, else the client's
    /// name from its User-Agent (`kubectl/v1.32.0 ...` is `kubectl`).
    fn manager(&self) -> String {
        query(self.uri)
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .cloned()
            .or_else(|| {
                self.headers
                    .get(axum::http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|ua| ua.split('/').next())
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "unknown".to_string())
    }
}

pub(crate) async fn handle(
    State(sim): State<Simulator>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    // Bodies are JSON only; clients that send protobuf are told so.
    // (kubectl 1.32 does not fall back: its typed commands fail, manifests work.)
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
    let req = Request {
        method,
        uri: &uri,
        headers: &headers,
        content_type,
        body: &body,
    };
    if req.method == Method::GET {
        if let Some(r) = discovery(&sim, &segs, &req) {
            return r;
        }
    }
    // /api/v1/... (core) or /apis/{group}/{version}/...
    match segs.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => resource(&sim, &req, "", version, rest),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => {
            resource(&sim, &req, group, version, rest)
        }
        _ => path_not_found(&uri),
    }
}

/// The discovery documents (versions, resource lists, OpenAPI), for a GET;
/// None for any other path.
fn discovery(sim: &Simulator, segs: &[&str], req: &Request) -> Option<Response> {
    let found = |v: Option<Value>| match v {
        Some(v) => Json(v).into_response(),
        None => path_not_found(req.uri),
    };
    Some(match segs {
        ["version"] => Json(json!({
            "major": "1", "minor": "32", "gitVersion": "v1.32.0-ndc-sim", "platform": "linux/amd64",
        }))
        .into_response(),
        ["api"] => Json(json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        }))
        .into_response(),
        ["api", "v1"] => Json(resource_list(&sim.kinds(), "", "v1")).into_response(),
        ["apis", group, version] => found(resource_list(&sim.kinds(), group, version)),
        ["apis"] => Json(group_list(&sim.kinds())).into_response(),
        ["openapi", "v2"] => openapi_v2(req.headers),
        ["openapi", "v3"] => Json(openapi_root(&sim.kinds())).into_response(),
        ["openapi", "v3", "api", version] => found(openapi_gv(&sim.kinds(), "", version)),
        ["openapi", "v3", "apis", group, version] => {
            found(openapi_gv(&sim.kinds(), group, version))
        }
        _ => return None,
    })
}

/// namespaces/{ns}/{plural}[/{name}[/status]] or {plural}[/{name}[/status]]
/// of one group and version.
fn resource(sim: &Simulator, req: &Request, group: &str, version: &str, rest: &[&str]) -> Response {
    let (ns, plural, name, status_only) = match rest {
        // A namespace's own status (not a resource inside it).
        ["namespaces", name, "status"] if group.is_empty() => {
            (None, "namespaces", Some(*name), true)
        }
        ["namespaces", ns, plural] => (Some(*ns), *plural, None, false),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), false),
        ["namespaces", ns, plural, name, "status"] => (Some(*ns), *plural, Some(*name), true),
        [plural] => (None, *plural, None, false),
        [plural, name] => (None, *plural, Some(*name), false),
        [plural, name, "status"] => (None, *plural, Some(*name), true),
        _ => return path_not_found(req.uri),
    };
    let Some(kind) = sim.find_kind(group, version, plural) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource {plural}"),
            plural,
            "",
        );
    };
    if kind.namespaced != ns.is_some()
        && !(kind.namespaced && name.is_none() && req.method == Method::GET)
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
    sim.count_request(&req.method, name.is_some(), plural, status_only, req.uri);
    let target = Target {
        kind: &kind,
        ns,
        plural,
        status_only,
    };
    match name {
        None => collection(sim, req, &target),
        Some(n) => object(sim, req, &target, n),
    }
}

/// The resource a request is about.
struct Target<'a> {
    kind: &'a Kind,
    ns: Option<&'a str>,
    plural: &'a str,
    status_only: bool,
}

/// GET (list or watch) and POST on a collection.
fn collection(sim: &Simulator, req: &Request, t: &Target) -> Response {
    let (kind, plural) = (t.kind, t.plural);
    let q = query(req.uri);
    match req.method {
        Method::GET if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) => {
            match sim.watch(kind, t.ns, &q) {
                Ok(r) => r,
                Err(m) => status(StatusCode::BAD_REQUEST, "BadRequest", m, plural, ""),
            }
        }
        Method::GET => match sim.list(kind, t.ns, &q) {
            Ok(v) => Json(v).into_response(),
            Err(m) => status(StatusCode::BAD_REQUEST, "BadRequest", m, plural, ""),
        },
        Method::POST => match req.json() {
            Ok(obj) => sim.create(kind, t.ns.unwrap_or(""), obj, Some(&req.manager())),
            Err(r) => *r,
        },
        ref m => not_allowed(m, plural),
    }
}

/// GET, PUT, PATCH and DELETE on one object.
fn object(sim: &Simulator, req: &Request, t: &Target, n: &str) -> Response {
    let (kind, plural, ns_key) = (t.kind, t.plural, t.ns.unwrap_or(""));
    match req.method {
        Method::GET => match sim.get(&(kind.id(), ns_key.to_string(), n.to_string())) {
            Some(v) => Json(v).into_response(),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("{} \"{n}\" not found", kind.id()),
                &kind.id(),
                n,
            ),
        },
        Method::PUT => match req.json() {
            Ok(obj) => sim.replace(kind, ns_key, n, obj, t.status_only, Some(&req.manager())),
            Err(r) => *r,
        },
        Method::PATCH => patch_object(sim, req, t, n),
        Method::DELETE => sim.delete(kind, ns_key, n),
        ref m => not_allowed(m, plural),
    }
}

/// PATCH on one object: merge, strategic merge, JSON patch or apply.
fn patch_object(sim: &Simulator, req: &Request, t: &Target, n: &str) -> Response {
    let content_type = req.content_type;
    let Some(how) = patch::PatchKind::from_content_type(content_type) else {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("patch type {content_type:?} is not supported: use merge, strategic merge, JSON patch or apply"),
            t.plural,
            n,
        );
    };
    let q = query(req.uri);
    let force = matches!(q.get("force").map(String::as_str), Some("true" | "1"));
    let named = q.get("fieldManager").is_some_and(|m| !m.is_empty());
    if how == patch::PatchKind::Apply && !named {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
            "PatchOptions",
            "",
        );
    }
    match req.json() {
        Ok(p) => sim.patch(
            t.kind,
            t.ns.unwrap_or(""),
            n,
            how,
            &p,
            t.status_only,
            &req.manager(),
            force,
        ),
        Err(r) => *r,
    }
}

fn not_allowed(m: &Method, plural: &str) -> Response {
    status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("{m} is not supported here yet"),
        plural,
        "",
    )
}
