//! One PostgreSQL cluster on a free port of 127.0.0.1, for tests and `ndc up`.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{
    absolute, io_error, load_saved, path_str, retrying_port_clashes, reuse_ports, server_command,
    store_saved, terminate, wait_ready, Saved,
};
use crate::postgres::{self, find_on_path, is_executable, PostgresConfig};
use crate::secret::random_hex;
use crate::{Error, Result};

/// The signal PostgreSQL gets when the process that started it dies: a fast
/// shutdown (SIGTERM would wait for every client to disconnect).
const POSTGRES_DEATH_SIGNAL: &str = "INT";

/// The user PostgreSQL runs as when we are root.
const POSTGRES_USER: &str = "postgres";

/// Where PostgreSQL's files go when we are root and the postgres user cannot
/// reach the data dir: one directory per data dir, named by a digest of its
/// absolute path.
pub const POSTGRES_HOMES: &str = "/var/lib/ndc/postgres";

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(|e| io_error(format!("setting the mode of {}", p.display()), e))
}

/// Whether `user` can search `dir`, every directory above it included.
fn reachable_by(user: &str, dir: &Path) -> bool {
    server_command(Path::new("test"), Some(user), None)
        .arg("-x")
        .arg(dir)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Where PostgreSQL keeps its files for the data dir `dir` when it runs
/// as `user`: `dir` itself if that user can reach it, else its own
/// directory under [`POSTGRES_HOMES`], owned by it (0700), with
/// `dir/cluster` pointing there so a person finds it.
fn postgres_home(dir: &Path, user: &nix::unistd::User) -> Result<PathBuf> {
    use sha2::Digest;
    set_mode(dir, 0o755)?;
    if reachable_by(&user.name, dir) {
        return Ok(dir.to_path_buf());
    }
    let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
    let home = Path::new(POSTGRES_HOMES).join(hex::encode(&digest[..8]));
    fs::create_dir_all(&home).map_err(|e| io_error(format!("creating {}", home.display()), e))?;
    std::os::unix::fs::chown(&home, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
        .map_err(|e| io_error(format!("giving {} to postgres", home.display()), e))?;
    set_mode(&home, 0o700)?;
    if !reachable_by(&user.name, &home) {
        return Err(Error::Config(format!(
            "the postgres user can reach neither the data dir {} nor {}; put the data dir where it can (for example under /var/lib or /tmp)",
            dir.display(),
            home.display()
        )));
    }
    let link = dir.join("cluster");
    if fs::read_link(&link).ok().as_deref() != Some(home.as_path()) {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&home, &link).map_err(|e| {
            io_error(
                format!("linking {} to {}", link.display(), home.display()),
                e,
            )
        })?;
    }
    tracing::info!(
        data_dir = %dir.display(),
        cluster = %home.display(),
        "the postgres user cannot enter the data dir; PostgreSQL keeps its files in a directory of its own"
    );
    Ok(home)
}

/// A PostgreSQL cluster in `dir/data`, listening on 127.0.0.1 and on a
/// Unix socket in `dir/run`, with a superuser `postgres` whose password is
/// generated. Every connection authenticates with SCRAM-SHA-256, so roles
/// are isolated as on a real server. Stopped on drop.
///
/// PostgreSQL refuses to run as root: when we are root, its programs run
/// as the `postgres` user, which then owns `data` and `run`. They are in
/// `dir` (made traversable, 0755) when the postgres user can reach it;
/// otherwise (a data dir in root's own 0700 home) in a directory of the
/// postgres user's under [`POSTGRES_HOMES`], named after `dir` and linked
/// from `dir/cluster`.
#[derive(Debug)]
pub struct LocalPostgres {
    child: Option<Child>,
    config: PostgresConfig,
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    /// Where the cluster, its socket and its password file are: `dir`, or
    /// when the postgres user cannot reach `dir`, a directory of its own.
    home: PathBuf,
    dir: PathBuf,
}

impl LocalPostgres {
    /// Runs `initdb` and starts `postgres` on a free port, then waits until
    /// the superuser can log in.
    pub async fn start(dir: &Path) -> Result<LocalPostgres> {
        retrying_port_clashes("PostgreSQL", || Self::start_once(dir)).await
    }

    async fn start_once(dir: &Path) -> Result<LocalPostgres> {
        let bin = server_bin_dir()?;
        let as_postgres = nix::unistd::geteuid().is_root();
        let dir = absolute(dir)?;
        fs::create_dir_all(&dir).map_err(|e| io_error(format!("creating {}", dir.display()), e))?;
        let user = if as_postgres {
            Some(postgres_user()?)
        } else {
            None
        };
        let home = match &user {
            Some(u) => postgres_home(&dir, u)?,
            None => dir.clone(),
        };
        let data = home.join("data");
        let run = home.join("run");
        // A second start in the same directory reuses the cluster, its
        // superuser password and, if free, its port.
        let saved = load_saved(&dir, 1, 1);
        let existing = data.join("PG_VERSION").exists() && saved.is_some();
        if !existing && home != dir && data.exists() {
            // A cluster kept for an earlier data dir at this path, which was
            // removed since: its password went with it, so start afresh.
            fs::remove_dir_all(&data)
                .map_err(|e| io_error(format!("removing {}", data.display()), e))?;
        }
        for d in [&data, &run] {
            fs::create_dir_all(d).map_err(|e| io_error(format!("creating {}", d.display()), e))?;
        }
        set_mode(&data, 0o700)?;
        let password = match &saved {
            Some(s) if existing => s.secrets[0].clone(),
            _ => random_hex(24)?,
        };
        let pwfile = home.join("pwfile");
        fs::write(&pwfile, format!("{password}\n"))
            .map_err(|e| io_error(format!("writing {}", pwfile.display()), e))?;
        set_mode(&pwfile, 0o600)?;
        if let Some(user) = &user {
            for p in [&data, &run, &pwfile] {
                std::os::unix::fs::chown(p, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                    .map_err(|e| io_error(format!("giving {} to postgres", p.display()), e))?;
            }
        }
        let run_as = as_postgres.then_some(POSTGRES_USER);
        let cmd = |program: &str, death_signal: Option<&str>| {
            let mut c = server_command(&bin.join(program), run_as, death_signal);
            // Its own directory: the postgres user may not enter ours.
            c.current_dir(&home);
            c
        };

        init_cluster(&cmd, &data, &pwfile, existing)?;
        write_hba(&data)?;

        let port = reuse_ports(saved.as_ref().filter(|_| existing), 1)?[0];
        store_saved(
            &dir,
            &Saved {
                ports: vec![port],
                secrets: vec![password.clone()],
            },
        )?;
        let log = dir.join("postgres.log");
        let out =
            File::create(&log).map_err(|e| io_error(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| io_error(format!("opening {}", log.display()), e))?;
        let child = cmd("postgres", Some(POSTGRES_DEATH_SIGNAL))
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-c")
            .arg("listen_addresses=127.0.0.1")
            .arg("-c")
            .arg(format!("unix_socket_directories={}", path_str(&run)?))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| io_error("starting postgres", e))?;

        let config = PostgresConfig {
            host: "127.0.0.1".into(),
            port,
            admin_user: "postgres".into(),
            admin_password: Some(password),
            admin_database: "postgres".into(),
            pg_dump: Some(bin.join("pg_dump")).filter(|p| is_executable(p)),
        };
        let mut pg = LocalPostgres {
            child: Some(child),
            config,
            bin,
            data,
            as_postgres,
            home,
            dir,
        };
        pg.wait_ready(&log).await?;
        Ok(pg)
    }

    /// Waits until the server started takes a superuser connection.
    async fn wait_ready(&mut self, log: &Path) -> Result<()> {
        let cfg = self.config.clone();
        let ready = || {
            let cfg = cfg.clone();
            async move {
                match postgres::connect(
                    &cfg.host,
                    cfg.port,
                    &cfg.admin_user,
                    cfg.admin_password.as_deref(),
                    &cfg.admin_database,
                )
                .await
                {
                    Ok(_) => Ok(true),
                    Err(e) => Err(Error::backend("connecting", e)),
                }
            }
        };
        if let Some(child) = self.child.as_mut() {
            wait_ready("PostgreSQL", child, log, ready).await?;
        }
        Ok(())
    }

    /// How to reach this server as its superuser.
    pub fn config(&self) -> PostgresConfig {
        self.config.clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the cluster's own files are (see [`LocalPostgres`]).
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// `pg_ctl stop -m fast`: disconnects clients, stops, waits (10 s at most).
    fn pg_ctl_stop(&self) -> Command {
        let mut c = server_command(
            &self.bin.join("pg_ctl"),
            self.as_postgres.then_some(POSTGRES_USER),
            None,
        );
        c.current_dir(&self.home);
        c.arg("stop")
            .arg("-D")
            .arg(&self.data)
            .arg("-m")
            .arg("fast")
            .arg("-w")
            .arg("-t")
            .arg("10")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// Stops the server (`pg_ctl stop -m fast`, then the process if it is
    /// still there).
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let _ = tokio::process::Command::from(self.pg_ctl_stop())
                .status()
                .await;
        }
        terminate(&mut child, Duration::from_secs(5));
    }
}

impl Drop for LocalPostgres {
    /// Stops the server as `stop` does, blocking.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = self.pg_ctl_stop().status();
            }
            terminate(&mut child, Duration::from_secs(5));
        }
    }
}

