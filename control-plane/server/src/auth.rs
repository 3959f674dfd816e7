//! Who is calling: bearer tokens mapped to roles by the server's auth file.
//!
//! ```yaml
//! users:
//!   - name: operator-1
//!     token_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//!     roles: [dc-operator]
//!   - name: ha-noi-admin
//!     token: "a-secret-kept-in-the-file"
//!     roles: ["tenant-admin:ha-noi"]
//! ```

use std::collections::HashMap;
use std::path::Path;

use ndc_core::domain::{Actor, Role};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::Status;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    users: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    token_sha256: Option<String>,
    roles: Vec<String>,
}

/// How a node decides who is calling.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Tokens (by their SHA-256) to actors.
    Tokens(HashMap<String, Actor>),
    /// Every caller is an operator. For a laptop or a test, never for a
    /// data centre: the node says so when it starts.
    Open,
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

impl Auth {
    /// Reads an auth file; every problem is reported with the user it is in.
    pub fn load(path: &Path) -> Result<Auth, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Auth, String> {
        let file: AuthFile = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        let mut tokens = HashMap::new();
        for u in file.users {
            if u.name.trim().is_empty() {
                return Err("a user has an empty name".into());
            }
            let digest = match (u.token, u.token_sha256) {
                (Some(t), None) if t.len() >= 16 => sha256_hex(&t),
                (Some(_), None) => {
                    return Err(format!(
                        "user {}: a token must have at least 16 characters",
                        u.name
                    ))
                }
                (None, Some(h)) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    h.to_ascii_lowercase()
                }
                (None, Some(_)) => {
                    return Err(format!(
                        "user {}: token_sha256 must be 64 hex digits",
                        u.name
                    ))
                }
                _ => {
                    return Err(format!(
                        "user {}: give exactly one of token or token_sha256",
                        u.name
                    ))
                }
            };
            let roles = u
                .roles
                .iter()
                .map(|r| Role::parse(r))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("user {}: {e}", u.name))?;
            if roles.is_empty() {
                return Err(format!("user {} has no roles", u.name));
            }
            if tokens
                .insert(
                    digest,
                    Actor {
                        name: u.name.clone(),
                        roles,
                    },
                )
                .is_some()
            {
                return Err(format!(
                    "user {}: the same token is given to two users",
                    u.name
                ));
            }
        }
        Ok(Auth::Tokens(tokens))
    }

    /// The caller of a request.
    pub fn actor(&self, md: &MetadataMap) -> Result<Actor, Status> {
        match self {
            Auth::Open => Ok(Actor {
                name: "anonymous".into(),
                roles: vec![Role::DcOperator],
            }),
            Auth::Tokens(tokens) => {
                let header = md.get("authorization").ok_or_else(|| {
                    Status::unauthenticated("no token: pass --token or set NDC_TOKEN")
                })?;
                let value = header
                    .to_str()
                    .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
                let token = value.strip_prefix("Bearer ").ok_or_else(|| {
                    Status::unauthenticated("the authorization header must be 'Bearer <token>'")
                })?;
                tokens
                    .get(&sha256_hex(token.trim()))
                    .cloned()
                    .ok_or_else(|| Status::unauthenticated("unknown token"))
            }
        }
    }
}

/// Refuses an actor that has none of `roles`.
pub fn require(actor: &Actor, roles: &[Role], what: &str) -> Result<(), Status> {
    if actor.roles.iter().any(|r| roles.contains(r)) {
        return Ok(());
    }
    let need: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    Err(Status::permission_denied(format!(
        "{} may not {what}: that needs the role {}",
        actor.name,
        need.join(" or ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let ok = "users:\n  - name: op\n    token: \"0123456789abcdef\"\n    roles: [dc-operator]\n  - name: hn\n    token_sha256: \"9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08\"\n    roles: [\"tenant-admin:ha-noi\"]\n";
        let Auth::Tokens(t) = Auth::parse(ok).unwrap() else {
            panic!("tokens")
        };
        assert_eq!(t.len(), 2);
        assert!(t.contains_key("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"));
        for (bad, why) in [
            ("users:\n  - name: a\n    token: short\n    roles: [dc-operator]\n", "16 characters"),
            ("users:\n  - name: a\n    token: \"0123456789abcdef\"\n    roles: [root]\n", "unknown role"),
            ("users:\n  - name: a\n    roles: [auditor]\n", "exactly one"),
            ("users:\n  - name: a\n    token: \"0123456789abcdef\"\n    roles: []\n", "no roles"),
            ("users:\n  - name: a\n    token: \"0123456789abcdef\"\n    roles: [auditor]\n    extra: 1\n", "extra"),
        ] {
            let e = Auth::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
