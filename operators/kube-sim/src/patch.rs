//! Patches: JSON merge patch (RFC 7386), JSON patch (RFC 6902: add,
//! remove, replace, test) and server-side apply, simplified.

use serde_json::{Map, Value};

/// Which patch a request carries, from its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    /// `application/merge-patch+json`; also strategic merge, treated as a
    /// merge (lists are replaced, not merged by key).
    Merge,
    /// `application/json-patch+json`.
    Json,
    /// `application/apply-patch+yaml` with a JSON body: creates the object
    /// if absent, else merges into it and records the field manager.
    Apply,
}

impl PatchKind {
    pub(crate) fn from_content_type(ct: &str) -> Option<PatchKind> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                Some(PatchKind::Merge)
            }
            "application/json-patch+json" => Some(PatchKind::Json),
            "application/apply-patch+yaml" => Some(PatchKind::Apply),
            _ => None,
        }
    }
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (_, Some(p)) => {
            let mut fresh = Value::Object(Map::new());
            merge(&mut fresh, &Value::Object(p.clone()));
            *target = fresh;
        }
        _ => *target = patch.clone(),
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// The parent of a JSON pointer's target and the last token.
fn parent<'a>(doc: &'a mut Value, path: &str) -> Result<(&'a mut Value, String), String> {
    let tokens: Vec<String> = path.split('/').skip(1).map(unescape).collect();
    let (last, init) = tokens
        .split_last()
        .ok_or_else(|| format!("path {path:?} names the whole document"))?;
    let mut cur = doc;
    for t in init {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(t)
                .ok_or_else(|| format!("path {path:?}: no member {t:?}"))?,
            Value::Array(a) => {
                let i: usize = t
                    .parse()
                    .map_err(|_| format!("path {path:?}: {t:?} is not an index"))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("path {path:?}: index {i} out of range"))?
            }
            _ => return Err(format!("path {path:?}: {t:?} is inside a scalar")),
        };
    }
    Ok((cur, last.clone()))
}

/// RFC 6902, the operations controllers use: add, remove, replace, test.
pub(crate) fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch is an array of operations")?;
    for op in ops {
        let path = op["path"].as_str().ok_or("an operation needs a path")?;
        let value = op.get("value").cloned().unwrap_or(Value::Null);
        match op["op"].as_str() {
            Some("add") | Some("replace") => {
                let replace = op["op"] == "replace";
                let (p, last) = parent(doc, path)?;
                match p {
                    Value::Object(m) => {
                        if replace && !m.contains_key(&last) {
                            return Err(format!("replace {path:?}: nothing there"));
                        }
                        m.insert(last, value);
                    }
                    Value::Array(a) => {
                        if last == "-" && !replace {
                            a.push(value);
                        } else {
                            let i: usize = last
                                .parse()
                                .map_err(|_| format!("{path:?}: not an index"))?;
                            match (replace, i.cmp(&a.len())) {
                                (true, std::cmp::Ordering::Less) => a[i] = value,
                                (false, std::cmp::Ordering::Less | std::cmp::Ordering::Equal) => {
                                    a.insert(i, value)
                                }
                                _ => return Err(format!("{path:?}: index out of range")),
                            }
                        }
                    }
                    _ => return Err(format!("{path:?}: the parent is a scalar")),
                }
            }
            Some("remove") => {
                let (p, last) = parent(doc, path)?;
                let removed = match p {
                    Value::Object(m) => m.remove(&last).is_some(),
                    Value::Array(a) => match last.parse::<usize>() {
                        Ok(i) if i < a.len() => {
                            a.remove(i);
                            true
                        }
                        _ => false,
                    },
                    _ => false,
                };
                if !removed {
                    return Err(format!("remove {path:?}: nothing there"));
                }
            }
            Some("test") => {
                let (p, last) = parent(doc, path)?;
                let got = match p {
                    Value::Object(m) => m.get(&last).cloned(),
                    Value::Array(a) => last.parse::<usize>().ok().and_then(|i| a.get(i).cloned()),
                    _ => None,
                };
                // As the API server does: an absent member tests equal to
                // null (kube-runtime's finalizer helper relies on it).
                if got.unwrap_or(Value::Null) != value {
                    return Err(format!("test {path:?} failed"));
                }
            }
            other => {
                return Err(format!(
                    "operation {other:?} is not supported: use add, remove, replace or test"
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        merge(
            &mut t,
            &json!({"b": {"c": null, "e": 4}, "l": [9], "n": "x"}),
        );
        assert_eq!(
            t,
            json!({"a": 1, "b": {"d": 3, "e": 4}, "l": [9], "n": "x"})
        );
    }

    #[test]
    fn json_patches() {
        let mut t = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"list": [1, 2]}});
        json_patch(
            &mut t,
            &json!([
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "replace", "path": "/spec/list/0", "value": 7},
                {"op": "add", "path": "/spec/list/-", "value": 3},
                {"op": "remove", "path": "/metadata/labels/a"},
                {"op": "test", "path": "/spec/list/2", "value": 3},
            ]),
        )
        .unwrap();
        assert_eq!(
            t,
            json!({"metadata": {"labels": {"b": "2"}}, "spec": {"list": [7, 2, 3]}})
        );
        assert!(json_patch(
            &mut t,
            &json!([{"op": "test", "path": "/spec/list/0", "value": 1}])
        )
        .is_err());
        assert!(json_patch(&mut t, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        // An absent member tests equal to null.
        json_patch(
            &mut t,
            &json!([{"op": "test", "path": "/metadata/finalizers", "value": null}]),
        )
        .unwrap();
        assert!(json_patch(&mut t, &json!([{"op": "move", "from": "/a", "path": "/b"}])).is_err());
    }
}
