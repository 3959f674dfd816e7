//! kube-rs, the client the operators use, against the simulator: typed
//! create, get, list with a selector, replace conflicts, and the runtime's
//! watcher.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Config};

fn meta(name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        labels: Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_talks_to_the_simulator() {
    let sim = ndc_kube_sim::Simulator::new().start().await.expect("serve");
    let addr = sim.addr;
    let config = Config::new(format!("http://{addr}").parse().expect("uri"));
    let client = Client::try_from(config).expect("client");

    let nss: Api<Namespace> = Api::all(client.clone());
    for (name, tier) in [
        ("t-ha-noi", "province"),
        ("t-hue", "province"),
        ("t-bo-y-te", "central"),
    ] {
        let ns = Namespace {
            metadata: meta(name, &[("ndc.gov.vn/level", tier)]),
            ..Default::default()
        };
        nss.create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
    }
    let got = nss.get("t-hue").await.expect("get");
    assert!(got.metadata.uid.is_some() && got.metadata.resource_version.is_some());
    let provinces = nss
        .list(&ListParams::default().labels("ndc.gov.vn/level=province"))
        .await
        .expect("list");
    let names: Vec<String> = provinces
        .items
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    assert_eq!(names, ["t-ha-noi", "t-hue"]);

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "t-ha-noi");
    // The runtime's watcher: list, then watch; it sees what is created next.
    let mut seen = watcher(cms.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();
    let mut cm = ConfigMap {
        metadata: meta("registry", &[]),
        data: Some([("tenants".to_string(), "ha-noi".to_string())].into()),
        ..Default::default()
    };
    let created = cms
        .create(&PostParams::default(), &cm)
        .await
        .expect("create configmap");
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), seen.next())
        .await
        .expect("the watcher saw it in time")
        .expect("stream open")
        .expect("no watch error");
    assert_eq!(first.metadata.name.as_deref(), Some("registry"));

    // A replace from a stale copy is a 409 Conflict, as kube-rs expects.
    cm.metadata.resource_version = Some("1".into());
    match cms.replace("registry", &PostParams::default(), &cm).await {
        Err(kube::Error::Api(ae)) => assert_eq!((ae.code, ae.reason.as_str()), (409, "Conflict")),
        other => panic!("expected a conflict, got {other:?}"),
    }
    cm.metadata.resource_version = created.metadata.resource_version.clone();
    cms.replace("registry", &PostParams::default(), &cm)
        .await
        .expect("replace from the current copy");

    nss.delete("t-ha-noi", &DeleteParams::default())
        .await
        .expect("delete namespace");
    match cms.get("registry").await {
        Err(kube::Error::Api(ae)) => assert_eq!(ae.code, 404),
        other => panic!("the namespace's config map should be gone, got {other:?}"),
    }

    sim.stop().await.expect("stop");
}

