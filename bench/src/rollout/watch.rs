//! Following the rollout through watches: which objects are Ready, and
//! which namespaces exist.

use super::*;

/// The Ready condition of every object of the rollout, by kind, namespace
/// and name, as the watches last saw it.
#[derive(Default)]
pub(super) struct Readiness {
    pub(super) objects: HashMap<(&'static str, String, String), Option<ndc_crds::Condition>>,
}

impl Readiness {
    /// Ready objects per namespace, and a line for each object not Ready.
    pub(super) fn tally(&self) -> (HashMap<String, usize>, Vec<String>) {
        let mut ready: HashMap<String, usize> = HashMap::new();
        let mut waiting = Vec::new();
        for ((kind, ns, name), c) in &self.objects {
            match c {
                Some(c) if c.status == "True" => *ready.entry(ns.clone()).or_default() += 1,
                c => waiting.push(format!(
                    "{kind}/{name} -n {ns}: {}",
                    c.as_ref()
                        .map(|c| format!("{} ({})", c.message, c.reason))
                        .unwrap_or_else(|| "no status yet".into())
                )),
            }
        }
        waiting.sort();
        (ready, waiting)
    }
}

/// Keeps `objects` current for one kind, from a watch.
pub(super) async fn follow<K>(
    kube: kube::Client,
    kind: &'static str,
    objects: Arc<Mutex<Readiness>>,
    conditions: fn(&K) -> Option<Vec<ndc_crds::Condition>>,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
{
    use kube::runtime::{watcher, WatchStreamExt};
    let stream = watcher(Api::<K>::all(kube), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    while let Some(o) = stream.next().await {
        let Ok(o) = o else { continue };
        let ready = conditions(&o).and_then(|c| c.into_iter().find(|c| c.type_ == "Ready"));
        objects
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .objects
            .insert(
                (kind, o.namespace().unwrap_or_default(), o.name_any()),
                ready,
            );
    }
}

/// The namespaces that exist, from a watch, and a wake-up when one appears.
#[derive(Default)]
pub(super) struct Namespaces {
    pub(super) names: Mutex<std::collections::HashSet<String>>,
    pub(super) appeared: tokio::sync::Notify,
}

impl Namespaces {
    pub(super) async fn follow(self: Arc<Self>, kube: kube::Client) {
        use kube::runtime::{watcher, WatchStreamExt};
        let stream = watcher(
            Api::<k8s_openapi::api::core::v1::Namespace>::all(kube),
            watcher::Config::default(),
        )
        .default_backoff()
        .applied_objects();
        futures::pin_mut!(stream);
        while let Some(o) = stream.next().await {
            let Ok(o) = o else { continue };
            self.names
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(o.name_any());
            self.appeared.notify_waiters();
        }
    }

    /// Waits until namespace `name` exists, at most until `until`.
    pub(super) async fn wait(&self, name: &str, until: Instant) -> Result<()> {
        loop {
            let appeared = self.appeared.notified();
            futures::pin_mut!(appeared);
            appeared.as_mut().enable();
            if self
                .names
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(name)
            {
                return Ok(());
            }
            if tokio::time::timeout_at(until.into(), appeared)
                .await
                .is_err()
            {
                bail!("namespace {name} did not appear");
            }
        }
    }
}
