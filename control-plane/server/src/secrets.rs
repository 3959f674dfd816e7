//! Credentials at rest: the control plane generates each claim's
//! credentials and keeps them in the replicated state only encrypted
//! (XChaCha20-Poly1305), bound to the claim's uid and credentials
//! generation. Every server of a cluster is given the same key file.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ndc_core::claims::{Claim, Sealed};
use serde::{Deserialize, Serialize};

/// The key that seals claim credentials.
#[derive(Clone)]
pub struct SecretsKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(<redacted>)")
    }
}

/// What a claim's credentials are, once opened.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Secret {
    S3 {
        access_key_id: String,
        secret_access_key: String,
    },
    Password {
        password: String,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::S3 { access_key_id, .. } => write!(f, "S3({access_key_id}, <redacted>)"),
            Secret::Password { .. } => f.write_str("Password(<redacted>)"),
        }
    }
}

pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok()
}

/// `n` random bytes from the operating system.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    // The OS generator failing is not something to carry on from.
    getrandom::fill(&mut b).unwrap_or_else(|e| panic!("the OS random generator failed: {e}"));
    b
}

/// A random claim uid.
pub fn generate_uid() -> String {
    hex(&random_bytes(ndc_core::claims::UID_LEN / 2))
}

impl SecretsKey {
    /// Reads a key file: 64 hex digits (32 bytes), whitespace around ignored.
    pub fn load(path: &Path) -> Result<SecretsKey, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the secrets key file {}: {e}", path.display()))?;
        SecretsKey::from_hex(text.trim()).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn from_hex(text: &str) -> Result<SecretsKey, String> {
        let bytes = unhex(text).filter(|b| b.len() == 32).ok_or(
            "a secrets key is 64 hex digits (32 random bytes), e.g. from `openssl rand -hex 32`",
        )?;
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
            .map_err(|_| "a secrets key is 32 bytes".to_string())?;
        Ok(SecretsKey { cipher })
    }

    /// Writes a new random key file readable by its owner only.
    pub fn create_file(path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        o.mode(0o600);
        let mut f = o.open(path)?;
        writeln!(f, "{}", hex(&random_bytes(32)))?;
        f.sync_all()
    }

    pub fn seal(&self, uid: &str, generation: u64, secret: &Secret) -> Result<Sealed, String> {
        let nonce = random_bytes(24);
        let msg = serde_json::to_vec(secret).map_err(|e| e.to_string())?;
        let aad = Claim::credentials_aad(uid, generation);
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &msg,
                    aad: &aad,
                },
            )
            .map_err(|_| "encryption failed".to_string())?;
        Ok(Sealed {
            generation,
            nonce: hex(&nonce),
            ciphertext: hex(&ciphertext),
        })
    }

    pub fn open(&self, uid: &str, sealed: &Sealed) -> Result<Secret, String> {
        let fail = || {
            format!(
                "the credentials of claim {uid} cannot be opened with this server's secrets key (a different key file?)"
            )
        };
        let nonce = unhex(&sealed.nonce)
            .filter(|n| n.len() == 24)
            .ok_or_else(fail)?;
        let ct = unhex(&sealed.ciphertext).ok_or_else(fail)?;
        let aad = Claim::credentials_aad(uid, sealed.generation);
        let msg = self
            .cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &ct,
                    aad: &aad,
                },
            )
            .map_err(|_| fail())?;
        serde_json::from_slice(&msg).map_err(|_| fail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretsKey {
        SecretsKey::from_hex(&hex(&random_bytes(32))).unwrap()
    }

    #[test]
    fn sealed_credentials_open_only_for_their_claim_and_generation() {
        let k = key();
        let s = Secret::Password {
            password: "correct horse battery staple".into(),
        };
        let sealed = k.seal("00000000000000aa", 1, &s).unwrap();
        assert_eq!(k.open("00000000000000aa", &sealed).unwrap(), s);
        assert!(!sealed.ciphertext.contains(&hex(b"password")));
        // Moved to another claim, or relabelled as another generation: refused.
        assert!(k.open("00000000000000bb", &sealed).is_err());
        let mut other_gen = sealed.clone();
        other_gen.generation = 2;
        assert!(k.open("00000000000000aa", &other_gen).is_err());
        // Another key: refused.
        assert!(key().open("00000000000000aa", &sealed).is_err());
    }

    #[test]
    fn key_files_are_64_hex_digits() {
        assert!(SecretsKey::from_hex("abcd").is_err());
        assert!(SecretsKey::from_hex(&"zz".repeat(32)).is_err());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        SecretsKey::create_file(&p).unwrap();
        assert!(SecretsKey::load(&p).is_ok());
        // Never overwritten.
        assert!(SecretsKey::create_file(&p).is_err());
    }

    #[test]
    fn uids_are_valid() {
        let u = generate_uid();
        assert!(ndc_core::claims::validate_uid(&u).is_ok(), "{u}");
        assert_ne!(u, generate_uid());
    }
}
