//! Amounts as people write them: "4" or "500m" CPU, "64Gi" or "1T" bytes.

/// CPU in millicores: "2" is 2000, "1.5" is 1500, "250m" is 250.
pub fn cpu_millis(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let bad = || {
        format!("invalid CPU amount {s:?}: write cores (\"4\", \"1.5\") or millicores (\"500m\")")
    };
    if let Some(m) = s.strip_suffix('m') {
        return m.parse::<u64>().map_err(|_| bad());
    }
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let whole: u64 = whole.parse().map_err(|_| bad())?;
    let frac: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<3}").parse().map_err(|_| bad())?
    };
    whole
        .checked_mul(1000)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)
}

/// Bytes: a plain number, or with Ki, Mi, Gi, Ti, Pi (powers of 1024) or
/// K, M, G, T, P (powers of 1000).
pub fn bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let bad = || {
        format!(
            "invalid size {s:?}: write bytes, or a number with Ki, Mi, Gi, Ti, Pi, K, M, G, T or P"
        )
    };
    let units: [(&str, u64); 10] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = s.strip_suffix(suffix) {
            let n: u64 = n.parse().map_err(|_| bad())?;
            return n.checked_mul(mult).ok_or_else(bad);
        }
    }
    s.parse().map_err(|_| bad())
}

/// Shows bytes with the largest binary unit that divides them.
pub fn show_bytes(n: u64) -> String {
    for (suffix, mult) in [
        ("Pi", 1u64 << 50),
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if n >= mult && n.is_multiple_of(mult) {
            return format!("{}{suffix}", n / mult);
        }
    }
    n.to_string()
}

pub fn show_cpu(m: u64) -> String {
    if m.is_multiple_of(1000) {
        (m / 1000).to_string()
    } else {
        format!("{m}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(cpu_millis("4"), Ok(4000));
        assert_eq!(cpu_millis("1.5"), Ok(1500));
        assert_eq!(cpu_millis("0.25"), Ok(250));
        assert_eq!(cpu_millis("250m"), Ok(250));
        assert!(cpu_millis("-1").is_err());
        assert!(cpu_millis("1.2345").is_err());
        assert!(cpu_millis("99999999999999999999").is_err());
        assert_eq!(bytes("64Gi"), Ok(64 << 30));
        assert_eq!(bytes("2T"), Ok(2_000_000_000_000));
        assert_eq!(bytes("1024"), Ok(1024));
        assert!(bytes("1.5Gi").is_err());
        assert!(bytes("20000Pi").is_err());
        assert_eq!(show_bytes(64 << 30), "64Gi");
        assert_eq!(show_cpu(1500), "1500m");
        assert_eq!(show_cpu(4000), "4");
    }
}
