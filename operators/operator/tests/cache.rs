//! The operator's cache of namespaces against the Kubernetes API simulator:
//! a tenant namespace the watch has seen is answered without a request; a
//! namespace not seen yet, or seen without a tenant label, is read from the
//! API server, so a fresh namespace is never taken for a missing one.

use std::time::{Duration, Instant};

use anyhow::Result;
use futures::FutureExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, Patch, PatchParams, PostParams};
use ndc_operator::cache::Cached;
use ndc_operator::Stop;

const DEADLINE: Duration = Duration::from_secs(20);

fn namespace(name: &str, tenant: Option<&str>) -> Namespace {
    let mut n: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name },
    }))
    .expect("namespace");
    if let Some(t) = tenant {
        n.metadata.labels = Some([(ndc_crds::labels::TENANT.to_string(), t.to_string())].into());
    }
    n
}

fn namespace_gets(sim: &ndc_kube_sim::Running) -> u64 {
    sim.simulator()
        .request_counts()
        .get("get namespaces")
        .copied()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_watched_tenant_namespace_is_answered_without_a_request() -> Result<()> {
    let sim = ndc_kube_sim::Simulator::new().start().await?;
    let kube = kube::Client::try_from(kube::Config::new(sim.url().parse()?))?;
    let nss: Api<Namespace> = Api::all(kube.clone());
    nss.create(&PostParams::default(), &namespace("hue", Some("hue")))
        .await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop: Stop = stop_rx.map(|_| ()).boxed().shared();
    let cache: Cached<Namespace> = Cached::start(kube.clone(), stop);

    // Created after the cache started, and asked for at once: whether the
    // watch has it yet or not, the answer is right.
    nss.create(
        &PostParams::default(),
        &namespace("da-nang", Some("da-nang")),
    )
    .await?;
    assert_eq!(
        cache.tenant_of("da-nang").await?.as_deref(),
        Some("da-nang")
    );
    assert_eq!(cache.tenant_of("nowhere").await?, None);

    // Once the watch has seen it, no more requests for it.
    let until = Instant::now() + DEADLINE;
    loop {
        let before = namespace_gets(&sim);
        assert_eq!(cache.tenant_of("hue").await?.as_deref(), Some("hue"));
        if namespace_gets(&sim) == before {
            break;
        }
        assert!(Instant::now() < until, "the watch never delivered hue");
        tokio::task::yield_now().await;
    }
    let before = namespace_gets(&sim);
    for _ in 0..50 {
        assert_eq!(cache.tenant_of("hue").await?.as_deref(), Some("hue"));
    }
    assert_eq!(namespace_gets(&sim), before, "answered from the cache");

    // A namespace the watch saw without the label is read again, so a
    // label added a moment ago is never missed.
    nss.create(&PostParams::default(), &namespace("plain", None))
        .await?;
    let until = Instant::now() + DEADLINE;
    while !cache.seen("plain") {
        assert!(Instant::now() < until, "the watch never delivered plain");
        tokio::task::yield_now().await;
    }
    let before = namespace_gets(&sim);
    assert_eq!(cache.tenant_of("plain").await?, None);
    assert_eq!(namespace_gets(&sim), before + 1, "read from the API server");
    nss.patch(
        "plain",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({
            "metadata": { "labels": { ndc_crds::labels::TENANT: "plain-tenant" } }
        })),
    )
    .await?;
    assert_eq!(
        cache.tenant_of("plain").await?.as_deref(),
        Some("plain-tenant")
    );
    let _ = stop_tx.send(());
    Ok(())
}