/// Where PostgreSQL's server programs are: the newest in
/// /usr/lib/postgresql/*/bin, or beside initdb on PATH.
fn server_bin_dir() -> Result<PathBuf> {
    postgres::newest_pg_bin_dir()
        .filter(|d| is_executable(&d.join("initdb")))
        .or_else(|| find_on_path("initdb").and_then(|p| p.parent().map(Path::to_path_buf)))
        .ok_or_else(|| {
            Error::Config(
                "PostgreSQL server programs (initdb, postgres) not found in /usr/lib/postgresql/*/bin nor on PATH; install them with: apt-get install postgresql"
                    .into(),
            )
        })
}

/// The user PostgreSQL runs as when we are root.
fn postgres_user() -> Result<nix::unistd::User> {
    nix::unistd::User::from_name(POSTGRES_USER)
        .map_err(|e| Error::backend("looking up the postgres user", e))?
        .ok_or_else(|| {
            Error::Config(
                "we run as root, and there is no postgres user to run PostgreSQL as; install PostgreSQL with: apt-get install postgresql".into(),
            )
        })
}

/// Passwords everywhere; TCP only on 127.0.0.1.
fn write_hba(data: &Path) -> Result<()> {
    let hba = "# written by ndc: passwords everywhere, TCP only on 127.0.0.1\n\
               local all all scram-sha-256\n\
               host all all 127.0.0.1/32 scram-sha-256\n";
    fs::write(data.join("pg_hba.conf"), hba).map_err(|e| io_error("writing pg_hba.conf", e))
}

/// Makes the cluster with `initdb` unless it exists; removes the password
/// file either way.
fn init_cluster(
    cmd: &dyn Fn(&str, Option<&str>) -> std::process::Command,
    data: &Path,
    pwfile: &Path,
    existing: bool,
) -> Result<()> {
    let initdb = || {
        cmd("initdb", None)
            .arg("--pgdata")
            .arg(data)
            .arg("--username=postgres")
            .arg("--pwfile")
            .arg(pwfile)
            .arg("--auth=scram-sha-256")
            .arg("--encoding=UTF8")
            .arg("--locale=C")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| io_error("running initdb", e))
    };
    let out = if existing { None } else { Some(initdb()?) };
    let _ = fs::remove_file(pwfile);
    if let Some(out) = out.filter(|o| !o.status.success()) {
        return Err(Error::backend(
            "initdb",
            format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(())
}
