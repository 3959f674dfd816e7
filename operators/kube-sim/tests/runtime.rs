//! kube-runtime against the simulator across a forced `410 Gone`: the
//! simulator forgets its watch history (`Running::compact`) and drops every
//! open watch, so watchers must list again. A reflector's store and a
//! controller must still end up with every object's final state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{
    DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::controller::Action;
use kube::runtime::{reflector, watcher, Controller};
use kube::{Api, Client, Config, ResourceExt};
use serde_json::json;

async fn setup(ns: &str) -> (ndc_kube_sim::Running, Api<ConfigMap>) {
    let sim = ndc_kube_sim::Simulator::new().start().await.expect("serve");
    let client = Client::try_from(Config::new(sim.url().parse().expect("uri"))).expect("client");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("namespace");
    (sim, Api::namespaced(client, ns))
}

async fn create(cms: &Api<ConfigMap>, name: &str, v: &str) {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([("v".to_string(), v.to_string())].into()),
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm)
        .await
        .expect("create");
}

async fn set(cms: &Api<ConfigMap>, name: &str, v: &str) {
    cms.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"data": {"v": v}})),
    )
    .await
    .expect("update");
}

/// name → (resourceVersion, data.v)
type Seen = BTreeMap<String, (String, String)>;

fn summary<'a>(cms: impl IntoIterator<Item = &'a ConfigMap>) -> Seen {
    cms.into_iter()
        .map(|c| {
            let v = c
                .data
                .as_ref()
                .and_then(|d| d.get("v"))
                .cloned()
                .unwrap_or_default();
            (c.name_any(), (c.resource_version().unwrap_or_default(), v))
        })
        .collect()
}

/// Polls until `got` equals what the server lists now.
async fn converge(cms: &Api<ConfigMap>, got: impl Fn() -> Seen, what: &str) -> Seen {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let want = summary(&cms.list(&Default::default()).await.expect("list").items);
        let have = got();
        if have == want {
            return have;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: never caught up\n have {have:?}\n want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A watch from a resourceVersion before the compaction is `410 Expired`;
/// one from the current resourceVersion is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_before_a_compaction_is_gone() {
    let (sim, cms) = setup("t-hue").await;
    create(&cms, "a", "1").await;
    let old = cms
        .get("a")
        .await
        .expect("get")
        .resource_version()
        .expect("rv");
    set(&cms, "a", "2").await;
    sim.compact();
    let mut stream = cms
        .watch(&WatchParams::default(), &old)
        .await
        .expect("watch")
        .boxed();
    match stream.try_next().await.expect("an event") {
        Some(WatchEvent::Error(e)) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"), "{e:?}")
        }
        other => panic!("expected 410, got {other:?}"),
    }
    let now = cms.list(&Default::default()).await.expect("list");
    let current = now.metadata.resource_version.expect("rv");
    let mut stream = cms
        .watch(&WatchParams::default(), &current)
        .await
        .expect("watch")
        .boxed();
    set(&cms, "a", "3").await;
    let change = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.try_next().await {
                Ok(Some(WatchEvent::Bookmark(_))) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("in time");
    match change {
        Ok(Some(WatchEvent::Modified(cm))) => assert_eq!(summary([&cm])["a"].1, "3"),
        other => panic!("expected the change, got {other:?}"),
    }
    sim.stop().await.expect("stop");
}

/// A reflector's store follows every change: before, across and after
/// forced compactions that drop its watch with `410` and make it list again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_lists_again_after_410_and_misses_nothing() {
    watcher_across_410(watcher::Config::default()).await;
}

/// The same with streaming lists (`sendInitialEvents`): the initial objects
/// come through the watch, ended by a bookmark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_list_watcher_misses_nothing_either() {
    watcher_across_410(watcher::Config::default().streaming_lists()).await;
}

