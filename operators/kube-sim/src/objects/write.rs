//! Writing objects: create, patch and replace.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::workloads::{default_spec, is_workload, simulate_controllers};
use crate::fields;
use crate::{now_rfc3339, status, valid_name, Kind, Simulator};

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
            obj = with_status_of(&current, &obj, manager);
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
        // finalizer of an object being deleted completes the deletion. As
        // the API server does, that update is not stored: the object goes,
        // and its DELETED event carries it as it was last stored.
        let deleting = current["metadata"].get("deletionTimestamp").cloned();
        if let Some(ts) = &deleting {
            obj["metadata"]["deletionTimestamp"] = ts.clone();
        }
        let cleared = obj["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
        if deleting.is_some() && cleared {
            self.remove_key(&mut o, &key);
            return (StatusCode::OK, Json(obj)).into_response();
        }
        o.items.insert(key.clone(), obj.clone());
        o.record("MODIFIED", &kind.id(), ns, obj.clone());
        if roll_out && !ready_now && deleting.is_none() {
            self.schedule_ready(kind, key.clone(), &obj);
        }
        (StatusCode::OK, Json(obj)).into_response()
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

/// A write to the status subresource: the object as stored, with the sent
/// status, resourceVersion and (who owns what may change through the status
/// too: an apply, or a client that sets them) managedFields.
fn with_status_of(current: &Value, sent: &Value, manager: Option<&str>) -> Value {
    let mut whole = current.clone();
    whole["status"] = sent.get("status").cloned().unwrap_or(Value::Null);
    whole["metadata"]["resourceVersion"] = sent["metadata"]["resourceVersion"].clone();
    match sent["metadata"].get("managedFields") {
        Some(m) => whole["metadata"]["managedFields"] = m.clone(),
        None if manager.is_none() => {
            if let Some(m) = whole["metadata"].as_object_mut() {
                m.remove("managedFields");
            }
        }
        None => {}
    }
    whole
}
