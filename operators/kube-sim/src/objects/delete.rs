//! Deleting objects: finalizers, namespaces, owner references and CRDs.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{Key, Objects};
use crate::{now_rfc3339, status, Kind, Simulator};

impl Simulator {
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
        self.remove_key(o, key)
    }

    /// Removes one object now, finalizers or not: the DELETED event carries
    /// it as it was last stored, at a new resourceVersion. Then what goes
    /// with it, as [`Self::delete_key`] says.
    pub(crate) fn remove_key(&self, o: &mut Objects, key: &Key) -> Value {
        let Some(mut obj) = o.items.get(key).cloned() else {
            return Value::Null;
        };
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
