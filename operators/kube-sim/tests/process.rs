//! The simulator as a process, the way `ndc up` and a person at a shell use
//! it: it picks a free port, writes a kubeconfig once listening, and
//! kubectl and kube-rs need nothing but that file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The simulator binary, killed when dropped (also when a test fails).
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(kubeconfig: &Path, extra: &[&str]) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_ndc-kube-sim"))
        .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(kubeconfig)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the simulator");
    Process(child)
}

/// Waits for the kubeconfig the process writes once it listens.
fn wait_for(path: &Path, process: &mut Process) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        if let Ok(Some(exit)) = process.0.try_wait() {
            panic!("the simulator exited before writing its kubeconfig: {exit}");
        }
        assert!(
            Instant::now() < deadline,
            "no kubeconfig at {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kubectl(kubeconfig: &Path, home: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
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

/// `--kubeconfig` is all kubectl needs; `--ready-delay-ms` holds
/// `kubectl rollout status` until the delay has passed.
#[test]
fn kubectl_uses_the_kubeconfig_the_process_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path().to_path_buf();
    let config: PathBuf = dir.path().join("sim.kubeconfig");
    let mut sim = start(&config, &["--ready-delay-ms", "700"]);
    let text = wait_for(&config, &mut sim);
    assert!(text.contains("current-context: ndc-kube-sim"), "{text}");

    let (code, out, err) = kubectl(&config, &home, &["config", "current-context"]);
    assert!(
        code == 0 && out.trim() == "ndc-kube-sim",
        "{code} {out} {err}"
    );
    let (code, out, err) = kubectl(&config, &home, &["get", "ns"]);
    assert!(
        code == 0 && err.contains("No resources found"),
        "{code} {out} {err}"
    );

    let manifest = dir.path().join("mail.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: svc-mail\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: mail\n  namespace: svc-mail\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: mail}\n  template:\n    metadata:\n      labels: {app: mail}\n    spec:\n      containers: [{name: mail, image: \"mail:1\"}]\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\n  namespace: svc-mail\nspec:\n  serviceName: db\n  replicas: 1\n  selector:\n    matchLabels: {app: db}\n  template:\n    metadata:\n      labels: {app: db}\n    spec:\n      containers: [{name: db, image: \"db:1\"}]\n",
    )
    .expect("write");
    let started = Instant::now();
    let (code, out, err) = kubectl(
        &config,
        &home,
        &["apply", "-f", &manifest.display().to_string()],
    );
    assert!(
        code == 0 && out.contains("deployment.apps/mail created"),
        "{code} {out} {err}"
    );
    let (code, out, err) = kubectl(
        &config,
        &home,
        &[
            "rollout",
            "status",
            "-n",
            "svc-mail",
            "deployment/mail",
            "--timeout=60s",
        ],
    );
    assert!(
        code == 0 && out.contains("deployment \"mail\" successfully rolled out"),
        "{code} {out} {err}"
    );
    assert!(started.elapsed() >= Duration::from_millis(700), "{out}");
    let (code, out, err) = kubectl(
        &config,
        &home,
        &[
            "rollout",
            "status",
            "-n",
            "svc-mail",
            "statefulset/db",
            "--timeout=60s",
        ],
    );
    assert!(
        code == 0 && out.contains("roll out complete"),
        "{code} {out} {err}"
    );
}

/// kube-rs reads the same file, and the library writes one for a server it
/// started in-process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_uses_the_kubeconfig() {
    use k8s_openapi::api::core::v1::Namespace;
    use kube::api::{ObjectMeta, PostParams};
    use kube::config::{KubeConfigOptions, Kubeconfig};
    use kube::{Api, Client, Config};

    async fn client(path: &Path) -> Client {
        let file = Kubeconfig::read_from(path).expect("parse the kubeconfig");
        let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .expect("config");
        Client::try_from(config).expect("client")
    }
    let ns = |name: &str| Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };

    let dir = tempfile::tempdir().expect("temp dir");
    let from_process = dir.path().join("process.kubeconfig");
    let mut sim = start(&from_process, &[]);
    let path = from_process.clone();
    // The process lives as long as `_sim`: it is killed when the test ends.
    let _sim = tokio::task::spawn_blocking(move || {
        wait_for(&path, &mut sim);
        sim
    })
    .await
    .expect("join");
    let nss: Api<Namespace> = Api::all(client(&from_process).await);
    nss.create(&PostParams::default(), &ns("t-can-tho"))
        .await
        .expect("create through the process");

    let running = ndc_kube_sim::Simulator::new().start().await.expect("serve");
    let in_process = dir.path().join("in-process.kubeconfig");
    running.write_kubeconfig(&in_process).expect("write");
    let nss: Api<Namespace> = Api::all(client(&in_process).await);
    nss.create(&PostParams::default(), &ns("t-hue"))
        .await
        .expect("create in process");
    let names: Vec<String> = nss
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert_eq!(names, ["t-hue"], "two servers, two sets of objects");
    running.stop().await.expect("stop");
}