async fn watcher_across_410(config: watcher::Config) {
    let (sim, cms) = setup("t-hue").await;
    for n in ["a", "b", "c"] {
        create(&cms, n, "1").await;
    }
    let (inits, gone) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (i, g) = (inits.clone(), gone.clone());
    let events = watcher(cms.clone(), config).inspect(move |e| match e {
        Ok(watcher::Event::Init) => {
            i.fetch_add(1, Ordering::SeqCst);
        }
        Err(watcher::Error::WatchError(s)) if s.code == 410 => {
            g.fetch_add(1, Ordering::SeqCst);
        }
        _ => {}
    });
    let (store, writer) = reflector::store::<ConfigMap>();
    let mut reflected = reflector(writer, events).boxed();
    let driver = tokio::spawn(async move { while reflected.next().await.is_some() {} });
    let seen = || summary(store.state().iter().map(|c| c.as_ref()));

    let first = converge(&cms, seen, "the first list").await;
    assert_eq!(first.len(), 3);
    assert_eq!(inits.load(Ordering::SeqCst), 1);

    // Changes on both sides of a compaction.
    set(&cms, "a", "2").await;
    cms.delete("b", &DeleteParams::default())
        .await
        .expect("delete");
    sim.compact();
    create(&cms, "d", "1").await;
    set(&cms, "c", "2").await;
    until("a 410 and a second list", || {
        gone.load(Ordering::SeqCst) >= 1 && inits.load(Ordering::SeqCst) >= 2
    })
    .await;
    let after = converge(&cms, seen, "after the first compaction").await;
    let values: Vec<(&str, &str)> = after
        .iter()
        .map(|(k, (_, v))| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(values, [("a", "2"), ("c", "2"), ("d", "1")]);

    // Compacted while nothing happens, then changes: seen after the new list.
    // The watcher opens its watch a moment after its list is delivered; a
    // compaction before that leaves it nothing to miss (no 410), so compact
    // again until the open watch is told.
    let deadline = Instant::now() + Duration::from_secs(30);
    while gone.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "never: a second 410");
        sim.compact();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cms.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    create(&cms, "e", "1").await;
    set(&cms, "d", "2").await;
    let last = converge(&cms, seen, "after the second compaction").await;
    assert_eq!(
        last.keys().map(String::as_str).collect::<Vec<_>>(),
        ["c", "d", "e"]
    );
    assert!(inits.load(Ordering::SeqCst) >= 3);
    driver.abort();
    sim.stop().await.expect("stop");
}

#[derive(Debug)]
struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}

impl std::error::Error for Never {}

/// What the controller reconciled: per name, how often and the last state.
#[derive(Default)]
struct Reconciled(Mutex<BTreeMap<String, (usize, String, String)>>);

impl Reconciled {
    fn count(&self, name: &str) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map_or(0, |r| r.0)
    }

    /// name → (resourceVersion, data.v) last reconciled.
    fn last(&self) -> Seen {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, (_, rv, v))| (k.clone(), (rv.clone(), v.clone())))
            .collect()
    }
}

async fn reconcile(cm: Arc<ConfigMap>, ctx: Arc<Reconciled>) -> Result<Action, Never> {
    let (rv, v) = summary([cm.as_ref()])
        .into_values()
        .next()
        .unwrap_or_default();
    let mut seen = ctx.0.lock().unwrap_or_else(|e| e.into_inner());
    let entry = seen.entry(cm.name_any()).or_default();
    *entry = (entry.0 + 1, rv, v);
    Ok(Action::await_change())
}

/// A `Controller` reconciles every object, lists again after a forced
/// `410` (reconciling what it already knew), and reconciles what changes
/// around the compaction in its final state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_reconciles_every_object_across_410() {
    let (sim, cms) = setup("t-da-nang").await;
    for n in ["a", "b", "c"] {
        create(&cms, n, "1").await;
    }
    let ctx = Arc::new(Reconciled::default());
    let controller = Controller::new(cms.clone(), watcher::Config::default())
        .run(
            reconcile,
            |_, _: &Never, _| Action::await_change(),
            ctx.clone(),
        )
        .for_each(|_| async {});
    let driver = tokio::spawn(controller);

    until("a, b and c reconciled", || {
        ["a", "b", "c"].iter().all(|n| ctx.count(n) == 1)
    })
    .await;
    let c = ctx.clone();
    converge(&cms, move || c.last(), "the first reconciles").await;

    // Around a compaction: an update, a new object; then the watch is dropped.
    set(&cms, "a", "2").await;
    sim.compact();
    create(&cms, "d", "1").await;
    set(&cms, "b", "2").await;
    // Listing again re-reconciles what did not change too.
    until("c reconciled again after the new list", || {
        ctx.count("c") >= 2
    })
    .await;
    let c = ctx.clone();
    let last = converge(&cms, move || c.last(), "after the compaction").await;
    let values: Vec<(&str, &str)> = last
        .iter()
        .map(|(k, (_, v))| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(values, [("a", "2"), ("b", "2"), ("c", "1"), ("d", "1")]);
    // And it keeps watching after it listed again.
    create(&cms, "e", "1").await;
    set(&cms, "c", "3").await;
    let c = ctx.clone();
    let last = converge(&cms, move || c.last(), "after the new watch").await;
    assert_eq!(last["c"].1, "3");
    assert_eq!(ctx.count("e"), 1);
    driver.abort();
    sim.stop().await.expect("stop");
}
