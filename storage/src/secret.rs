//! Credentials the control plane generates, from the operating system's CSPRNG.

use crate::{Error, Result, S3Credentials};

/// `n` random bytes from the operating system's CSPRNG, hex-encoded (2n chars).
/// `n` random bytes from the system's generator, as lowercase hex.
pub fn random_hex(n: usize) -> Result<String> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::backend("reading the system random number generator", e))?;
    Ok(hex(&bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// A new S3 key pair in Garage's own format: the key id is `GK` and 24
/// lowercase hex digits (12 random bytes), the secret 64 hex digits
/// (32 random bytes). Such a pair can be imported into Garage
/// (`ImportKey`) and is also valid for other S3 servers.
pub fn generate_s3_credentials() -> Result<S3Credentials> {
    Ok(S3Credentials {
        access_key_id: format!("GK{}", random_hex(12)?),
        secret_access_key: random_hex(32)?,
    })
}

/// A new password: 48 hex digits (24 random bytes, 192 bits).
pub fn generate_password() -> Result<String> {
    random_hex(24)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_hex(s: &str) -> bool {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    #[test]
    fn s3_credentials_have_garage_format() {
        let c = generate_s3_credentials().unwrap();
        assert_eq!(c.access_key_id.len(), 26);
        assert!(c.access_key_id.starts_with("GK"));
        assert!(is_hex(&c.access_key_id[2..]));
        assert_eq!(c.secret_access_key.len(), 64);
        assert!(is_hex(&c.secret_access_key));
        let d = generate_s3_credentials().unwrap();
        assert_ne!(c.access_key_id, d.access_key_id);
        assert_ne!(c.secret_access_key, d.secret_access_key);
    }

    #[test]
    fn passwords_are_random_hex() {
        let a = generate_password().unwrap();
        assert_eq!(a.len(), 48);
        assert!(is_hex(&a));
        assert_ne!(a, generate_password().unwrap());
    }

    #[test]
    fn hex_encodes() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }
}
