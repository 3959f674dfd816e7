//! Reading objects: list and get.

use serde_json::{json, Value};

use super::Key;
use crate::query::*;
use crate::{Kind, Simulator};

impl Simulator {
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

    pub(crate) fn get(&self, key: &Key) -> Option<Value> {
        self.objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .items
            .get(key)
            .cloned()
    }
}
