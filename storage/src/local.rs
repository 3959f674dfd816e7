//! Real servers on this machine, in a directory of the caller's: one
//! Garage node and one PostgreSQL cluster, each on free ports of
//! 127.0.0.1. The tests use them, and so does a local installation.
//!
//! Each launcher stops its server by `stop()`, or when dropped; the
//! directory is the caller's to remove.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::garage::{is_healthy, GarageConfig};
use crate::postgres::{self, find_on_path, is_executable, PostgresConfig};
use crate::secret::random_hex;
use crate::{Error, Result};

/// How long a server may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The Garage version the project is tested with.
pub const GARAGE_VERSION: &str = "2.5.0";

/// The region local Garage servers use.
pub const LOCAL_GARAGE_REGION: &str = "garage";

fn install_hint() -> String {
    format!(
        "install it with: cargo install --locked garage --version {GARAGE_VERSION} --root $HOME/.cache/ndc-tools"
    )
}

/// The `garage` binary: `$NDC_GARAGE_BIN`, else `garage` on `PATH`, else
/// `$HOME/.cache/ndc-tools/bin/garage`. The error says how to install it.
pub fn find_garage() -> Result<PathBuf> {
    find_garage_in(
        std::env::var_os("NDC_GARAGE_BIN"),
        std::env::var_os("PATH"),
        std::env::var_os("HOME"),
    )
}

fn find_garage_in(
    env_bin: Option<OsString>,
    path: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf> {
    if let Some(p) = env_bin {
        let p = PathBuf::from(p);
        if is_executable(&p) {
            return Ok(p);
        }
        return Err(Error::Config(format!(
            "NDC_GARAGE_BIN={} is not an executable file; {}",
            p.display(),
            install_hint()
        )));
    }
    let on_path = path.and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("garage"))
            .find(|p| is_executable(p))
    });
    if let Some(p) = on_path {
        return Ok(p);
    }
    if let Some(home) = home {
        let p = Path::new(&home).join(".cache/ndc-tools/bin/garage");
        if is_executable(&p) {
            return Ok(p);
        }
    }
    Err(Error::Config(format!(
        "the garage binary was not found ($NDC_GARAGE_BIN, PATH, $HOME/.cache/ndc-tools/bin/garage); {}",
        install_hint()
    )))
}

/// `n` distinct free TCP ports on 127.0.0.1 (held together while chosen,
/// so they differ; another process may still take one before we bind it).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::backend("finding a free port on 127.0.0.1", e))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::backend("finding a free port on 127.0.0.1", e))
}

/// What a local server was started with, kept in its directory so the
/// next start reuses the same ports and secrets (and, for PostgreSQL, the
/// same cluster): clients and stored endpoints stay valid.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Saved {
    ports: Vec<u16>,
    secrets: Vec<String>,
}

const SAVED: &str = "ndc-local.json";

fn load_saved(dir: &Path, ports: usize, secrets: usize) -> Option<Saved> {
    let text = fs::read_to_string(dir.join(SAVED)).ok()?;
    let s: Saved = serde_json::from_str(&text).ok()?;
    (s.ports.len() == ports && s.secrets.len() == secrets).then_some(s)
}

fn store_saved(dir: &Path, s: &Saved) -> Result<()> {
    let path = dir.join(SAVED);
    let text =
        serde_json::to_string(s).map_err(|e| Error::backend("encoding the local state", e))?;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io_error(format!("writing {}", path.display()), e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| io_error(format!("writing {}", path.display()), e))
}

/// The saved ports if they are all free again, else new free ones.
fn reuse_ports(saved: Option<&Saved>, n: usize) -> Result<Vec<u16>> {
    if let Some(s) = saved {
        let free = s
            .ports
            .iter()
            .all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok());
        if free {
            return Ok(s.ports.clone());
        }
    }
    free_ports(n)
}

/// The last `max` bytes of a log file, for error messages.
fn log_tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).trim().to_string()
}

fn io_error(what: impl Into<String>, e: std::io::Error) -> Error {
    Error::backend(what, e)
}

/// A string as a TOML basic string.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| Error::Config(format!("path {} is not UTF-8", p.display())))
}

/// `path` made absolute against the working directory: the servers change
/// directory at start, so a relative path would no longer point anywhere.
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| io_error(format!("resolving {}", path.display()), e))
}

/// The signal Garage gets when the process that started it dies: a clean stop.
const GARAGE_DEATH_SIGNAL: &str = "TERM";
/// The signal PostgreSQL gets when the process that started it dies: a fast
/// shutdown (SIGTERM would wait for every client to disconnect).
const POSTGRES_DEATH_SIGNAL: &str = "INT";