/// Patches as controllers use them: merge, JSON patch, server-side apply
/// (creating, then updating, with a field manager) and the status
/// subresource, which changes the status and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_and_the_status_subresource() {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::api::{Patch, PatchParams};
    use kube::ResourceExt;
    use serde_json::json;

    let sim = ndc_kube_sim::Simulator::new().start().await.expect("serve");
    let addr = sim.addr;
    let client = Client::try_from(Config::new(format!("http://{addr}").parse().expect("uri")))
        .expect("client");
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &Namespace {
            metadata: meta("svc-email", &[]),
            ..Default::default()
        },
    )
    .await
    .expect("namespace");
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "svc-email");
    let ssa = PatchParams::apply("ndc-operator").force();

    // Server-side apply creates it...
    let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "email"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "email"}},
                 "template": {"metadata": {"labels": {"app": "email"}}, "spec": {"containers": [{"name": "email", "image": "email:1"}]}}}});
    let d = deploys
        .patch("email", &ssa, &Patch::Apply(&applied))
        .await
        .expect("apply creates");
    assert_eq!(d.spec.replicas, Some(2));
    assert_eq!(d.metadata.generation, Some(1));
    let managers: Vec<String> = d
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| f.manager)
        .collect();
    assert_eq!(managers, ["ndc-operator"]);
    // ...and updates it: a spec change is a new generation.
    let mut again = applied.clone();
    again["spec"]["replicas"] = json!(3);
    let d = deploys
        .patch("email", &ssa, &Patch::Apply(&again))
        .await
        .expect("apply updates");
    assert_eq!((d.spec.replicas, d.metadata.generation), (Some(3), Some(2)));

    // Status goes through its subresource and does not bump the generation.
    let st = json!({"status": {"readyReplicas": 3, "observedGeneration": 2}});
    let d = deploys
        .patch_status("email", &PatchParams::default(), &Patch::Merge(&st))
        .await
        .expect("status");
    assert_eq!(d.status.as_ref().and_then(|s| s.ready_replicas), Some(3));
    assert_eq!(d.metadata.generation, Some(2));
    // A merge patch on the main resource leaves the status alone.
    let labels = json!({"metadata": {"labels": {"ndc.gov.vn/service": "email"}}, "status": {"readyReplicas": 0}});
    let d = deploys
        .patch("email", &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .expect("merge");
    assert_eq!(
        d.labels().get("ndc.gov.vn/service").map(String::as_str),
        Some("email")
    );
    assert_eq!(d.status.as_ref().and_then(|s| s.ready_replicas), Some(3));
    // JSON patch, with a test that fails: nothing changes.
    let ops: json_patch::Patch = serde_json::from_value(json!([{"op": "test", "path": "/spec/replicas", "value": 9}, {"op": "replace", "path": "/spec/replicas", "value": 1}])).expect("ops");
    let err = deploys
        .patch("email", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .expect_err("failed test");
    assert!(
        matches!(err, kube::Error::Api(ref ae) if ae.code == 422),
        "{err:?}"
    );
    assert_eq!(
        deploys.get("email").await.expect("get").spec.replicas,
        Some(3)
    );

    sim.stop().await.expect("stop");
}

/// Finalizers hold a deletion until they are cleared; owned objects go with
/// their owner; a namespace stays Terminating while a finalized object is
/// in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_owners_and_terminating_namespaces() {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::api::{Patch, PatchParams};
    use serde_json::json;

    let sim = ndc_kube_sim::Simulator::new().start().await.expect("serve");
    let addr = sim.addr;
    let client = Client::try_from(Config::new(format!("http://{addr}").parse().expect("uri")))
        .expect("client");
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &Namespace {
            metadata: meta("t-hue", &[]),
            ..Default::default()
        },
    )
    .await
    .expect("namespace");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "t-hue");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "t-hue");

    // A finalizer holds the deletion.
    let mut held = ConfigMap {
        metadata: meta("bucket", &[]),
        ..Default::default()
    };
    held.metadata.finalizers = Some(vec!["ndc.gov.vn/cleanup".into()]);
    let held = cms
        .create(&PostParams::default(), &held)
        .await
        .expect("create");
    // It owns a secret.
    let mut owned = Secret {
        metadata: meta("bucket-credentials", &[]),
        ..Default::default()
    };
    owned.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "bucket".into(),
        uid: held.metadata.uid.clone().expect("uid"),
        ..Default::default()
    }]);
    secrets
        .create(&PostParams::default(), &owned)
        .await
        .expect("secret");

    cms.delete("bucket", &DeleteParams::default())
        .await
        .expect("delete");
    let marked = cms.get("bucket").await.expect("still there");
    assert!(
        marked.metadata.deletion_timestamp.is_some(),
        "marked for deletion"
    );
    assert!(
        secrets.get("bucket-credentials").await.is_ok(),
        "its secret waits too"
    );

    // The namespace's deletion waits for it as well.
    nss.delete("t-hue", &DeleteParams::default())
        .await
        .expect("delete namespace");
    let ns = nss.get("t-hue").await.expect("terminating");
    assert_eq!(
        ns.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );

    // Clearing the finalizer completes everything: the object, what it owns, the namespace.
    // As on an API server, that update is not stored: a watcher sees only
    // DELETED, with the object as it was last stored (finalizer and all).
    let from = marked.metadata.resource_version.clone().expect("version");
    let mut events = cms
        .watch(&kube::api::WatchParams::default(), &from)
        .await
        .expect("watch")
        .boxed();
    let clear = json!({"metadata": {"finalizers": null}});
    cms.patch("bucket", &PatchParams::default(), &Patch::Merge(&clear))
        .await
        .expect("clear");
    // The first change it sees (a bookmark only marks a version).
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match events.try_next().await.expect("a watch event") {
                Some(kube::api::WatchEvent::Bookmark(_)) => continue,
                Some(e) => break e,
                None => panic!("the watch ended with no change"),
            }
        }
    })
    .await
    .expect("an event");
    match first {
        kube::api::WatchEvent::Deleted(cm) => assert_eq!(
            cm.metadata.finalizers,
            Some(vec!["ndc.gov.vn/cleanup".to_string()]),
            "{cm:?}"
        ),
        other => panic!("expected DELETED first, got {other:?}"),
    }
    for gone in [
        cms.get("bucket").await.err(),
        secrets.get("bucket-credentials").await.err(),
    ] {
        assert!(
            matches!(gone, Some(kube::Error::Api(ref ae)) if ae.code == 404),
            "{gone:?}"
        );
    }
    assert!(matches!(nss.get("t-hue").await, Err(kube::Error::Api(ref ae)) if ae.code == 404));

    sim.stop().await.expect("stop");
}

