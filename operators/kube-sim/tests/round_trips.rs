//! kube-rs `Api` round trips for every kind the simulator serves, typed with
//! k8s-openapi (so what the simulator sends must deserialize as the real
//! types): create, get, list with a label selector, replace, merge patch,
//! server-side apply, status patch where the kind has a status, delete.

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, LimitRange, Namespace, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::{Api, Client, Config, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

const NS: &str = "t-round-trip";

/// `have` has everything `want` has (objects compared key by key).
fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, v)| h.get(k).is_some_and(|hv| contains(hv, v))),
        _ => have == want,
    }
}

/// One kind's round trip. `body` is the object to create (with a name);
/// `status`, for kinds that have one, what to patch through `/status`.
async fn round_trip<K>(api: Api<K>, mut body: Value, status: Option<Value>)
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let kind = body["kind"].as_str().unwrap_or_default().to_string();
    let name = body["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let what = format!("{kind} {name}");
    body["metadata"]["labels"] = json!({"ndc.gov.vn/round-trip": "yes"});
    let typed: K = serde_json::from_value(body.clone()).expect(&what);

    let created = api
        .create(&PostParams::default(), &typed)
        .await
        .unwrap_or_else(|e| panic!("{what}: create: {e}"));
    let meta = created.meta();
    assert!(
        meta.uid.is_some()
            && meta.resource_version.is_some()
            && meta.creation_timestamp.is_some()
            && meta.generation == Some(1),
        "{what}: {meta:?}"
    );
    let as_sent = serde_json::to_value(&created).expect("json");
    for part in [
        "spec",
        "data",
        "rules",
        "roleRef",
        "subjects",
        "involvedObject",
        "regarding",
    ] {
        if let Some(sent) = body.get(part) {
            assert!(
                contains(&as_sent[part], sent),
                "{what}: {part} kept: {as_sent}"
            );
        }
    }

    let got = api
        .get(&name)
        .await
        .unwrap_or_else(|e| panic!("{what}: get: {e}"));
    assert_eq!(got.meta().uid, meta.uid, "{what}");
    let listed = api
        .list(&ListParams::default().labels("ndc.gov.vn/round-trip=yes"))
        .await
        .unwrap_or_else(|e| panic!("{what}: list: {e}"));
    assert!(
        listed.items.iter().any(|o| o.name_any() == name),
        "{what}: listed"
    );
    let none = api
        .list(&ListParams::default().labels("ndc.gov.vn/round-trip=no"))
        .await
        .unwrap_or_else(|e| panic!("{what}: list: {e}"));
    assert!(none.items.is_empty(), "{what}: the selector selects");

    // Replace from the copy just read, then again from the now stale copy.
    let mut changed = got.clone();
    changed
        .annotations_mut()
        .insert("ndc.gov.vn/replaced".into(), "yes".into());
    let replaced = api
        .replace(&name, &PostParams::default(), &changed)
        .await
        .unwrap_or_else(|e| panic!("{what}: replace: {e}"));
    assert_ne!(
        replaced.resource_version(),
        got.resource_version(),
        "{what}"
    );
    assert_eq!(
        replaced.meta().generation,
        Some(1),
        "{what}: no spec change"
    );
    match api.replace(&name, &PostParams::default(), &changed).await {
        Err(kube::Error::Api(ae)) => assert_eq!(ae.code, 409, "{what}: {ae:?}"),
        other => panic!("{what}: a stale replace must conflict: {other:?}"),
    }

    let patch = json!({"metadata": {"labels": {"ndc.gov.vn/patched": "yes"}}});
    let patched = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("{what}: merge patch: {e}"));
    assert_eq!(
        patched
            .labels()
            .get("ndc.gov.vn/patched")
            .map(String::as_str),
        Some("yes"),
        "{what}"
    );

    let applied = json!({"apiVersion": body["apiVersion"], "kind": kind, "metadata": {
        "name": name, "annotations": {"ndc.gov.vn/applied": "yes"}}});
    let applied = api
        .patch(
            &name,
            &PatchParams::apply("ndc-round-trip"),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: apply: {e}"));
    assert_eq!(
        applied
            .annotations()
            .get("ndc.gov.vn/applied")
            .map(String::as_str),
        Some("yes"),
        "{what}"
    );
    assert!(
        applied
            .meta()
            .managed_fields
            .iter()
            .flatten()
            .any(|f| f.manager.as_deref() == Some("ndc-round-trip")),
        "{what}: the field manager is recorded"
    );

    if let Some(status) = status {
        let before = applied.meta().generation;
        let after = api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: status patch: {e}"));
        let v = serde_json::to_value(&after).expect("json");
        assert!(contains(&v["status"], &status), "{what}: status {v}");
        assert_eq!(
            after.meta().generation,
            before,
            "{what}: status is no new generation"
        );
        let v = serde_json::to_value(api.get(&name).await.expect("get")).expect("json");
        assert!(contains(&v["status"], &status), "{what}: status kept {v}");
        // The main resource leaves the status alone.
        let after = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": null})),
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: patch: {e}"));
        let v = serde_json::to_value(&after).expect("json");
        assert!(
            contains(&v["status"], &status),
            "{what}: status untouched {v}"
        );
    }

    api.delete(&name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("{what}: delete: {e}"));
    match api.get(&name).await {
        Err(kube::Error::Api(ae)) => {
            assert_eq!((ae.code, ae.reason.as_str()), (404, "NotFound"), "{what}")
        }
        other => panic!("{what}: still there after delete: {other:?}"),
    }
}

