//! Field ownership for server-side apply, simplified: `metadata.managedFields`
//! records, per manager and operation, the fields it set. An apply that
//! would change a field another manager owns is a conflict unless forced;
//! forcing takes the field over. An apply owns exactly what it sends: fields
//! it sent before and no longer sends are removed unless another manager
//! owns them. An update (create, replace, patch) takes the fields it
//! changed from everyone else, without conflicts.
//!
//! The simplification: a field is a path of object keys, and a list is one
//! field (the API server merges lists such as `containers` by key and owns
//! their items apart; here lists are atomic). Ownership is written as real
//! `FieldsV1` (`{"f:data": {"f:tier": {}}}`) and read back from what clients
//! send, collapsing item keys (`k:`, `v:`, `i:`) to the list holding them.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

/// A field: the object keys leading to it from the object's root.
pub(crate) type Path = Vec<String>;
pub(crate) type Fields = BTreeSet<Path>;

/// What a manager did, as `managedFields` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Manager {
    pub(crate) name: String,
    /// `Apply` or `Update`.
    pub(crate) operation: &'static str,
    /// `Some("status")` for changes made through the status subresource.
    pub(crate) subresource: Option<String>,
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
struct Entry {
    manager: Manager,
    api_version: String,
    time: Value,
    fields: Fields,
}

/// A field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Conflict {
    /// How the API server names the manager: `"name"`, with `using
    /// apiVersion` for an update.
    pub(crate) manager: String,
    /// `.spec.replicas`
    pub(crate) field: String,
}

/// Metadata the server owns or that names the object: nobody's field.
const SERVER_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// The fields set in `obj`: through the main resource (all but `status`)
/// or the status subresource (only `status`).
pub(crate) fn leaves(obj: &Value, status: bool) -> Fields {
    fn walk(v: &Value, path: &mut Path, out: &mut Fields) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    path.push(k.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {
                out.insert(path.clone());
            }
        }
    }
    let mut out = Fields::new();
    let Some(top) = obj.as_object() else {
        return out;
    };
    for (k, v) in top {
        let wanted = match k.as_str() {
            "apiVersion" | "kind" => false,
            "status" => status,
            _ => !status,
        };
        if !wanted {
            continue;
        }
        if k == "metadata" {
            for (mk, mv) in v.as_object().into_iter().flatten() {
                if !SERVER_METADATA.contains(&mk.as_str()) {
                    walk(mv, &mut vec![k.clone(), mk.clone()], &mut out);
                }
            }
        } else {
            walk(v, &mut vec![k.clone()], &mut out);
        }
    }
    out
}

/// The value at a path, if every step is an object key.
fn lookup<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, k| v.as_object()?.get(k))
}

/// Removes the field at `path`, and the objects it leaves empty (below the
/// top level).
fn remove(obj: &mut Value, path: &[String]) {
    let Some((last, init)) = path.split_last() else {
        return;
    };
    let mut cur = &mut *obj;
    for k in init {
        match cur.as_object_mut().and_then(|m| m.get_mut(k)) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
    if init.len() > 1 && lookup(obj, init).is_some_and(|v| v.as_object().is_some_and(Map::is_empty))
    {
        remove(obj, init);
    }
}

/// `FieldsV1` for a set of fields.
fn to_fields_v1(fields: &Fields) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut cur = &mut root;
        for k in path {
            let next = cur
                .entry(format!("f:{k}"))
                .or_insert_with(|| Value::Object(Map::new()));
            if !next.is_object() {
                *next = Value::Object(Map::new());
            }
            match next {
                Value::Object(m) => cur = m,
                _ => unreachable!("just made an object"),
            }
        }
    }
    Value::Object(root)
}

/// The fields a `FieldsV1` names (see the module's note on lists).
fn from_fields_v1(v: &Value) -> Fields {
    fn walk(v: &Value, path: &mut Path, out: &mut Fields) {
        let Some(m) = v.as_object() else {
            return;
        };
        let mut leaf = m.is_empty();
        for (k, child) in m {
            if let Some(name) = k.strip_prefix("f:") {
                path.push(name.to_string());
                walk(child, path, out);
                path.pop();
            } else {
                // ".", or an item of a list: the field itself.
                leaf = true;
            }
        }
        if leaf && !path.is_empty() {
            out.insert(path.clone());
        }
    }
    let mut out = Fields::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let operation = match e["operation"].as_str() {
                Some("Apply") => "Apply",
                Some("Update") => "Update",
                _ => return None,
            };
            Some(Entry {
                manager: Manager {
                    name: e["manager"].as_str().unwrap_or_default().to_string(),
                    operation,
                    subresource: e["subresource"]
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                },
                api_version: e["apiVersion"].as_str().unwrap_or_default().to_string(),
                time: e["time"].clone(),
                fields: from_fields_v1(&e["fieldsV1"]),
            })
        })
        .collect()
}

fn write_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager.name, "operation": e.manager.operation,
                "apiVersion": e.api_version, "time": e.time,
                "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.fields),
            });
            if let Some(s) = &e.manager.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    if list.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    } else {
        obj["metadata"]["managedFields"] = Value::Array(list);
    }
}