/// The simulated controllers: a Service gets a cluster IP that stays; a
/// Deployment reports its replicas ready for its generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_controllers() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Patch, PatchParams};
    use serde_json::json;

    let sim = ndc_kube_sim::Simulator::new().start().await.expect("serve");
    let addr = sim.addr;
    let client = Client::try_from(Config::new(format!("http://{addr}").parse().expect("uri")))
        .expect("client");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: meta("svc-portal", &[]),
                ..Default::default()
            },
        )
        .await
        .expect("namespace");
    let svcs: Api<Service> = Api::namespaced(client.clone(), "svc-portal");
    let svc = svcs
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "portal"}, "spec": {"ports": [{"port": 443}]}}),
            )
            .expect("svc"),
        )
        .await
        .expect("create service");
    let ip = svc.spec.and_then(|s| s.cluster_ip).expect("a cluster IP");
    assert!(ip.starts_with("10.96."), "{ip}");
    let relabel = json!({"metadata": {"labels": {"tier": "web"}}});
    let svc = svcs
        .patch("portal", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .expect("patch");
    assert_eq!(
        svc.spec.and_then(|s| s.cluster_ip).as_deref(),
        Some(ip.as_str()),
        "the IP stays"
    );

    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "svc-portal");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "portal"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "portal"}},
                 "template": {"metadata": {"labels": {"app": "portal"}}, "spec": {"containers": [{"name": "portal", "image": "portal:1"}]}}}}))
    .expect("deployment");
    let d = deploys
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
    let st = d.status.expect("status");
    assert_eq!(
        (st.ready_replicas, st.observed_generation),
        (Some(3), Some(1))
    );
    sim.stop().await.expect("stop");
}

