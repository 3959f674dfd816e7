//! Real `kubectl` against the simulator: discovery, create from manifests,
//! get, conflicts and not-found, and a namespace deletion that takes its
//! contents with it.

use std::process::{Command, Stdio};

/// kubectl against one simulator, run off the async runtime.
#[derive(Clone)]
struct Kc {
    server: String,
    home: std::path::PathBuf,
}

impl Kc {
    fn new(server: &str, home: &std::path::Path) -> Self {
        Kc {
            server: server.to_string(),
            home: home.to_path_buf(),
        }
    }

    async fn run(&self, args: &[&str]) -> (i32, String, String) {
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

fn kubectl(server: &str, home: &std::path::Path, args: &[&str]) -> (i32, String, String) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_accepts_the_simulator() {
    let sim = ndc_kube_sim::Simulator::new().start().await.expect("serve");
    let addr = sim.addr;
    let server = addr.to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path().to_path_buf();
    let ns = dir.path().join("ns.yaml");
    let cm = dir.path().join("cm.yaml");
    std::fs::write(&ns, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: t-ha-noi\n  labels:\n    ndc.gov.vn/tenant: ha-noi\n").expect("write");
    std::fs::write(&cm, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: registry\n  namespace: t-ha-noi\ndata:\n  tenants: ha-noi\n").expect("write");

    let kc = Kc::new(&server, &home);
    let ns_path = ns.display().to_string();
    let cm_path = cm.display().to_string();

    let (code, out, err) = kc.run(&["version", "-o", "json"]).await;
    assert!(
        code == 0 && out.contains("v1.32.0-ndc-sim"),
        "{code} {out} {err}"
    );
    let (code, out, err) = kc
        .run(&["create", "-f", &ns_path, "--validate=false"])
        .await;
    assert!(
        code == 0 && out.contains("namespace/t-ha-noi created"),
        "{code} {out} {err}"
    );
    let (code, out, err) = kc
        .run(&["create", "-f", &cm_path, "--validate=false"])
        .await;
    assert!(
        code == 0 && out.contains("configmap/registry created"),
        "{code} {out} {err}"
    );
    let (code, out, _) = kc
        .run(&[
            "get",
            "ns",
            "t-ha-noi",
            "-o",
            "jsonpath={.metadata.labels.ndc\\.gov\\.vn/tenant} {.status.phase}",
        ])
        .await;
    assert!(code == 0 && out == "ha-noi Active", "{code} {out:?}");
    let (code, out, _) = kc.run(&["get", "cm", "-n", "t-ha-noi"]).await;
    assert!(code == 0 && out.contains("registry"), "{out}");
    // Again: AlreadyExists, as the real API server says it.
    let (code, _, err) = kc
        .run(&["create", "-f", &ns_path, "--validate=false"])
        .await;
    assert!(code == 1 && err.contains("AlreadyExists"), "{code} {err}");
    let (code, _, err) = kc.run(&["get", "cm", "nope", "-n", "t-ha-noi"]).await;
    assert!(code == 1 && err.contains("NotFound"), "{code} {err}");
    // A replace carrying a stale resourceVersion is a conflict; a current one succeeds.
    let stale = dir.path().join("stale.yaml");
    std::fs::write(&stale, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: registry\n  namespace: t-ha-noi\n  resourceVersion: \"1\"\ndata:\n  tenants: ha-noi,hue\n").expect("write");
    let stale_path = stale.display().to_string();
    let (code, _, err) = kc
        .run(&["replace", "-f", &stale_path, "--validate=false"])
        .await;
    assert!(
        code == 1 && err.contains("the object has been modified"),
        "{code} {err}"
    );
    let (code, rv, _) = kc
        .run(&[
            "get",
            "cm",
            "registry",
            "-n",
            "t-ha-noi",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .await;
    assert_eq!(code, 0);
    std::fs::write(&stale, format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: registry\n  namespace: t-ha-noi\n  resourceVersion: \"{rv}\"\ndata:\n  tenants: ha-noi,hue\n")).expect("write");
    let (code, out, err) = kc
        .run(&["replace", "-f", &stale_path, "--validate=false"])
        .await;
    assert!(code == 0 && out.contains("replaced"), "{code} {out} {err}");
    let (_, out, _) = kc
        .run(&[
            "get",
            "cm",
            "registry",
            "-n",
            "t-ha-noi",
            "-o",
            "jsonpath={.data.tenants} {.metadata.generation}",
        ])
        .await;
    assert_eq!(
        out, "ha-noi,hue 1",
        "only a spec change bumps the generation"
    );
    // Label and field selectors, and paging (limit/continue) with --chunk-size.
    for (n, tier) in [("t-a", "gold"), ("t-b", "silver"), ("t-c", "gold")] {
        let f = dir.path().join(format!("{n}.yaml"));
        std::fs::write(&f, format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {n}\n  labels:\n    tier: {tier}\n")).expect("write");
        let (code, _, err) = kc
            .run(&["create", "-f", &f.display().to_string(), "--validate=false"])
            .await;
        assert_eq!(code, 0, "{err}");
    }
    let names = |out: &str| {
        out.lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    let (_, out, _) = kc.run(&["get", "ns", "-l", "tier=gold"]).await;
    assert_eq!(names(&out), ["t-a", "t-c"]);
    let (_, out, _) = kc.run(&["get", "ns", "-l", "tier,tier!=gold"]).await;
    assert_eq!(names(&out), ["t-b"]);
    let (_, out, _) = kc
        .run(&["get", "ns", "--field-selector", "metadata.name=t-c"])
        .await;
    assert_eq!(names(&out), ["t-c"]);
    let (_, out, _) = kc.run(&["get", "ns", "--chunk-size=1"]).await;
    assert_eq!(names(&out), ["t-a", "t-b", "t-c", "t-ha-noi"]);
    // Set-based selectors; `notin` and `!key` also select what has no such label.
    for (selector, want) in [
        ("tier in (gold)", &["t-a", "t-c"][..]),
        ("tier in (gold,silver),tier notin (gold)", &["t-b"]),
        ("tier notin (gold)", &["t-b", "t-ha-noi"]),
        ("!tier", &["t-ha-noi"]),
    ] {
        let (code, out, err) = kc.run(&["get", "ns", "-l", selector]).await;
        assert!(code == 0 && names(&out) == want, "{selector}: {out} {err}");
    }
    let (code, _, err) = kc.run(&["get", "ns", "-l", "tier in ()"]).await;
    assert!(code == 1 && err.contains("BadRequest"), "{code} {err}");

    // Deleting the namespace deletes what was in it.
    let (code, _, err) = kc.run(&["delete", "-f", &ns_path]).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = kc.run(&["get", "cm", "-A"]).await;
    assert!(code == 0 && !out.contains("registry"), "{out} {err}");

    sim.stop().await.expect("stop");
}

/// `kubectl get -w` sees changes as they happen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watches() {
    let sim = ndc_kube_sim::Simulator::new().start().await.expect("serve");
    let addr = sim.addr;
    let server = addr.to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("watch.out");
    let mut watcher = Command::new("kubectl")
        .arg(format!("--server=http://{server}"))
        .arg(format!(
            "--cache-dir={}",
            dir.path().join("cache").display()
        ))
        .args(["get", "ns", "-w", "--output-watch-events"])
        .env("HOME", dir.path())
        .env_remove("KUBECONFIG")
        .stdout(std::fs::File::create(&out).expect("out"))
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl");
    let ns = dir.path().join("ns.yaml");
    std::fs::write(
        &ns,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: watched\n",
    )
    .expect("write");
    let home = dir.path().to_path_buf();
    let ns_path = ns.display().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // Create until the watcher has seen it (the watch may start after the first create).
    let mut created = false;
    loop {
        let seen = std::fs::read_to_string(&out).unwrap_or_default();
        if seen
            .lines()
            .any(|l| l.starts_with("ADDED") && l.contains("watched"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the watcher never saw the namespace: {seen}"
        );
        if !created {
            let (server, home, ns_path) = (server.clone(), home.clone(), ns_path.clone());
            let (code, _, err) = tokio::task::spawn_blocking(move || {
                kubectl(
                    &server,
                    &home,
                    &["create", "-f", &ns_path, "--validate=false"],
                )
            })
            .await
            .expect("join");
            assert_eq!(code, 0, "{err}");
            created = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let (server2, home2, ns2) = (server.clone(), home.clone(), ns_path.clone());
    let (code, _, _) =
        tokio::task::spawn_blocking(move || kubectl(&server2, &home2, &["delete", "-f", &ns2]))
            .await
            .expect("join");
    assert_eq!(code, 0);
    loop {
        let seen = std::fs::read_to_string(&out).unwrap_or_default();
        if seen
            .lines()
            .any(|l| l.starts_with("DELETED") && l.contains("watched"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the watcher never saw the deletion: {seen}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let _ = watcher.kill();
    let _ = watcher.wait();
    sim.stop().await.expect("stop");
}

/// A watch from a resourceVersion older than the kept history gets a
/// `410 Expired` error event, as from the real API server.
#[tokio::test]
async fn an_old_resource_version_is_gone() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = ndc_kube_sim::Simulator::with_history(2)
        .start()
        .await
        .expect("serve");
    let addr = sim.addr;
    let request = |method: &str, path: &str, body: &str| {
        format!("{method} {path} HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
    };
    let send = |req: String| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    };
    for n in ["a", "b", "c", "d"] {
        let body = format!("{{\"metadata\":{{\"name\":\"{n}\"}}}}");
        let resp = send(request("POST", "/api/v1/namespaces", &body)).await;
        assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    }
    let resp = send(request(
        "GET",
        "/api/v1/namespaces?watch=true&resourceVersion=1",
        "",
    ))
    .await;
    assert!(
        resp.contains("\"type\":\"ERROR\"")
            && resp.contains("\"code\":410")
            && resp.contains("Expired"),
        "{resp}"
    );
    // From a kept revision it replays what came after.
    let resp = send(request(
        "GET",
        "/api/v1/namespaces?watch=true&resourceVersion=3&timeoutSeconds=1",
        "",
    ))
    .await;
    assert!(
        resp.contains("\"name\":\"d\"") && !resp.contains("\"name\":\"c\""),
        "{resp}"
    );
    sim.stop().await.expect("stop");
}

/// The other API groups ndc's operators use: apps, networking, rbac,
/// policy, coordination; discovery lists them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_uses_the_other_groups() {
    let sim = ndc_kube_sim::Simulator::new().start().await.expect("serve");
    let addr = sim.addr;
    let server = addr.to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path().to_path_buf();
    let f = dir.path().join("all.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: svc-email\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: email\n  namespace: svc-email\nspec:\n  replicas: 2\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: default-deny\n  namespace: svc-email\nspec:\n  podSelector: {}\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: email\n  namespace: svc-email\nspec:\n  minAvailable: 1\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: ndc-viewer\n---\napiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: ndc-operator\n  namespace: svc-email\n",
    )
    .expect("write");
    let path = f.display().to_string();
    let kc = Kc::new(&server, &home);
    let (code, out, err) = kc.run(&["create", "-f", &path, "--validate=false"]).await;
    assert_eq!(code, 0, "{out} {err}");
    for made in [
        "deployment.apps/email",
        "networkpolicy.networking.k8s.io/default-deny",
        "poddisruptionbudget.policy/email",
        "clusterrole.rbac.authorization.k8s.io/ndc-viewer",
        "lease.coordination.k8s.io/ndc-operator",
    ] {
        assert!(out.contains(&format!("{made} created")), "{made}: {out}");
    }
    let (code, out, _) = kc
        .run(&[
            "get",
            "deploy",
            "email",
            "-n",
            "svc-email",
            "-o",
            "jsonpath={.apiVersion} {.spec.replicas} {.metadata.generation}",
        ])
        .await;
    assert!(code == 0 && out == "apps/v1 2 1", "{code} {out}");
    let (code, out, _) = kc
        .run(&[
            "api-resources",
            "--api-group",
            "rbac.authorization.k8s.io",
            "-o",
            "name",
        ])
        .await;
    assert!(
        code == 0
            && out.contains("clusterroles.rbac.authorization.k8s.io")
            && out.contains("rolebindings.rbac.authorization.k8s.io"),
        "{out}"
    );
    // Deleting the namespace takes the namespaced objects of every group with it.
    let (code, _, _) = kc.run(&["delete", "ns", "svc-email"]).await;
    assert_eq!(code, 0);
    let (_, out, _) = kc.run(&["get", "deploy,netpol,pdb,lease", "-A"]).await;
    assert!(
        !out.contains("email") && !out.contains("default-deny"),
        "{out}"
    );
    let (_, out, _) = kc.run(&["get", "clusterroles"]).await;
    assert!(
        out.contains("ndc-viewer"),
        "cluster-scoped objects stay: {out}"
    );
    sim.stop().await.expect("stop");
}

/// A CRD makes its kind served at its group, version and plural, with its
/// short names; deleting the CRD removes the kind and its objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_follow_their_definition() {
    let sim = ndc_kube_sim::Simulator::new().start().await.expect("serve");
    let addr = sim.addr;
    let server = addr.to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path().to_path_buf();
    let crd = dir.path().join("crd.yaml");
    std::fs::write(&crd, "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: objectbuckets.ndc.gov.vn\nspec:\n  group: ndc.gov.vn\n  scope: Namespaced\n  names:\n    plural: objectbuckets\n    singular: objectbucket\n    kind: ObjectBucket\n    shortNames: [ob]\n  versions:\n    - name: v1alpha1\n      served: true\n      storage: true\n").expect("write");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: wrong.ndc.gov.vn\nspec:\n  group: ndc.gov.vn\n  scope: Namespaced\n  names:\n    plural: databases\n    kind: Database\n  versions:\n    - name: v1alpha1\n").expect("write");
    let ob = dir.path().join("ob.yaml");
    std::fs::write(&ob, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: t-ha-noi\n---\napiVersion: ndc.gov.vn/v1alpha1\nkind: ObjectBucket\nmetadata:\n  name: archive\n  namespace: t-ha-noi\nspec:\n  sizeGi: 100\n").expect("write");
    let kc = Kc::new(&server, &home);
    let p = |f: &std::path::Path| f.display().to_string();

    let (code, _, err) = kc
        .run(&["create", "-f", &p(&bad), "--validate=false"])
        .await;
    assert!(
        code == 1 && err.contains("is invalid"),
        "a CRD whose name does not match is refused: {code} {err}"
    );
    let (code, out, err) = kc
        .run(&["create", "-f", &p(&crd), "--validate=false"])
        .await;
    assert!(code == 0 && out.contains("created"), "{code} {out} {err}");
    let (code, out, err) = kc.run(&["create", "-f", &p(&ob), "--validate=false"]).await;
    assert!(
        code == 0 && out.contains("objectbucket.ndc.gov.vn/archive created"),
        "{code} {out} {err}"
    );
    let (code, out, _) = kc
        .run(&[
            "get",
            "ob",
            "archive",
            "-n",
            "t-ha-noi",
            "-o",
            "jsonpath={.apiVersion} {.spec.sizeGi}",
        ])
        .await;
    assert!(
        code == 0 && out == "ndc.gov.vn/v1alpha1 100",
        "{code} {out}"
    );
    let (code, _, _) = kc.run(&["delete", "crd", "objectbuckets.ndc.gov.vn"]).await;
    assert_eq!(code, 0);
    let (code, _, err) = kc.run(&["get", "objectbuckets.ndc.gov.vn", "-A"]).await;
    assert!(
        code == 1 && err.contains("doesn't have a resource type"),
        "{code} {err}"
    );
    sim.stop().await.expect("stop");
}

/// With the OpenAPI v3 documents served, kubectl needs no extra flags:
/// `apply` (client- and server-side) and `create -f` validate on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_without_flags() {
    let sim = ndc_kube_sim::Simulator::new().start().await.expect("serve");
    let addr = sim.addr;
    let server = addr.to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path().to_path_buf();
    let ns = dir.path().join("ns.yaml");
    let cm = dir.path().join("cm.yaml");
    std::fs::write(
        &ns,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: t-da-nang\n",
    )
    .expect("write");
    let write_cm = |v: &str| {
        std::fs::write(&cm, format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: t-da-nang\ndata:\n  tier: \"{v}\"\n")).expect("write")
    };
    let kc = Kc::new(&server, &home);
    let (ns_p, cm_p) = (ns.display().to_string(), cm.display().to_string());
    let (code, out, err) = kc.run(&["apply", "--server-side", "-f", &ns_p]).await;
    assert!(
        code == 0 && out.contains("serverside-applied"),
        "{code} {out} {err}"
    );
    write_cm("gold");
    let (code, out, err) = kc.run(&["apply", "-f", &cm_p]).await;
    assert!(code == 0 && out.contains("created"), "{code} {out} {err}");
    write_cm("silver");
    let (code, out, err) = kc.run(&["apply", "-f", &cm_p]).await;
    assert!(
        code == 0 && out.contains("configured"),
        "{code} {out} {err}"
    );
    let (_, out, _) = kc
        .run(&[
            "get",
            "cm",
            "settings",
            "-n",
            "t-da-nang",
            "-o",
            "jsonpath={.data.tier}",
        ])
        .await;
    assert_eq!(out, "silver");
    sim.stop().await.expect("stop");
}

/// One file with a CRD, a namespace and instances of the CRD's kind, as a
/// real cluster takes it: kubectl maps every kind before it applies, so the
/// first apply creates the CRD and the namespace and reports the instances'
/// kind as not mapped; the second creates the instances. Then `get -o
/// yaml`, `get -w` seeing a change, a stale replace refused, and deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_a_crd_and_its_instances_from_one_file() {
    let sim = ndc_kube_sim::Simulator::new().start().await.expect("serve");
    let server = sim.addr.to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path().to_path_buf();
    let kc = Kc::new(&server, &home);
    let bucket = |name: &str, size: u32| {
        format!("---\napiVersion: ndc.gov.vn/v1alpha1\nkind: ObjectBucket\nmetadata:\n  name: {name}\n  namespace: t-ha-noi\nspec:\n  sizeGi: {size}\n")
    };
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: objectbuckets.ndc.gov.vn\nspec:\n  group: ndc.gov.vn\n  scope: Namespaced\n  names:\n    plural: objectbuckets\n    singular: objectbucket\n    kind: ObjectBucket\n    shortNames: [ob]\n  versions:\n    - name: v1alpha1\n      served: true\n      storage: true\n      schema:\n        openAPIV3Schema:\n          type: object\n          x-kubernetes-preserve-unknown-fields: true\n      subresources:\n        status: {}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: t-ha-noi\n";
    let all = dir.path().join("all.yaml");
    let all_p = all.display().to_string();
    let write_all = |archive_size: u32| {
        std::fs::write(
            &all,
            format!(
                "{crd}{}{}",
                bucket("archive", archive_size),
                bucket("media", 10)
            ),
        )
        .expect("write")
    };
    write_all(100);

    let (code, out, err) = kc.run(&["apply", "-f", &all_p]).await;
    assert_eq!(code, 1, "{out} {err}");
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/objectbuckets.ndc.gov.vn created"
        ) && out.contains("namespace/t-ha-noi created")
            && !out.contains("objectbucket.ndc.gov.vn/"),
        "{out}"
    );
    for name in ["archive", "media"] {
        assert!(
            err.contains(&format!(
                "resource mapping not found for name: \"{name}\" namespace: \"t-ha-noi\""
            )) && err.contains(
                "no matches for kind \"ObjectBucket\" in version \"ndc.gov.vn/v1alpha1\""
            ),
            "{err}"
        );
    }
    assert!(err.contains("ensure CRDs are installed first"), "{err}");

    let (code, out, err) = kc.run(&["apply", "-f", &all_p]).await;
    assert_eq!(code, 0, "{out} {err}");
    for line in [
        "customresourcedefinition.apiextensions.k8s.io/objectbuckets.ndc.gov.vn unchanged",
        "namespace/t-ha-noi unchanged",
        "objectbucket.ndc.gov.vn/archive created",
        "objectbucket.ndc.gov.vn/media created",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }

    let (code, yaml, err) = kc
        .run(&["get", "ob", "archive", "-n", "t-ha-noi", "-o", "yaml"])
        .await;
    assert_eq!(code, 0, "{err}");
    for line in [
        "apiVersion: ndc.gov.vn/v1alpha1",
        "kind: ObjectBucket",
        "  name: archive",
        "  namespace: t-ha-noi",
        "  generation: 1",
        "  sizeGi: 100",
        "kubectl.kubernetes.io/last-applied-configuration",
    ] {
        assert!(yaml.contains(line), "{line}: {yaml}");
    }

    // `get -w` sees the instances, then a change applied from the file.
    let seen = dir.path().join("watch.out");
    let _watch = Watch(
        Command::new("kubectl")
            .arg(format!("--server=http://{server}"))
            .arg(format!("--cache-dir={}", home.join("cache").display()))
            .args(["get", "ob", "-n", "t-ha-noi", "-w", "--output-watch-events"])
            .env("HOME", &home)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&seen).expect("out"))
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl get -w"),
    );
    let watched = |event: &'static str, name: &'static str| {
        let seen = seen.clone();
        move || {
            std::fs::read_to_string(&seen)
                .unwrap_or_default()
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([event, name]))
        }
    };
    wait_until("get -w lists archive", watched("ADDED", "archive")).await;
    write_all(200);
    let (code, out, err) = kc.run(&["apply", "-f", &all_p]).await;
    assert!(
        code == 0 && out.contains("objectbucket.ndc.gov.vn/archive configured"),
        "{code} {out} {err}"
    );
    wait_until("get -w sees the change", watched("MODIFIED", "archive")).await;
    let (_, out, _) = kc
        .run(&[
            "get",
            "ob",
            "archive",
            "-n",
            "t-ha-noi",
            "-o",
            "jsonpath={.spec.sizeGi} {.metadata.generation}",
        ])
        .await;
    assert_eq!(out, "200 2");

    // The copy from before the change is stale: replacing with it is a conflict.
    let stale = dir.path().join("stale.yaml");
    std::fs::write(&stale, yaml.replace("sizeGi: 100", "sizeGi: 300")).expect("write");
    let (code, _, err) = kc
        .run(&["replace", "-f", &stale.display().to_string()])
        .await;
    assert!(
        code == 1
            && err.contains("Error from server (Conflict)")
            && err
                .contains("Operation cannot be fulfilled on objectbuckets.ndc.gov.vn \"archive\""),
        "{code} {err}"
    );

    let (code, out, err) = kc.run(&["delete", "ob", "archive", "-n", "t-ha-noi"]).await;
    assert!(
        code == 0 && out.contains("objectbucket.ndc.gov.vn \"archive\" deleted"),
        "{code} {out} {err}"
    );
    wait_until("get -w sees the deletion", watched("DELETED", "archive")).await;
    let (code, _, err) = kc.run(&["get", "ob", "archive", "-n", "t-ha-noi"]).await;
    assert!(
        code == 1 && err.contains("objectbuckets.ndc.gov.vn \"archive\" not found"),
        "{code} {err}"
    );
    // Deleting the file's objects: the CRD takes its remaining instances with it.
    let (code, out, err) = kc
        .run(&["delete", "-f", &all_p, "--ignore-not-found"])
        .await;
    assert_eq!(code, 0, "{out} {err}");
    let (code, out, err) = kc.run(&["get", "crd,ns"]).await;
    assert!(
        code == 0 && !out.contains("objectbuckets") && !out.contains("t-ha-noi"),
        "{out} {err}"
    );
    sim.stop().await.expect("stop");
}

/// A background kubectl, killed when dropped.
struct Watch(std::process::Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// Server-side apply between field managers, as kubectl shows it: a
/// conflict names the other manager and the field, `--force-conflicts`
/// takes the field over, an update (`kubectl patch`) takes fields too, a
/// manager that stops applying a field it alone owned removes it, and
/// moving from client-side to server-side apply is no conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_server_side_apply_between_managers() {
    let sim = ndc_kube_sim::Simulator::new().start().await.expect("serve");
    let server = sim.addr.to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path().to_path_buf();
    let kc = Kc::new(&server, &home);
    let file = |tag: &str, name: &str, data: &str| {
        let f = dir.path().join(format!("{tag}.yaml"));
        std::fs::write(
            &f,
            format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: t-hue\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: t-hue\ndata:\n{data}"),
        )
        .expect("write");
        f.display().to_string()
    };
    let owners = |name: &'static str| {
        let kc = kc.clone();
        async move {
            let (code, out, err) = kc
                .run(&[
                    "get", "cm", name, "-n", "t-hue", "--show-managed-fields", "-o",
                    "jsonpath={range .metadata.managedFields[*]}{.manager}/{.operation}={.fieldsV1.f:data}{\"\\n\"}{end}",
                ])
                .await;
            assert_eq!(code, 0, "{err}");
            out.lines().map(str::to_string).collect::<Vec<_>>()
        }
    };
    let data = |name: &'static str| {
        let kc = kc.clone();
        async move {
            kc.run(&["get", "cm", name, "-n", "t-hue", "-o", "jsonpath={.data}"])
                .await
                .1
        }
    };

