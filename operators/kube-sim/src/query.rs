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

/// One requirement of an equality-based label selector.
pub(crate) enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Absent(String),
}

impl LabelReq {
    pub(crate) fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => get(k) != Some(v.as_str()),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::Absent(k) => get(k).is_none(),
        }
    }
}

pub(crate) fn parse_label_selector(sel: Option<&String>) -> Result<Vec<LabelReq>, String> {
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
    format!("{ns}/{name}")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn decode_continue(token: &str) -> Result<(String, String), String> {
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