/// A command for `program`, run as `user` when given, and, when
/// `death_signal` is given, sent that signal by the kernel as soon as the
/// thread that started it exits (`setpriv --pdeathsig`, util-linux): a
/// server started here does not outlive its parent, even one killed with
/// SIGKILL. Start servers from a thread that lives as long as they should
/// (the main thread, or a runtime's worker), not from a short-lived one.
/// Without `setpriv` on PATH, `runuser` changes the user and the server
/// may outlive a parent that is killed.
fn server_command(program: &Path, user: Option<&str>, death_signal: Option<&str>) -> Command {
    match find_on_path("setpriv") {
        Some(setpriv) => {
            let mut c = Command::new(setpriv);
            if let Some(u) = user {
                c.arg(format!("--reuid={u}"))
                    .arg(format!("--regid={u}"))
                    .arg("--init-groups");
            }
            if let Some(sig) = death_signal {
                c.arg(format!("--pdeathsig={sig}"));
            }
            c.arg("--").arg(program);
            c
        }
        None => match user {
            Some(u) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(u).arg("--").arg(program);
                c
            }
            None => Command::new(program),
        },
    }
}

fn signal(child: &Child, signal: nix::sys::signal::Signal) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
    }
}

/// Sends SIGTERM, waits up to `grace`, then kills. Reaps the child.
fn terminate(child: &mut Child, grace: Duration) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    signal(child, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// What a server's log says when a port it was given is taken.
const PORT_TAKEN: &str = "Address already in use";

/// Runs `start` again, three times in all at most, while it fails because
/// a port chosen for the server was taken by another process between the
/// choice and the bind (the next start chooses again).
async fn retrying_port_clashes<T, F, Fut>(what: &str, mut start: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 1;
    loop {
        match start().await {
            Err(e) if attempt < 3 && e.to_string().contains(PORT_TAKEN) => {
                tracing::warn!(
                    attempt,
                    "starting {what}: a port was taken before it could bind it; starting again"
                );
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// Polls `ready` with a growing pause (10 ms to 500 ms) until it says
/// yes, the child exits, its log says a port it was given is taken (Garage
/// goes on running without that API), or [`START_TIMEOUT`] passes.
async fn wait_ready<F, Fut>(what: &str, child: &mut Child, log: &Path, mut ready: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    let mut last = String::from("not ready yet");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::backend(
                format!("starting {what}"),
                format!(
                    "it exited ({status}); its log ends with:\n{}",
                    log_tail(log, 4000)
                ),
            ));
        }
        // Read again once it answers: another of its APIs may have failed.
        let ready_now = match ready().await {
            Ok(true) => true,
            Ok(false) => {
                last = "not ready yet".into();
                false
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        };
        if log_tail(log, 16_000).contains(PORT_TAKEN) {
            return Err(Error::backend(
                format!("starting {what}"),
                format!(
                    "a port it was given is taken ({PORT_TAKEN}); its log ends with:\n{}",
                    log_tail(log, 4000)
                ),
            ));
        }
        if ready_now {
            return Ok(());
        }
        if start.elapsed() > START_TIMEOUT {
            return Err(Error::backend(
                format!("starting {what}"),
                format!(
                    "not ready after {}s ({last}); its log ends with:\n{}",
                    START_TIMEOUT.as_secs(),
                    log_tail(log, 4000)
                ),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

// ---- Garage ----

/// One Garage node (`garage server --single-node`) with its metadata and
/// data in a directory. Stopped on drop.
#[derive(Debug)]
pub struct LocalGarage {
    child: Option<Child>,
    config: GarageConfig,
    dir: PathBuf,
}

impl LocalGarage {
    /// Writes `dir/garage.toml` (LMDB metadata in `dir/meta`, data in
    /// `dir/data`, RPC, S3 and admin on free ports of 127.0.0.1, random RPC
    /// secret and admin token, region [`LOCAL_GARAGE_REGION`], replication
    /// factor 1), starts Garage with its log in `dir/garage.log`, and waits
    /// until its admin API reports a healthy cluster.
    pub async fn start(dir: &Path) -> Result<LocalGarage> {
        retrying_port_clashes("Garage", || Self::start_once(dir)).await
    }

    async fn start_once(dir: &Path) -> Result<LocalGarage> {
        let bin = find_garage()?;
        let dir = absolute(dir)?;
        let meta = dir.join("meta");
        let data = dir.join("data");
        for d in [&meta, &data] {
            fs::create_dir_all(d).map_err(|e| io_error(format!("creating {}", d.display()), e))?;
        }
        // A second start in the same directory keeps its ports and secrets.
        let saved = load_saved(&dir, 3, 2);
        let ports = reuse_ports(saved.as_ref(), 3)?;
        let (rpc, s3, admin) = (ports[0], ports[1], ports[2]);
        let (admin_token, rpc_secret) = match &saved {
            Some(s) => (s.secrets[0].clone(), s.secrets[1].clone()),
            None => (random_hex(32)?, random_hex(32)?),
        };
        store_saved(
            &dir,
            &Saved {
                ports: ports.clone(),
                secrets: vec![admin_token.clone(), rpc_secret.clone()],
            },
        )?;
        let toml = format!(
            "metadata_dir = {meta}\n\
             data_dir = {data}\n\
             db_engine = \"lmdb\"\n\
             replication_factor = 1\n\
             rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_secret = \"{rpc_secret}\"\n\
             \n\
             [s3_api]\n\
             s3_region = {region}\n\
             api_bind_addr = \"127.0.0.1:{s3}\"\n\
             \n\
             [admin]\n\
             api_bind_addr = \"127.0.0.1:{admin}\"\n\
             admin_token = \"{admin_token}\"\n",
            meta = toml_str(path_str(&meta)?),
            data = toml_str(path_str(&data)?),
            region = toml_str(LOCAL_GARAGE_REGION),
        );
        let config_path = dir.join("garage.toml");
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&config_path)?;
            f.write_all(toml.as_bytes())
        };
        write().map_err(|e| io_error(format!("writing {}", config_path.display()), e))?;

        let log = dir.join("garage.log");
        let out =
            File::create(&log).map_err(|e| io_error(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| io_error(format!("opening {}", log.display()), e))?;
        let child = server_command(&bin, None, Some(GARAGE_DEATH_SIGNAL))
            .arg("-c")
            .arg(&config_path)
            .arg("server")
            .arg("--single-node")
            .env("RUST_LOG", "garage=info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| io_error(format!("starting {}", bin.display()), e))?;

        let config = GarageConfig {
            s3_endpoint: format!("http://127.0.0.1:{s3}"),
            admin_endpoint: format!("http://127.0.0.1:{admin}"),
            admin_token,
            region: LOCAL_GARAGE_REGION.to_string(),
        };
        let mut garage = LocalGarage {
            child: Some(child),
            config,
            dir,
        };
        let cfg = garage.config.clone();
        if let Some(child) = garage.child.as_mut() {
            wait_ready("Garage", child, &log, || is_healthy(&cfg)).await?;
        }
        Ok(garage)
    }

    /// How to reach this Garage as its administrator.
    pub fn config(&self) -> GarageConfig {
        self.config.clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server cleanly: SIGTERM, then SIGKILL if it is still
    /// there after 15 s. Garage waits (up to 10 s) for clients to close
    /// their connections, so drop the clients (the `GarageStore`) first.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        signal(&child, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for LocalGarage {
    /// Kills the server (SIGKILL) if `stop` was not called. Its metadata
    /// (LMDB) survives that; a graceful stop needs the async runtime, which
    /// is blocked while dropping, and Garage would wait for the clients'
    /// connections that runtime holds.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---- PostgreSQL ----

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

/// Removes everything inside `dir`, keeping `dir`.
fn clear_dir(dir: &Path) -> Result<()> {
    let entries =
        fs::read_dir(dir).map_err(|e| io_error(format!("reading {}", dir.display()), e))?;
    for entry in entries {
        let path = entry
            .map_err(|e| io_error(format!("reading {}", dir.display()), e))?
            .path();
        let removed = if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| io_error(format!("removing {}", path.display()), e))?;
    }
    Ok(())
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
        let bin = postgres::newest_pg_bin_dir()
            .filter(|d| is_executable(&d.join("initdb")))
            .or_else(|| find_on_path("initdb").and_then(|p| p.parent().map(Path::to_path_buf)))
            .ok_or_else(|| {
                Error::Config(
                    "PostgreSQL server programs (initdb, postgres) not found in /usr/lib/postgresql/*/bin nor on PATH; install them with: apt-get install postgresql"
                        .into(),
                )
            })?;
        let as_postgres = nix::unistd::geteuid().is_root();
        let dir = absolute(dir)?;
        fs::create_dir_all(&dir).map_err(|e| io_error(format!("creating {}", dir.display()), e))?;
        let user = if as_postgres {
            Some(
                nix::unistd::User::from_name(POSTGRES_USER)
                    .map_err(|e| Error::backend("looking up the postgres user", e))?
                    .ok_or_else(|| {
                        Error::Config(
                            "we run as root, and there is no postgres user to run PostgreSQL as; install PostgreSQL with: apt-get install postgresql".into(),
                        )
                    })?,
            )
        } else {
            None
        };
        let home = match &user {
            Some(u) => postgres_home(&dir, u)?,
            None => dir.clone(),
        };
        let data = home.join("data");
        let run = home.join("run");
        for d in [&data, &run] {
            fs::create_dir_all(d).map_err(|e| io_error(format!("creating {}", d.display()), e))?;
        }
        set_mode(&data, 0o700)?;
        // A second start in the same directory reuses the cluster, its
        // superuser password and, if free, its port.
        let saved = load_saved(&dir, 1, 1);
        let existing = data.join("PG_VERSION").exists() && saved.is_some();
        if !existing && home != dir {
            // A cluster kept for an earlier data dir at this path, which was
            // removed since: its password went with it, so start afresh.
            clear_dir(&data)?;
        }
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

        let initdb = || {
            cmd("initdb", None)
                .arg("--pgdata")
                .arg(&data)
                .arg("--username=postgres")
                .arg("--pwfile")
                .arg(&pwfile)
                .arg("--auth=scram-sha-256")
                .arg("--encoding=UTF8")
                .arg("--locale=C")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| io_error("running initdb", e))
        };
        let out = if existing { None } else { Some(initdb()?) };
        let _ = fs::remove_file(&pwfile);
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
        let hba = "# written by ndc: passwords everywhere, TCP only on 127.0.0.1\n\
                   local all all scram-sha-256\n\
                   host all all 127.0.0.1/32 scram-sha-256\n";
        fs::write(data.join("pg_hba.conf"), hba).map_err(|e| io_error("writing pg_hba.conf", e))?;

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
        let cfg = pg.config.clone();
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
        if let Some(child) = pg.child.as_mut() {
            wait_ready("PostgreSQL", child, &log, ready).await?;
        }
        Ok(pg)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_port_taken_is_read_from_the_log_of_a_server_still_running() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        fs::write(
            &log,
            "ERROR garage::server: Admin server exited with error: IO error: Address already in use (os error 98)\n",
        )
        .unwrap();
        let mut child = Command::new("sleep").arg("60").spawn().unwrap();
        let e = wait_ready("X", &mut child, &log, || async { Ok(false) })
            .await
            .unwrap_err()
            .to_string();
        let _ = child.kill();
        let _ = child.wait();
        assert!(e.contains("a port it was given is taken"), "{e}");
    }

    #[tokio::test]
    async fn a_start_is_tried_again_after_a_port_clash_only() {
        let clash = || Error::backend("starting X", format!("its log: {PORT_TAKEN}"));
        // Clashes twice, then starts.
        let calls = AtomicUsize::new(0);
        let r = retrying_port_clashes("X", || {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n < 3 {
                    Err(clash())
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.unwrap(), 3);
        // Gives up after three clashes.
        let calls = AtomicUsize::new(0);
        let r: Result<()> = retrying_port_clashes("X", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(clash()) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Any other failure is not tried again.
        let calls = AtomicUsize::new(0);
        let r: Result<()> = retrying_port_clashes("X", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(Error::backend("starting X", "it exited (status 1)")) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_str("/tmp/a"), "\"/tmp/a\"");
        assert_eq!(toml_str("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
    }

    #[test]
    fn garage_lookup_order_and_install_hint() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir_all(bin.join("sub")).unwrap();
        let garage = bin.join("garage");
        fs::write(&garage, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&garage, fs::Permissions::from_mode(0o755)).unwrap();
        let home = dir.path().join("home");
        let cached = home.join(".cache/ndc-tools/bin/garage");
        fs::create_dir_all(cached.parent().unwrap()).unwrap();
        fs::write(&cached, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&cached, fs::Permissions::from_mode(0o755)).unwrap();
        let os = |p: &Path| Some(p.as_os_str().to_owned());

        let found = find_garage_in(os(&cached), os(&bin), os(&home)).unwrap();
        assert_eq!(found, cached, "NDC_GARAGE_BIN comes first");
        let found = find_garage_in(None, os(&bin), os(&home)).unwrap();
        assert_eq!(found, garage, "then PATH");
        let found = find_garage_in(None, os(&bin.join("sub")), os(&home)).unwrap();
        assert_eq!(found, cached, "then ~/.cache/ndc-tools/bin");

        let hint = "cargo install --locked garage --version 2.5.0 --root $HOME/.cache/ndc-tools";
        let missing = dir.path().join("nope");
        let err = find_garage_in(None, os(&missing), os(&missing)).unwrap_err();
        assert!(err.to_string().contains(hint), "{err}");
        let err = find_garage_in(os(&missing), os(&bin), os(&home)).unwrap_err();
        assert!(err.to_string().contains(hint), "{err}");
    }

    #[test]
    fn free_ports_differ() {
        let p = free_ports(3).unwrap();
        assert!(p[0] != p[1] && p[1] != p[2] && p[0] != p[2]);
    }
}
