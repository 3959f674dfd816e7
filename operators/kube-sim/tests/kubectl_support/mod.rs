//! Running real `kubectl` against the simulator, for the kubectl tests.
#![allow(dead_code)]

use std::process::{Command, Stdio};

/// kubectl against one simulator, run off the async runtime.
#[derive(Clone)]
pub struct Kc {
    server: String,
    home: std::path::PathBuf,
}

impl Kc {
    pub fn new(server: &str, home: &std::path::Path) -> Self {
        Kc {
            server: server.to_string(),
            home: home.to_path_buf(),
        }
    }

    pub async fn run(&self, args: &[&str]) -> (i32, String, String) {
        let (kc, args) = (
            self.clone(),
            args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        );
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            kubectl(&kc.server, &kc.home, &args)
        })
        .await
        .expect("join")
    }
}

pub fn kubectl(server: &str, home: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("kubectl")
        .arg(format!("--server=http://{server}"))
        .arg(format!("--cache-dir={}", home.join("cache").display()))
        .args(args)
        .env("HOME", home)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("kubectl is installed by scripts/test.sh");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A background kubectl, killed when dropped.
pub struct Watch(pub std::process::Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[allow(unused_imports)]
pub use ndc_testkit::wait_until;
