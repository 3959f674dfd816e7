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

mod objects;
mod query;

use objects::Objects;
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

/// The simulator's state, shared by the HTTP handlers.
#[derive(Clone, Default)]
pub struct Simulator {
    objects: Arc<Mutex<Objects>>,
}

/// A `Status` failure body, as the API server sends it.
pub(crate) fn status(
    code: StatusCode,
    reason: &str,
    message: String,
    kind: &str,
    name: &str,
) -> Response {
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

pub(crate) fn now_rfc3339() -> String {
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

pub(crate) fn find_kind(plural: &str) -> Option<&'static Kind> {
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

pub(crate) async fn handle(
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
