//! One Garage node on free ports of 127.0.0.1, for tests and `ndc up`.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{
    absolute, io_error, load_saved, path_str, retrying_port_clashes, reuse_ports, server_command,
    signal, store_saved, wait_ready, Saved,
};
use crate::garage::{is_healthy, GarageConfig};
use crate::postgres::is_executable;
use crate::secret::random_hex;
use crate::{Error, Result};

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
/// The signal Garage gets when the process that started it dies: a clean stop.
const GARAGE_DEATH_SIGNAL: &str = "TERM";

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
}
