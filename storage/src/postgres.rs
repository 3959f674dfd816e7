//! The database driver for PostgreSQL, over `tokio-postgres`.
//!
//! Each tenant database has one owner role, the only role (besides
//! superusers) allowed to connect to it: `CONNECT` is revoked from
//! `PUBLIC`. Passwords are hashed here (SCRAM-SHA-256) and only the hash is
//! sent, so a password never appears in the server's statement log; the
//! server must authenticate TCP clients with `scram-sha-256`.
//!
//! Connections are made without TLS (`NoTls`) for now: keep the admin
//! connection on a private network or a Unix socket (`host` may be a
//! socket directory, e.g. `/run/postgresql`).
//!
//! Not isolated by this driver: like any role, tenant roles may connect to
//! the databases whose `CONNECT` is granted to `PUBLIC` by default
//! (`postgres`, `template1`); revoke it there when setting up the server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::{DatabaseRequest, DatabaseStore, Error, Result};

const PRODUCT: &str = "PostgreSQL";

fn default_port() -> u16 {
    5432
}

fn default_admin_database() -> String {
    "postgres".to_string()
}

/// Where PostgreSQL is and which role administers it (a superuser, or a
/// role with CREATEROLE and CREATEDB that is a member of the roles it
/// creates).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Host name, IP address, or a Unix socket directory (starting with `/`).
    pub host: String,
    #[serde(default = "default_port")]
    pub port: u16,
    pub admin_user: String,
    #[serde(default)]
    pub admin_password: Option<String>,
    /// The database the admin connects to (default `postgres`).
    #[serde(default = "default_admin_database")]
    pub admin_database: String,
    /// `pg_dump` to run; default: `pg_dump` on `PATH`, else the newest
    /// `/usr/lib/postgresql/*/bin/pg_dump`.
    #[serde(default)]
    pub pg_dump: Option<PathBuf>,
}

impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("admin_user", &self.admin_user)
            .field(
                "admin_password",
                &self.admin_password.as_ref().map(|_| "<redacted>"),
            )
            .field("admin_database", &self.admin_database)
            .field("pg_dump", &self.pg_dump)
            .finish()
    }
}

/// PostgreSQL behind the [`DatabaseStore`] trait. Each operation opens its
/// own admin connection (they are rare), so a restarted server needs
/// nothing from the driver.
#[derive(Debug)]
pub struct PostgresStore {
    config: PostgresConfig,
}

impl PostgresStore {
    /// Checks that the admin can log in, and returns the driver.
    pub async fn connect(config: PostgresConfig) -> Result<Self> {
        let store = PostgresStore { config };
        let client = store.admin().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| pg_error("checking the admin connection", e))?;
        Ok(store)
    }

    pub fn config(&self) -> &PostgresConfig {
        &self.config
    }

    /// A connection as the admin, to the admin database.
    async fn admin(&self) -> Result<Client> {
        let c = &self.config;
        connect(
            &c.host,
            c.port,
            &c.admin_user,
            c.admin_password.as_deref(),
            &c.admin_database,
        )
        .await
        .map_err(|e| {
            pg_error(
                format!(
                    "connecting to PostgreSQL at {}:{} as {}",
                    c.host, c.port, c.admin_user
                ),
                e,
            )
        })
    }

    fn pg_dump(&self) -> Result<PathBuf> {
        if let Some(p) = &self.config.pg_dump {
            return Ok(p.clone());
        }
        find_pg_binary("pg_dump").ok_or_else(|| {
            Error::Config(
                "pg_dump not found on PATH nor in /usr/lib/postgresql/*/bin; set pg_dump in the PostgreSQL configuration"
                    .into(),
            )
        })
    }
}

/// Connects with `tokio-postgres` (no TLS) and drives the connection on a
/// task of its own.
pub async fn connect(
    host: &str,
    port: u16,
    user: &str,
    password: Option<&str>,
    dbname: &str,
) -> std::result::Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port)
        .user(user)
        .dbname(dbname)
        .application_name("ndc")
        .connect_timeout(Duration::from_secs(10));
    if let Some(p) = password {
        config.password(p);
    }
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// The error as PostgreSQL said it (`ERROR: ...`, with detail), for status messages.
fn pg_error(what: impl Into<String>, e: tokio_postgres::Error) -> Error {
    let reason = match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {} ({})", db.severity(), db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str("; ");
                s.push_str(d);
            }
            s
        }
        None => e.to_string(),
    };
    Error::backend(what, reason)
}

fn is_code(e: &tokio_postgres::Error, codes: &[SqlState]) -> bool {
    e.code().is_some_and(|c| codes.contains(c))
}

