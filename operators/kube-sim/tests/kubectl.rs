//! Real `kubectl` against the simulator: discovery, create from manifests,
//! get, conflicts and not-found, and a namespace deletion that takes its
//! contents with it.

mod kubectl_support;

use kubectl_support::*;
use std::process::{Command, Stdio};

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
