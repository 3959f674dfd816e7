//! Checks on values that need no other tenant: names, codes, labels,
//! security levels. Names are normalised to NFC here.

use std::collections::BTreeMap;

use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};
use crate::model::{Level, TenantSpec};

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Most labels on one tenant.
pub const MAX_LABELS: usize = 64;

/// Returns the name in NFC, trimmed, or why it is refused.
pub fn normalize_name(name: &str) -> Result<String> {
    let n: String = name.trim().nfc().collect();
    if n.is_empty() {
        return Err(Error::NameEmpty);
    }
    if let Some(c) = n.chars().find(|c| c.is_control()) {
        return Err(Error::NameControl { code: c as u32 });
    }
    if let Some(c) = n.chars().find(|c| is_bidi_control(*c)) {
        return Err(Error::NameBidiControl { code: c as u32 });
    }
    let len = n.chars().count();
    if len > MAX_NAME_CHARS {
        return Err(Error::NameTooLong {
            len,
            max: MAX_NAME_CHARS,
        });
    }
    Ok(n)
}

/// The invisible characters that change the direction text is shown in:
/// embeddings and overrides (U+202A–U+202E), isolates (U+2066–U+2069) and
/// the direction marks (U+200E, U+200F, U+061C). In a name they can make
/// one agency's name display as another's.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

pub fn validate_security_level(level: u8) -> Result<()> {
    if (1..=5).contains(&level) {
        Ok(())
    } else {
        Err(Error::SecurityLevel { got: level })
    }
}

/// The administrative code a level needs: 2 digits for a province, 5 for a
/// commune, none for a central body.
pub fn validate_code(level: Level, code: Option<&str>) -> Result<()> {
    match (level.code_digits(), code) {
        (None, None) => Ok(()),
        (None, Some(c)) => Err(Error::CodeUnexpected {
            code: c.to_string(),
        }),
        (Some(digits), None) => Err(Error::CodeMissing { level, digits }),
        (Some(digits), Some(c)) => {
            if c.len() == digits && c.bytes().all(|b| b.is_ascii_digit()) {
                Ok(())
            } else {
                Err(Error::CodeFormat {
                    code: c.to_string(),
                    level,
                    digits,
                })
            }
        }
    }
}

fn label_name_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn dns_subdomain_ok(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Labels follow Kubernetes' rules, since they are copied onto namespaces.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(Error::TooManyLabels {
            count: labels.len(),
            max: MAX_LABELS,
        });
    }
    for (k, v) in labels {
        let (prefix, name) = match k.split_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, k.as_str()),
        };
        if let Some(p) = prefix {
            if !dns_subdomain_ok(p) {
                return Err(Error::LabelKey {
                    key: k.clone(),
                    reason: "the prefix before '/' must be a DNS subdomain such as ndc.gov.vn",
                });
            }
        }
        if !label_name_ok(name) {
            return Err(Error::LabelKey {
                key: k.clone(),
                reason: "the name must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            });
        }
        if !v.is_empty() && !label_name_ok(v) {
            return Err(Error::LabelValue {
                key: k.clone(),
                value: v.clone(),
                reason: "values are empty or 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            });
        }
    }
    Ok(())
}

/// Everything about a spec that can be checked without other tenants;
/// returns the spec with its name normalised.
pub fn validate_spec(mut spec: TenantSpec) -> Result<TenantSpec> {
    crate::id::validate_tenant_id(&spec.id)?;
    spec.display_name = normalize_name(&spec.display_name)?;
    validate_code(spec.level, spec.admin_code.as_deref())?;
    validate_security_level(spec.security_level)?;
    validate_labels(&spec.labels)?;
    if let Some(p) = &spec.parent {
        crate::id::validate_tenant_id(p)?;
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_nfc() {
        // "Hà Nội" written with combining marks becomes the precomposed form.
        let decomposed = "Ha\u{0300} No\u{0323}\u{0302}i";
        let n = normalize_name(decomposed).unwrap();
        assert_eq!(n, "Hà Nội");
        assert_eq!(normalize_name("  Bộ Y tế ").unwrap(), "Bộ Y tế");
        assert_eq!(normalize_name("  "), Err(Error::NameEmpty));
        assert!(matches!(
            normalize_name("a\tb"),
            Err(Error::NameControl { code: 9 })
        ));
        for c in ['\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}', '\u{200F}'] {
            let name = format!("Xã An{c} Bình");
            assert_eq!(
                normalize_name(&name),
                Err(Error::NameBidiControl { code: c as u32 }),
                "U+{:04X}",
                c as u32
            );
        }
        assert!(normalize_name("Xã An Bình \u{2019}").is_ok());
        assert!(matches!(
            normalize_name(&"ư".repeat(201)),
            Err(Error::NameTooLong { len: 201, .. })
        ));
    }

    #[test]
    fn codes() {
        assert!(validate_code(Level::Province, Some("01")).is_ok());
        assert!(validate_code(Level::Commune, Some("00004")).is_ok());
        assert!(validate_code(Level::Central, None).is_ok());
        assert!(matches!(
            validate_code(Level::Province, Some("1")),
            Err(Error::CodeFormat { .. })
        ));
        assert!(matches!(
            validate_code(Level::Province, Some("0a")),
            Err(Error::CodeFormat { .. })
        ));
        assert!(matches!(
            validate_code(Level::Commune, Some("٠١٢٣٤")),
            Err(Error::CodeFormat { .. })
        ));
        assert!(matches!(
            validate_code(Level::Commune, None),
            Err(Error::CodeMissing { digits: 5, .. })
        ));
        assert!(matches!(
            validate_code(Level::Central, Some("01")),
            Err(Error::CodeUnexpected { .. })
        ));
    }

    #[test]
    fn labels() {
        let ok =
            |k: &str, v: &str| validate_labels(&BTreeMap::from([(k.to_string(), v.to_string())]));
        assert!(ok("region", "north").is_ok());
        assert!(ok("ndc.gov.vn/tier", "gold").is_ok());
        assert!(ok("empty", "").is_ok());
        assert!(matches!(ok("-bad", "x"), Err(Error::LabelKey { .. })));
        assert!(matches!(
            ok("Bad_Prefix/x", "x"),
            Err(Error::LabelKey { .. })
        ));
        assert!(matches!(ok("k", "có dấu"), Err(Error::LabelValue { .. })));
        assert!(matches!(
            ok("k", &"v".repeat(64)),
            Err(Error::LabelValue { .. })
        ));
    }
}