/// With a ready delay, a new Deployment or StatefulSet generation reports
/// no replicas ready until the delay has passed, then all of them; the
/// runtime's `await_condition` sees the change through a watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_become_ready_after_the_delay() {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use kube::api::{Patch, PatchParams};
    use kube::runtime::wait::{await_condition, conditions};
    use serde_json::json;
    use std::time::{Duration, Instant};

    let delay = Duration::from_millis(700);
    let sim = ndc_kube_sim::Simulator::new()
        .ready_delay(delay)
        .start()
        .await
        .expect("serve");
    let client = Client::try_from(Config::new(sim.url().parse().expect("uri"))).expect("client");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: meta("svc-mail", &[]),
                ..Default::default()
            },
        )
        .await
        .expect("namespace");
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "svc-mail");
    let spec = |replicas: i32| {
        json!({"replicas": replicas, "selector": {"matchLabels": {"app": "mail"}},
               "template": {"metadata": {"labels": {"app": "mail"}}, "spec": {"containers": [{"name": "mail", "image": "mail:1"}]}}})
    };
    let ready = |d: &Deployment| d.status.as_ref().and_then(|s| s.ready_replicas);

    let started = Instant::now();
    let d: Deployment =
        serde_json::from_value(json!({"metadata": {"name": "mail"}, "spec": spec(3)}))
            .expect("deployment");
    let d = deploys
        .create(&PostParams::default(), &d)
        .await
        .expect("create");
    let st = d.status.clone().expect("a status at once");
    assert_eq!(
        (
            st.observed_generation,
            st.updated_replicas,
            st.ready_replicas,
            st.unavailable_replicas
        ),
        (Some(1), Some(3), None, Some(3)),
        "observed, updated, none ready: {st:?}"
    );
    let got = deploys.get("mail").await.expect("get");
    if started.elapsed() < delay {
        assert_eq!(ready(&got), None, "not ready before the delay");
    }
    let done = tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(
            deploys.clone(),
            "mail",
            conditions::is_deployment_completed(),
        ),
    )
    .await
    .expect("ready in time")
    .expect("watch")
    .expect("still there");
    assert!(started.elapsed() >= delay, "ready only after the delay");
    assert_eq!(ready(&done), Some(3));
    assert_eq!(
        done.status.as_ref().and_then(|s| s.available_replicas),
        Some(3)
    );

    // A label change is not a new generation: it stays ready.
    let relabel = json!({"metadata": {"labels": {"tier": "mail"}}});
    let d = deploys
        .patch("mail", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .expect("relabel");
    assert_eq!(ready(&d), Some(3));
    // A spec change is a new rollout: none ready for generation 2, then all.
    let rescale = json!({"spec": {"replicas": 5}});
    let rolled = Instant::now();
    let d = deploys
        .patch("mail", &PatchParams::default(), &Patch::Merge(&rescale))
        .await
        .expect("rescale");
    let st = d.status.expect("status");
    assert_eq!((st.observed_generation, st.ready_replicas), (Some(2), None));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let d = deploys.get("mail").await.expect("get");
        if ready(&d) == Some(5) {
            assert!(rolled.elapsed() >= delay);
            assert_eq!(d.status.and_then(|s| s.observed_generation), Some(2));
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {:?}", d.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // StatefulSets likewise, with the defaults `kubectl rollout status` needs.
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), "svc-mail");
    let started = Instant::now();
    let s: StatefulSet = serde_json::from_value(
        json!({"metadata": {"name": "db"}, "spec": {"serviceName": "db", "replicas": 2,
               "selector": {"matchLabels": {"app": "db"}},
               "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "db:1"}]}}}}),
    )
    .expect("statefulset");
    let s = sets
        .create(&PostParams::default(), &s)
        .await
        .expect("create statefulset");
    assert_eq!(
        s.spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref()),
        Some("RollingUpdate")
    );
    assert_eq!(s.status.as_ref().and_then(|s| s.ready_replicas), Some(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = sets.get("db").await.expect("get");
        let st = s.status.clone().expect("status");
        if st.ready_replicas == Some(2) {
            assert!(started.elapsed() >= delay);
            assert_eq!(st.current_revision, st.update_revision);
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {st:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sim.stop().await.expect("stop");
}

/// Set-based label selectors as kube-rs builds them: from `Expression`s and
/// from a `LabelSelector` with `matchExpressions` (as in a NetworkPolicy or
/// a PodDisruptionBudget), for a list and for the runtime's watcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_based_selectors() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
    use kube::core::{Expression, Selector};

    let sim = ndc_kube_sim::Simulator::new().start().await.expect("serve");
    let client = Client::try_from(Config::new(sim.url().parse().expect("uri"))).expect("client");
    let nss: Api<Namespace> = Api::all(client.clone());
    for (name, labels) in [
        ("t-a", &[("tier", "gold"), ("zone", "hn")][..]),
        ("t-b", &[("tier", "silver")]),
        ("t-c", &[("tier", "bronze"), ("zone", "hcm")]),
        ("t-d", &[]),
    ] {
        nss.create(
            &PostParams::default(),
            &Namespace {
                metadata: meta(name, labels),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    }
    let names = |l: kube::core::ObjectList<Namespace>| {
        l.items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect::<Vec<_>>()
    };
    let cases: Vec<(Selector, &[&str])> = vec![
        (
            Expression::In("tier".into(), ["gold".into(), "silver".into()].into()).into(),
            &["t-a", "t-b"],
        ),
        (
            Expression::NotIn("tier".into(), ["gold".into()].into()).into(),
            &["t-b", "t-c", "t-d"],
        ),
        (Expression::Exists("zone".into()).into(), &["t-a", "t-c"]),
        (
            Expression::DoesNotExist("zone".into()).into(),
            &["t-b", "t-d"],
        ),
        (
            [
                Expression::NotIn("tier".into(), ["silver".into()].into()),
                Expression::DoesNotExist("zone".into()),
            ]
            .into_iter()
            .collect(),
            &["t-d"],
        ),
        (
            Selector::try_from(LabelSelector {
                match_labels: Some([("zone".to_string(), "hcm".to_string())].into()),
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["bronze".into(), "gold".into()]),
                }]),
            })
            .expect("selector"),
            &["t-c"],
        ),
    ];
    for (selector, want) in &cases {
        let got = names(
            nss.list(&ListParams::default().labels_from(selector))
                .await
                .expect("list"),
        );
        assert_eq!(&got, want, "{selector}");
    }
    // The watcher, with a set-based selector, sees only what it selects.
    let selector: Selector = Expression::In("tier".into(), ["platinum".into()].into()).into();
    let mut seen = watcher(
        nss.clone(),
        watcher::Config::default().labels_from(&selector),
    )
    .applied_objects()
    .boxed();
    for (name, tier) in [("t-e", "silver"), ("t-f", "platinum")] {
        nss.create(
            &PostParams::default(),
            &Namespace {
                metadata: meta(name, &[("tier", tier)]),
                ..Default::default()
            },
        )
        .await
        .expect("create");
    }
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), seen.next())
        .await
        .expect("in time")
        .expect("open")
        .expect("no error");
    assert_eq!(first.metadata.name.as_deref(), Some("t-f"));
    sim.stop().await.expect("stop");
}