/// Gives `manager` the fields `fields` (adding to what it has, or replacing
/// it when `replace`), first in the list if new, as the API server keeps it.
fn own(
    entries: &mut Vec<Entry>,
    manager: &Manager,
    api_version: &str,
    fields: Fields,
    replace: bool,
) {
    let now = json!(crate::now_rfc3339());
    match entries.iter_mut().find(|e| &e.manager == manager) {
        Some(e) => {
            if replace {
                e.fields = fields;
            } else {
                e.fields.extend(fields);
            }
            e.api_version = api_version.to_string();
            e.time = now;
        }
        None => entries.push(Entry {
            manager: manager.clone(),
            api_version: api_version.to_string(),
            time: now,
            fields,
        }),
    }
}

fn describe(m: &Manager, api_version: &str) -> String {
    let mut s = format!("{:?}", m.name);
    if let Some(sub) = &m.subresource {
        s.push_str(&format!(" with subresource {sub:?}"));
    }
    if m.operation == "Update" {
        s.push_str(&format!(" using {api_version}"));
    }
    s
}

/// `.metadata.labels.tier`
fn dotted(path: &[String]) -> String {
    path.iter().map(|k| format!(".{k}")).collect()
}

/// Server-side apply of `config` by `manager` onto `live` (absent: a
/// create). Returns the object to store, with its `managedFields`, or the
/// conflicts when another manager owns a field `config` changes and
/// `force` is not set.
pub(crate) fn apply(
    live: Option<&Value>,
    config: &Value,
    manager: &str,
    force: bool,
    api_version: &str,
    status: bool,
) -> Result<Value, Vec<Conflict>> {
    let me = Manager {
        name: manager.to_string(),
        operation: "Apply",
        subresource: status.then(|| "status".to_string()),
    };
    let mut obj = live.cloned().unwrap_or_else(|| json!({}));
    let mut owners = entries(&obj);
    let sent = leaves(config, status);
    let mut conflicts = Vec::new();
    for e in owners.iter().filter(|e| e.manager != me) {
        for path in e.fields.intersection(&sent) {
            if lookup(&obj, path) != lookup(config, path) {
                conflicts.push((
                    e.manager.clone(),
                    path.clone(),
                    describe(&e.manager, &e.api_version),
                ));
            }
        }
    }
    if !conflicts.is_empty() && !force && manager == "kubectl" {
        // Moving from client-side to server-side apply: kubectl's fields
        // that client-side apply recorded and that are still as recorded
        // are no conflict; the API server takes them over as if forced.
        let recorded = last_applied(&obj);
        conflicts.retain(|(_, path, _)| !recorded.contains(path));
        if conflicts.is_empty() {
            return apply(live, config, manager, true, api_version, status);
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts
            .into_iter()
            .map(|(_, path, manager)| Conflict {
                manager,
                field: dotted(&path),
            })
            .collect());
    }
    // Forced: the fields change hands.
    for (owner, path, _) in &conflicts {
        if let Some(e) = owners.iter_mut().find(|e| &e.manager == owner) {
            e.fields.remove(path);
        }
    }
    // What this manager applied before and no longer does goes, unless
    // someone else owns it too.
    let before = owners
        .iter()
        .find(|e| e.manager == me)
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for path in before.difference(&sent) {
        let shared = owners
            .iter()
            .any(|e| e.manager != me && e.fields.contains(path));
        if !shared {
            remove(&mut obj, path);
        }
    }
    // Through the status subresource only the status changes; through the
    // main resource everything but the status.
    let body = if status {
        json!({"status": config["status"]})
    } else {
        let mut body = config.clone();
        if let Some(m) = body.as_object_mut() {
            m.remove("status");
            if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("managedFields");
            }
        }
        body
    };
    crate::patch::merge(&mut obj, &body);
    own(&mut owners, &me, api_version, sent, true);
    forget_missing(&obj, &mut owners);
    write_entries(&mut obj, owners);
    Ok(obj)
}

