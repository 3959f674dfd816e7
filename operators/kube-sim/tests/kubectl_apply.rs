//! Real `kubectl apply` against the simulator: without flags, a CRD and
//! its instances from one file (with `get -w` following them), and
//! server-side apply between field managers.

mod kubectl_support;

use kubectl_support::*;
use std::process::{Command, Stdio};

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
