//! Tenant ids: DNS-1123 labels short enough that the namespaces derived
//! from them (`t-<id>-<suffix>`) stay within Kubernetes' 63-character limit.

use crate::error::{Error, Result};

/// Longest tenant id. 63 (a DNS label) less room for `t-` and a `-xxxxxxxx`
/// suffix on derived names.
pub const MAX_TENANT_ID_LEN: usize = 48;

/// Checks that `id` can name a tenant.
pub fn validate_tenant_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::EmptyId);
    }
    let len = id.chars().count();
    if len > MAX_TENANT_ID_LEN {
        return Err(Error::IdTooLong {
            id: id.to_string(),
            len,
            max: MAX_TENANT_ID_LEN,
        });
    }
    if let Some((pos, found)) = id
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(Error::IdBadChar {
            id: id.to_string(),
            found,
            pos,
        });
    }
    if id.starts_with('-') || id.ends_with('-') {
        return Err(Error::IdBadEdge { id: id.to_string() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_and_refuses() {
        assert_eq!(validate_tenant_id("ha-noi"), Ok(()));
        assert_eq!(validate_tenant_id("bo-cong-an"), Ok(()));
        assert_eq!(validate_tenant_id("x1"), Ok(()));
        assert_eq!(validate_tenant_id(""), Err(Error::EmptyId));
        assert!(matches!(
            validate_tenant_id("Ha-Noi"),
            Err(Error::IdBadChar { pos: 0, .. })
        ));
        assert!(matches!(
            validate_tenant_id("hà-nội"),
            Err(Error::IdBadChar { found: 'à', .. })
        ));
        assert!(matches!(
            validate_tenant_id("-x"),
            Err(Error::IdBadEdge { .. })
        ));
        assert!(matches!(
            validate_tenant_id("x-"),
            Err(Error::IdBadEdge { .. })
        ));
        assert!(matches!(
            validate_tenant_id(&"a".repeat(49)),
            Err(Error::IdTooLong { len: 49, .. })
        ));
    }

    proptest! {
        #[test]
        fn valid_ids_fit_a_namespace_name(id in "[a-z0-9]([a-z0-9-]{0,46}[a-z0-9])?") {
            prop_assert!(validate_tenant_id(&id).is_ok());
            let ns = format!("t-{id}-12345678");
            prop_assert!(ns.len() <= 63);
        }

        #[test]
        fn anything_with_an_uppercase_letter_is_refused(prefix in "[a-z]{0,5}", up in "[A-Z]", suffix in "[a-z]{0,5}") {
            let id = format!("{prefix}{up}{suffix}");
            prop_assert!(validate_tenant_id(&id).is_err());
        }
    }
}
