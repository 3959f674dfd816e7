//! Kubernetes quantities for sizes: `50Gi`, `1Ti`, `500M`, `1073741824`.

/// Bytes in a size quantity; a message that says what is accepted otherwise.
pub fn bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad(s))?;
    let mult: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        _ => return Err(bad(s)),
    };
    n.checked_mul(mult).ok_or_else(|| bad(s))
}

fn bad(s: &str) -> String {
    format!(
        "{s:?} is not a size: use a whole number with Ki, Mi, Gi, Ti (or k, M, G, T), e.g. 50Gi"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(bytes("50Gi"), Ok(50 << 30));
        assert_eq!(bytes("1500"), Ok(1500));
        assert_eq!(bytes("2T"), Ok(2_000_000_000_000));
        assert!(bytes("1.5Gi").is_err());
        assert!(bytes("Gi").is_err());
        assert!(bytes("10Xi").is_err());
        assert!(bytes("99999999999Pi").is_err());
    }
}