fn crd(plural: &str, kind: &str) -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.ndc.gov.vn")},
        "spec": {"group": "ndc.gov.vn", "scope": "Namespaced",
            "names": {"plural": plural, "singular": kind.to_lowercase(), "kind": kind},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                "subresources": {"status": {}}}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_round_trips_through_kube_rs() {
    let sim = ndc_kube_sim::Simulator::new().start().await.expect("serve");
    let client = Client::try_from(Config::new(sim.url().parse().expect("uri"))).expect("client");
    let c = || client.clone();
    Api::<Namespace>::all(c())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).expect("ns"),
        )
        .await
        .expect("namespace");
    let pods = |app: &str| {
        json!({"selector": {"matchLabels": {"app": app}},
               "template": {"metadata": {"labels": {"app": app}},
                            "spec": {"containers": [{"name": app, "image": format!("{app}:1")}]}}})
    };
    let mut deploy = pods("web");
    deploy["replicas"] = json!(2);
    let mut sts = pods("db");
    sts["replicas"] = json!(2);
    sts["serviceName"] = json!("db");

    // core/v1
    round_trip::<Namespace>(
        Api::all(c()),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "t-other"}}),
        Some(
            json!({"conditions": [{"type": "NamespaceDeletionContentFailure", "status": "False"}]}),
        ),
    )
    .await;
    round_trip::<ResourceQuota>(
        Api::namespaced(c(), NS),
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "quota"},
               "spec": {"hard": {"requests.cpu": "8", "pods": "20"}}}),
        Some(json!({"hard": {"pods": "20"}, "used": {"pods": "3"}})),
    )
    .await;
    round_trip::<LimitRange>(
        Api::namespaced(c(), NS),
        json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "limits"},
               "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m"}}]}}),
        None,
    )
    .await;
    round_trip::<Secret>(
        Api::namespaced(c(), NS),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
               "type": "Opaque", "data": {"password": "c2VjcmV0"}}),
        None,
    )
    .await;
    round_trip::<ConfigMap>(
        Api::namespaced(c(), NS),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
               "data": {"tier": "gold"}}),
        None,
    )
    .await;
    round_trip::<Service>(
        Api::namespaced(c(), NS),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 443, "targetPort": 8443}]}}),
        Some(json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}})),
    )
    .await;
    round_trip::<ServiceAccount>(
        Api::namespaced(c(), NS),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "operator"}}),
        None,
    )
    .await;
    round_trip::<Event>(
        Api::namespaced(c(), NS),
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "settings.1"},
               "involvedObject": {"kind": "ConfigMap", "name": "settings", "namespace": NS},
               "reason": "Tested", "message": "round trip", "type": "Normal"}),
        None,
    )
    .await;
    // apps/v1
    round_trip::<Deployment>(
        Api::namespaced(c(), NS),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": deploy}),
        Some(json!({"readyReplicas": 1, "availableReplicas": 1})),
    )
    .await;
    round_trip::<StatefulSet>(
        Api::namespaced(c(), NS),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"}, "spec": sts}),
        Some(json!({"readyReplicas": 1, "replicas": 2})),
    )
    .await;
    // policy/v1, networking.k8s.io/v1
    round_trip::<PodDisruptionBudget>(
        Api::namespaced(c(), NS),
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "web"},
               "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
        Some(json!({"currentHealthy": 2, "desiredHealthy": 1, "disruptionsAllowed": 1, "expectedPods": 2})),
    )
    .await;
    round_trip::<NetworkPolicy>(
        Api::namespaced(c(), NS),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "default-deny"},
               "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
        None,
    )
    .await;
    // rbac.authorization.k8s.io/v1
    let rules = json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]);
    let subjects = json!([{"kind": "ServiceAccount", "name": "operator", "namespace": NS}]);
    round_trip::<Role>(
        Api::namespaced(c(), NS),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "reader"}, "rules": rules}),
        None,
    )
    .await;
    round_trip::<RoleBinding>(
        Api::namespaced(c(), NS),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "reader"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"}, "subjects": subjects}),
        None,
    )
    .await;
    round_trip::<ClusterRole>(
        Api::all(c()),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "ndc-reader"}, "rules": rules}),
        None,
    )
    .await;
    round_trip::<ClusterRoleBinding>(
        Api::all(c()),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "ndc-reader"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ndc-reader"}, "subjects": subjects}),
        None,
    )
    .await;
    // coordination.k8s.io/v1, events.k8s.io/v1
    round_trip::<Lease>(
        Api::namespaced(c(), NS),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "ndc-operator"},
               "spec": {"holderIdentity": "operator-0", "leaseDurationSeconds": 15}}),
        None,
    )
    .await;
    round_trip::<k8s_openapi::api::events::v1::Event>(
        Api::namespaced(c(), NS),
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "settings.2"},
               "eventTime": "2025-01-01T00:00:00.000000Z", "reportingController": "ndc.gov.vn/test",
               "reportingInstance": "test-0", "action": "Test", "reason": "Tested", "type": "Normal",
               "regarding": {"kind": "ConfigMap", "name": "settings", "namespace": NS}}),
        None,
    )
    .await;
    // apiextensions.k8s.io/v1, and a kind a CRD defines
    round_trip::<CustomResourceDefinition>(
        Api::all(c()),
        crd("databases", "Database"),
        Some(json!({"acceptedNames": {"kind": "Database", "plural": "databases"}, "storedVersions": ["v1alpha1"]})),
    )
    .await;
    Api::<CustomResourceDefinition>::all(c())
        .create(
            &PostParams::default(),
            &serde_json::from_value(crd("objectbuckets", "ObjectBucket")).expect("crd"),
        )
        .await
        .expect("crd");
    let gvk = GroupVersionKind::gvk("ndc.gov.vn", "v1alpha1", "ObjectBucket");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "objectbuckets");
    round_trip::<DynamicObject>(
        Api::namespaced_with(c(), NS, &resource),
        json!({"apiVersion": "ndc.gov.vn/v1alpha1", "kind": "ObjectBucket", "metadata": {"name": "archive"},
               "spec": {"sizeGi": 100}}),
        Some(json!({"phase": "Ready", "endpoint": "https://s3.ndc.gov.vn/archive"})),
    )
    .await;
    sim.stop().await.expect("stop");
}
