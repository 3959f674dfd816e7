//! Objects as a watch last saw them, so that a reconcile does not ask the
//! API server for the same few objects each time: the tenant of a namespace
//! (read once per reconcile of every claim and subscription) and the shared
//! service a subscription names.
//!
//! An object the watch has not seen yet is read from the API server, so a
//! reconcile that closely follows an object's creation does not take it for
//! missing. A namespace seen without a tenant label is read again too:
//! only a label the watch has seen is answered from the cache.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Resource, ResourceExt};
use ndc_crds::{labels, SharedService};
use serde::de::DeserializeOwned;

use crate::{Error, Stop};

/// Cluster-scoped objects of one kind, as last watched.
#[derive(Clone)]
pub struct Cached<K>
where
    K: Resource + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    api: Api<K>,
}

impl<K> Cached<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    /// Starts the watch that fills the cache; it ends with `stop`.
    pub fn start(kube: kube::Client, stop: Stop) -> Self {
        let (store, writer) = reflector::store();
        let api: Api<K> = Api::all(kube);
        let stream = watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .applied_objects();
        tokio::spawn(async move {
            let drain = stream.for_each(|r| async move {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "cache watch: starting again");
                }
            });
            tokio::select! {
                _ = stop => {}
                _ = drain => {}
            }
        });
        Cached { store, api }
    }

    /// Whether the watch has delivered the object `name`.
    pub fn seen(&self, name: &str) -> bool {
        self.store.get(&ObjectRef::new(name)).is_some()
    }

    /// The object `name`, from the cache when `trust` accepts what the
    /// watch saw, else from the API server.
    async fn get(&self, name: &str, trust: impl Fn(&K) -> bool) -> Result<Option<Arc<K>>, Error> {
        if let Some(o) = self.store.get(&ObjectRef::new(name)).filter(|o| trust(o)) {
            return Ok(Some(o));
        }
        Ok(self.api.get_opt(name).await?.map(Arc::new))
    }
}

impl Cached<Namespace> {
    /// The tenant whose namespace `ns` is, if it is a tenant's.
    pub async fn tenant_of(&self, ns: &str) -> Result<Option<String>, Error> {
        let tenant = |n: &Namespace| n.labels().get(labels::TENANT).cloned();
        Ok(self
            .get(ns, |n| tenant(n).is_some())
            .await?
            .and_then(|n| tenant(&n)))
    }
}

impl Cached<SharedService> {
    /// The shared service `name`, if there is one.
    pub async fn service(&self, name: &str) -> Result<Option<Arc<SharedService>>, Error> {
        self.get(name, |_| true).await
    }
}