/// Checks a database or role name: 1 to 63 characters from `[a-z0-9_]`
/// (what the control plane derives from uids), so it never needs case
/// folding and its quoted form is itself in quotes.
pub fn validate_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "invalid {kind} name {name:?}: use 1 to 63 characters from a-z, 0-9 and _"
        )))
    }
}

/// `name` as an SQL identifier. Doubles any `"`, though validated names
/// have none.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `s` as an SQL string literal, whatever `standard_conforming_strings`
/// says: an escape string (`E'...'`) with `'` and `\` doubled. Refuses NUL,
/// which no PostgreSQL string can hold.
pub fn quote_literal(s: &str) -> Result<String> {
    if s.contains('\0') {
        return Err(Error::Config(
            "a NUL character cannot be sent to PostgreSQL".into(),
        ));
    }
    Ok(format!(
        "E'{}'",
        s.replace('\\', "\\\\").replace('\'', "''")
    ))
}

/// The `CONNECTION LIMIT` for a request's limit (0: no limit of our own).
fn connection_limit(limit: u32) -> Result<i32> {
    if limit == 0 {
        return Ok(-1);
    }
    i32::try_from(limit)
        .map_err(|_| Error::Config(format!("connection limit {limit} is too large")))
}

#[async_trait]
impl DatabaseStore for PostgresStore {
    fn product(&self) -> &'static str {
        PRODUCT
    }

    fn host(&self) -> String {
        self.config.host.clone()
    }

    fn port(&self) -> u16 {
        self.config.port
    }

    async fn ensure_database(&self, req: &DatabaseRequest) -> Result<()> {
        validate_name("database", &req.name)?;
        validate_name("role", &req.role)?;
        let limit = connection_limit(req.connection_limit)?;
        let db = quote_ident(&req.name);
        let role = quote_ident(&req.role);
        // Only the SCRAM verifier goes to the server.
        let verifier = quote_literal(&postgres_protocol::password::scram_sha_256(
            req.password.as_bytes(),
        ))?;
        let client = self.admin().await?;
        let what = |step: &str| format!("{step} for database {}", req.name);

        // The role: created with its settings, or brought to them.
        let alter =
            format!("ALTER ROLE {role} WITH LOGIN PASSWORD {verifier} CONNECTION LIMIT {limit}");
        if role_exists(&client, &req.role).await? {
            client
                .batch_execute(&alter)
                .await
                .map_err(|e| pg_error(what("updating role"), e))?;
        } else {
            let create = format!(
                "CREATE ROLE {role} WITH LOGIN PASSWORD {verifier} CONNECTION LIMIT {limit}"
            );
            match client.batch_execute(&create).await {
                Ok(()) => {}
                // Created meanwhile: bring it to the request instead.
                Err(e)
                    if is_code(
                        &e,
                        &[SqlState::DUPLICATE_OBJECT, SqlState::UNIQUE_VIOLATION],
                    ) =>
                {
                    client
                        .batch_execute(&alter)
                        .await
                        .map_err(|e| pg_error(what("updating role"), e))?;
                }
                Err(e) => return Err(pg_error(what("creating role"), e)),
            }
        }

        // The database (CREATE DATABASE cannot run in a transaction:
        // batch_execute sends it alone, outside of one).
        if !database_exists(&client, &req.name).await? {
            let create = format!("CREATE DATABASE {db} OWNER {role}");
            match client.batch_execute(&create).await {
                Ok(()) => {}
                Err(e)
                    if is_code(
                        &e,
                        &[SqlState::DUPLICATE_DATABASE, SqlState::UNIQUE_VIOLATION],
                    ) => {}
                Err(e) => return Err(pg_error(what("creating database"), e)),
            }
        }
        let settle = [
            format!("ALTER DATABASE {db} OWNER TO {role}"),
            format!("REVOKE CONNECT, TEMPORARY ON DATABASE {db} FROM PUBLIC"),
            format!("ALTER DATABASE {db} CONNECTION LIMIT {limit}"),
        ];
        for sql in settle {
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| pg_error(what("setting up database"), e))?;
        }
        Ok(())
    }

    async fn database_exists(&self, name: &str) -> Result<bool> {
        validate_name("database", name)?;
        database_exists(&self.admin().await?, name).await
    }

    async fn role_exists(&self, role: &str) -> Result<bool> {
        validate_name("role", role)?;
        role_exists(&self.admin().await?, role).await
    }

    async fn lock_out(&self, name: &str, role: &str) -> Result<()> {
        validate_name("database", name)?;
        validate_name("role", role)?;
        let client = self.admin().await?;
        if role_exists(&client, role).await? {
            client
                .batch_execute(&format!("ALTER ROLE {} NOLOGIN", quote_ident(role)))
                .await
                .map_err(|e| pg_error(format!("locking role {role} out"), e))?;
        }
        // (Not ALLOW_CONNECTIONS false: that would stop pg_dump too.)
        client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE (datname = $1 OR usename = $2) AND pid <> pg_backend_pid()",
                &[&name, &role],
            )
            .await
            .map_err(|e| pg_error(format!("ending the sessions of {role}"), e))?;
        Ok(())
    }

    async fn dump(&self, name: &str) -> Result<Vec<u8>> {
        validate_name("database", name)?;
        let pg_dump = self.pg_dump()?;
        let c = &self.config;
        let mut cmd = tokio::process::Command::new(&pg_dump);
        cmd.arg("--format=plain")
            .arg("--no-password")
            .arg("--host")
            .arg(&c.host)
            .arg("--port")
            .arg(c.port.to_string())
            .arg("--username")
            .arg(&c.admin_user)
            .arg("--dbname")
            .arg(name)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("PGAPPNAME", "ndc-dump")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        match &c.admin_password {
            Some(p) => cmd.env("PGPASSWORD", p),
            None => cmd.env_remove("PGPASSWORD"),
        };
        let out = cmd
            .output()
            .await
            .map_err(|e| Error::backend(format!("running {}", pg_dump.display()), e))?;
        if !out.status.success() {
            return Err(Error::backend(
                format!("dumping database {name}"),
                format!(
                    "{} {}: {}",
                    pg_dump.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
        Ok(out.stdout)
    }

    async fn drop_database(&self, name: &str, role: &str) -> Result<()> {
        validate_name("database", name)?;
        validate_name("role", role)?;
        let client = self.admin().await?;
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(name)
            ))
            .await
            .map_err(|e| pg_error(format!("dropping database {name}"), e))?;
        client
            .batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(role)))
            .await
            .map_err(|e| pg_error(format!("dropping role {role}"), e))?;
        Ok(())
    }
}