/// The fields of kubectl's client-side apply annotation whose values are
/// still those of the object.
fn last_applied(obj: &Value) -> Fields {
    let recorded = obj["metadata"]["annotations"]
        ["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .and_then(|s| serde_json::from_str::<Value>(s).ok());
    let Some(recorded) = recorded.filter(|r| r["apiVersion"] == obj["apiVersion"]) else {
        return Fields::new();
    };
    leaves(&recorded, false)
        .into_iter()
        .filter(|p| lookup(&recorded, p) == lookup(obj, p))
        .collect()
}

/// Records an update (create, replace, merge or JSON patch) by `manager`:
/// it owns the fields whose values it changed, and nobody else does any
/// more. `new` may carry `managedFields` a client set on purpose; absent
/// or empty, the live object's stay.
pub(crate) fn update(
    live: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    status: bool,
) {
    let me = Manager {
        name: manager.to_string(),
        operation: "Update",
        subresource: status.then(|| "status".to_string()),
    };
    let sent = entries(new);
    let mut owners = if sent.is_empty() {
        live.map(entries).unwrap_or_default()
    } else {
        sent
    };
    let empty = json!({});
    let old = live.unwrap_or(&empty);
    let changed: Fields = leaves(new, status)
        .into_iter()
        .filter(|p| lookup(old, p) != lookup(new, p))
        .collect();
    if !changed.is_empty() {
        for e in owners.iter_mut().filter(|e| e.manager != me) {
            e.fields.retain(|p| !changed.contains(p));
        }
        own(&mut owners, &me, api_version, changed, false);
    }
    forget_missing(new, &mut owners);
    write_entries(new, owners);
}

/// Nobody owns a field that is not there.
fn forget_missing(obj: &Value, owners: &mut [Entry]) {
    for e in owners.iter_mut() {
        e.fields.retain(|p| lookup(obj, p).is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managers(obj: &Value) -> Vec<(String, String, Value)> {
        obj["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["manager"].as_str().unwrap_or_default().to_string(),
                    e["operation"].as_str().unwrap_or_default().to_string(),
                    e["fieldsV1"].clone(),
                )
            })
            .collect()
    }

    #[test]
    fn fields_v1_round_trips() {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "x", "labels": {"a": "1"}, "finalizers": ["f"]},
            "data": {"k": "v"}, "spec": {"list": [1, 2], "empty": {}}});
        let fields = leaves(&obj, false);
        assert_eq!(
            to_fields_v1(&fields),
            json!({"f:data": {"f:k": {}}, "f:metadata": {"f:finalizers": {}, "f:labels": {"f:a": {}}},
                   "f:spec": {"f:empty": {}, "f:list": {}}})
        );
        assert_eq!(from_fields_v1(&to_fields_v1(&fields)), fields);
        // Item keys, as real servers write them, collapse to the list.
        let real = json!({"f:spec": {"f:containers": {"k:{\"name\":\"a\"}": {".": {}, "f:image": {}}}, "f:replicas": {}}});
        let paths: Vec<String> = from_fields_v1(&real).iter().map(|p| dotted(p)).collect();
        assert_eq!(paths, [".spec.containers", ".spec.replicas"]);
    }

    #[test]
    fn apply_conflicts_forces_and_removes() {
        let a = json!({"metadata": {"name": "x", "labels": {"app": "web"}}, "data": {"tier": "gold", "zone": "hn"}});
        let obj = apply(None, &a, "alice", false, "v1", false).expect("create");
        assert_eq!(obj["data"], json!({"tier": "gold", "zone": "hn"}));
        // Same value: shared, no conflict.
        let b = json!({"metadata": {"name": "x"}, "data": {"tier": "gold", "size": "1"}});
        let obj = apply(Some(&obj), &b, "bob", false, "v1", false).expect("shared");
        // A different value: a conflict naming alice and the field.
        let c = json!({"metadata": {"name": "x"}, "data": {"zone": "hcm"}});
        let err = apply(Some(&obj), &c, "bob", false, "v1", false).expect_err("conflict");
        assert_eq!(
            err,
            [Conflict {
                manager: "\"alice\"".into(),
                field: ".data.zone".into()
            }]
        );
        // Forced: bob takes zone; he no longer applies tier and size, but
        // alice still owns tier: only size goes.
        let obj = apply(Some(&obj), &c, "bob", true, "v1", false).expect("forced");
        assert_eq!(obj["data"], json!({"tier": "gold", "zone": "hcm"}));
        let m = managers(&obj);
        assert_eq!(m[0].0, "alice");
        assert_eq!(
            m[0].2,
            json!({"f:data": {"f:tier": {}}, "f:metadata": {"f:labels": {"f:app": {}}}})
        );
        assert_eq!(
            (m[1].0.as_str(), &m[1].2),
            ("bob", &json!({"f:data": {"f:zone": {}}}))
        );
        // Alice stops applying her label: it goes, and the emptied labels with it.
        let a2 = json!({"metadata": {"name": "x"}, "data": {"tier": "gold"}});
        let obj = apply(Some(&obj), &a2, "alice", false, "v1", false).expect("apply");
        assert!(obj["metadata"].get("labels").is_none(), "{obj}");
    }

    #[test]
    fn updates_take_fields_from_appliers() {
        let a = json!({"metadata": {"name": "x"}, "spec": {"replicas": 2, "image": "web:1"}});
        let live = apply(None, &a, "operator", false, "apps/v1", false).expect("create");
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = json!(5);
        update(Some(&live), &mut scaled, "kubectl-scale", "apps/v1", false);
        let err =
            apply(Some(&scaled), &a, "operator", false, "apps/v1", false).expect_err("conflict");
        assert_eq!(err[0].manager, "\"kubectl-scale\" using apps/v1");
        assert_eq!(err[0].field, ".spec.replicas");
        // The same values again are no conflict.
        let mut again = a.clone();
        again["spec"]["replicas"] = json!(5);
        apply(Some(&scaled), &again, "operator", false, "apps/v1", false).expect("no conflict");
    }
}
