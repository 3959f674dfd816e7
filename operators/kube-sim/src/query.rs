//! Query parameters: label and field selectors, continue tokens.

use axum::http::Uri;
use serde_json::Value;

pub(crate) type Query = std::collections::HashMap<String, String>;

/// The query string's parameters, percent-decoded.
pub(crate) fn query(uri: &Uri) -> Query {
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

/// One requirement of a label selector (equality- or set-based).
#[derive(Debug, PartialEq)]
pub(crate) enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    /// Also matches objects without the key, as `!=` does.
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

impl LabelReq {
    pub(crate) fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|v| vs.iter().any(|w| w == v)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|v| vs.iter().all(|w| w != v)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::Absent(k) => get(k).is_none(),
        }
    }
}

/// The requirements of a selector: split at the commas outside parentheses.
fn requirements(sel: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in sel.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&sel[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&sel[start..]);
    out
}

/// A label key: an optional DNS subdomain prefix and `/`, then a name of
/// alphanumerics, `-`, `_` and `.` (checked loosely: no spaces or operators).
fn label_key(k: &str, sel: &str) -> Result<String, String> {
    let k = k.trim();
    let ok = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if ok {
        Ok(k.to_string())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label key {k:?} in {sel:?}"
        ))
    }
}

/// Parses a label selector as the API server does: requirements separated
/// by commas, each `key=value`, `key==value`, `key!=value`, `key in (a,b)`,
/// `key notin (a,b)`, `key` or `!key`.
pub(crate) fn parse_label_selector(sel: Option<&String>) -> Result<Vec<LabelReq>, String> {
    let Some(sel) = sel.filter(|s| !s.trim().is_empty()) else {
        return Ok(vec![]);
    };
    requirements(sel)
        .into_iter()
        .map(|r| {
            let r = r.trim();
            if let Some(open) = r.find('(') {
                let mut words = r[..open].split_whitespace();
                let (key, op) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let values = r[open + 1..]
                    .strip_suffix(')')
                    .filter(|_| words.next().is_none())
                    .ok_or_else(|| format!("unable to parse requirement {r:?}"))?;
                let values: Vec<String> = values
                    .split(',')
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty())
                    .collect();
                if values.is_empty() {
                    return Err(format!(
                        "{r:?}: for 'in', 'notin' operators, values set can't be empty"
                    ));
                }
                let key = label_key(key, sel)?;
                return match op {
                    "in" => Ok(LabelReq::In(key, values)),
                    "notin" => Ok(LabelReq::NotIn(key, values)),
                    _ => Err(format!(
                        "unable to parse requirement {r:?}: expected in or notin"
                    )),
                };
            }
            Ok(if let Some((k, v)) = r.split_once("!=") {
                LabelReq::Ne(label_key(k, sel)?, v.trim().into())
            } else if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
                LabelReq::Eq(label_key(k, sel)?, v.trim().into())
            } else if let Some(k) = r.strip_prefix('!') {
                LabelReq::Absent(label_key(k, sel)?)
            } else {
                LabelReq::Exists(label_key(r, sel)?)
            })
        })
        .collect()
}

/// (field, value, equal) for metadata.name and metadata.namespace.
pub(crate) fn parse_field_selector(
    sel: Option<&String>,
) -> Result<Vec<(String, String, bool)>, String> {
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
pub(crate) fn encode_continue(ns: &str, name: &str) -> String {
    hex::encode(format!("{ns}/{name}"))
}

pub(crate) fn decode_continue(token: &str) -> Result<(String, String), String> {
    let bad = || format!("continue token {token:?} is not one this server gave");
    let bytes = hex::decode(token).map_err(|_| bad())?;
    let s = String::from_utf8(bytes).map_err(|_| bad())?;
    let (ns, name) = s.split_once('/').ok_or_else(bad)?;
    Ok((ns.to_string(), name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(s: &str) -> Result<Vec<LabelReq>, String> {
        parse_label_selector(Some(&s.to_string()))
    }

    #[test]
    fn parses_equality_and_set_based_selectors() {
        use LabelReq::*;
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            sel("tier in (gold, silver),env notin (dev),ndc.gov.vn/tenant,!legacy,a=1,b==2,c!=3")
                .expect("parses"),
            vec![
                In("tier".into(), s(&["gold", "silver"])),
                NotIn("env".into(), s(&["dev"])),
                Exists("ndc.gov.vn/tenant".into()),
                Absent("legacy".into()),
                Eq("a".into(), "1".into()),
                Eq("b".into(), "2".into()),
                Ne("c".into(), "3".into()),
            ]
        );
        for bad in [
            "tier in ()",
            "tier within (a)",
            "tier in (a",
            "in (a)",
            "a b",
        ] {
            assert!(sel(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_based_requirements_match() {
        let gold = json!({"tier": "gold"});
        let none = json!({});
        let r = sel("tier in (gold,silver)").expect("parses");
        assert!(r[0].matches(&gold) && !r[0].matches(&none));
        let r = sel("tier notin (silver)").expect("parses");
        assert!(
            r[0].matches(&gold) && r[0].matches(&none),
            "notin matches a missing key"
        );
        let r = sel("tier notin (gold)").expect("parses");
        assert!(!r[0].matches(&gold));
    }
}