async fn database_exists(client: &Client, name: &str) -> Result<bool> {
    let rows = client
        .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(|e| pg_error(format!("looking up database {name}"), e))?;
    Ok(!rows.is_empty())
}

async fn role_exists(client: &Client, role: &str) -> Result<bool> {
    let rows = client
        .query("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .map_err(|e| pg_error(format!("looking up role {role}"), e))?;
    Ok(!rows.is_empty())
}

/// A PostgreSQL program (`pg_dump`, `initdb`, ...): on `PATH`, else in the
/// newest `/usr/lib/postgresql/<version>/bin`.
pub fn find_pg_binary(program: &str) -> Option<PathBuf> {
    if let Some(p) = find_on_path(program) {
        return Some(p);
    }
    newest_pg_bin_dir()
        .map(|d| d.join(program))
        .filter(|p| is_executable(p))
}

/// The newest `/usr/lib/postgresql/<version>/bin` (Debian's layout).
pub fn newest_pg_bin_dir() -> Option<PathBuf> {
    let entries = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.is_dir().then_some((version, bin))
        })
        .max_by_key(|(v, _)| *v)
        .map(|(_, bin)| bin)
}

pub(crate) fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

pub(crate) fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("database", "ndc_0123abcd").is_ok());
        assert!(validate_name("database", &"a".repeat(63)).is_ok());
        for bad in ["", "Ndc", "a-b", "a\"b", "a b", "é", &"a".repeat(64)] {
            assert!(
                matches!(validate_name("database", bad), Err(Error::Config(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn literals_and_identifiers_are_quoted() {
        assert_eq!(quote_ident("ndc_1"), "\"ndc_1\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("plain").unwrap(), "E'plain'");
        assert_eq!(
            quote_literal(r"it's a \ test").unwrap(),
            r"E'it''s a \\ test'"
        );
        assert!(quote_literal("nul\0").is_err());
    }

    #[test]
    fn connection_limits() {
        assert_eq!(connection_limit(0).unwrap(), -1);
        assert_eq!(connection_limit(20).unwrap(), 20);
        assert!(connection_limit(u32::MAX).is_err());
    }

    #[test]
    fn config_defaults_and_debug() {
        let c: PostgresConfig = serde_json::from_str(
            r#"{"host":"db","admin_user":"ndc","admin_password":"s3cr3t-pw"}"#,
        )
        .unwrap();
        assert_eq!(c.port, 5432);
        assert_eq!(c.admin_database, "postgres");
        assert!(c.pg_dump.is_none());
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