/// Server-side apply between field managers through kube-rs: without
/// `force` a field another manager set is a 409 naming it, with `force` it
/// changes hands; status applies are owned apart; an apply without a field
/// manager is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_field_managers() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Patch, PatchParams};
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let sim = ndc_kube_sim::Simulator::new().start().await.expect("serve");
    let client = Client::try_from(Config::new(sim.url().parse().expect("uri"))).expect("client");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: meta("svc-web", &[]),
                ..Default::default()
            },
        )
        .await
        .expect("namespace");
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "svc-web");
    let desired = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}});
    let operator = PatchParams::apply("ndc-operator");
    deploys
        .patch("web", &operator, &Patch::Apply(&desired))
        .await
        .expect("apply creates");
    // Another client scales it (an update, with its own manager name).
    let scaler = PatchParams {
        field_manager: Some("autoscaler".into()),
        ..Default::default()
    };
    deploys
        .patch(
            "web",
            &scaler,
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("scale");
    let owners = |d: &Deployment| {
        d.metadata
            .managed_fields
            .iter()
            .flatten()
            .map(|f| {
                (
                    f.manager.clone().unwrap_or_default(),
                    f.operation.clone().unwrap_or_default(),
                )
            })
            .collect::<Vec<_>>()
    };

    match deploys
        .patch("web", &operator, &Patch::Apply(&desired))
        .await
    {
        Err(kube::Error::Api(ae)) => {
            assert_eq!((ae.code, ae.reason.as_str()), (409, "Conflict"));
            assert_eq!(
                ae.message,
                "Apply failed with 1 conflict: conflict with \"autoscaler\" using apps/v1: .spec.replicas"
            );
            let cause = &ae.details.as_ref().expect("details").causes[0];
            assert_eq!(
                (cause.reason.as_str(), cause.field.as_str()),
                ("FieldManagerConflict", ".spec.replicas")
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Applying the value it has now is no conflict: the field is shared.
    let mut same = desired.clone();
    same["spec"]["replicas"] = json!(5);
    deploys
        .patch("web", &operator, &Patch::Apply(&same))
        .await
        .expect("shared");
    // Forced, it changes hands: the autoscaler owns nothing any more.
    let d = deploys
        .patch("web", &operator.clone().force(), &Patch::Apply(&desired))
        .await
        .expect("forced");
    assert_eq!(d.spec.replicas, Some(2));
    assert_eq!(
        owners(&d),
        [("ndc-operator".to_string(), "Apply".to_string())]
    );
    // Dropping a label from the applied object removes it.
    let mut fewer = desired.clone();
    fewer["metadata"]["labels"] = json!({});
    let d = deploys
        .patch("web", &operator.clone().force(), &Patch::Apply(&fewer))
        .await
        .expect("apply");
    assert!(d.metadata.labels.unwrap_or_default().is_empty());

    // Status applies are owned through the status subresource.
    let svcs: Api<Service> = Api::namespaced(client.clone(), "svc-web");
    svcs.patch(
        "web",
        &operator,
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}})),
    )
    .await
    .expect("service");
    let lb = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}});
    let s = svcs
        .patch_status(
            "web",
            &PatchParams::apply("lb-controller"),
            &Patch::Apply(&lb),
        )
        .await
        .expect("status apply");
    let entry = s
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|f| f.manager.as_deref() == Some("lb-controller"))
        .expect("lb-controller recorded");
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    assert_eq!(
        s.status
            .and_then(|st| st.load_balancer)
            .and_then(|l| l.ingress)
            .map(|i| i.len()),
        Some(1)
    );

    // kube-rs will not send an apply without a field manager; the server refuses one too.
    let body = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web"}}"#;
    let request = format!(
        "PATCH /api/v1/namespaces/svc-web/services/web HTTP/1.1\r\nHost: sim\r\nContent-Type: application/apply-patch+yaml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(sim.addr)
        .await
        .expect("connect");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    assert!(
        out.starts_with("HTTP/1.1 422") && out.contains("fieldManager: Required value"),
        "{out}"
    );
    sim.stop().await.expect("stop");
}