    let mine = file("mine", "settings", "  tier: gold\n  zone: hn\n");
    let (code, out, err) = kc.run(&["apply", "--server-side", "-f", &mine]).await;
    assert!(
        code == 0 && out.contains("configmap/settings serverside-applied"),
        "{out} {err}"
    );
    let theirs = file("theirs", "settings", "  tier: silver\n");
    let (code, _, err) = kc
        .run(&[
            "apply",
            "--server-side",
            "--field-manager=ops",
            "-f",
            &theirs,
        ])
        .await;
    assert!(
        code == 1
            && err.contains("Apply failed with 1 conflict: conflict with \"kubectl\": .data.tier")
            && err.contains("--force-conflicts"),
        "{code} {err}"
    );
    let (code, _, err) = kc
        .run(&[
            "apply",
            "--server-side",
            "--field-manager=ops",
            "--force-conflicts",
            "-f",
            &theirs,
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(data("settings").await, r#"{"tier":"silver","zone":"hn"}"#);
    assert_eq!(
        owners("settings").await,
        [
            r#"kubectl/Apply={"f:zone":{}}"#,
            r#"ops/Apply={"f:tier":{}}"#
        ]
    );

    // An update takes the field it changes; applying over it is a conflict with it too.
    let (code, _, err) = kc
        .run(&[
            "patch",
            "cm",
            "settings",
            "-n",
            "t-hue",
            "--type=merge",
            "-p",
            r#"{"data":{"zone":"hcm"}}"#,
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kc.run(&["apply", "--server-side", "-f", &mine]).await;
    assert!(
        code == 1
            && err.contains("Apply failed with 2 conflicts")
            && err.contains("conflicts with \"kubectl-patch\" using v1:\n- .data.zone")
            && err.contains("conflicts with \"ops\":\n- .data.tier"),
        "{code} {err}"
    );

    // ops stops applying tier, which only ops owned: it goes.
    let none = file("none", "settings", "  owner: ops\n");
    let (code, _, err) = kc
        .run(&["apply", "--server-side", "--field-manager=ops", "-f", &none])
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(data("settings").await, r#"{"owner":"ops","zone":"hcm"}"#);

    // Client-side apply, then server-side apply of a changed file: no
    // conflict with what client-side apply recorded.
    let csa = file("csa", "legacy", "  a: \"1\"\n  b: \"1\"\n");
    let (code, out, err) = kc.run(&["apply", "-f", &csa]).await;
    assert!(
        code == 0 && out.contains("configmap/legacy created"),
        "{out} {err}"
    );
    let ssa = file("ssa", "legacy", "  a: \"2\"\n");
    let (code, out, err) = kc.run(&["apply", "--server-side", "-f", &ssa]).await;
    assert!(
        code == 0 && out.contains("configmap/legacy serverside-applied"),
        "{code} {out} {err}"
    );
    assert_eq!(data("legacy").await, r#"{"a":"2"}"#);
    sim.stop().await.expect("stop");
}
