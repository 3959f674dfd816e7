//! ndc's Kubernetes operator. It follows the control plane and keeps the
//! cluster in line with it:
//!
//! - **tenants**: every control-plane tenant gets a `Tenant` mirror object
//!   and a namespace (tenant, level, branch and tree labels; Pod Security
//!   `restricted`) with a ResourceQuota, a LimitRange, a default-deny
//!   NetworkPolicy (DNS and traffic inside the namespace still allowed) and
//!   a RoleBinding for the tenant's admin group. Drift is repaired. A
//!   namespace is never deleted by the operator: when its tenant goes (a
//!   merge, say) the namespace stays, marked, with its data.
//! - **claims**: an `ObjectBucket` or `Database` in a tenant namespace
//!   becomes a claim in the control plane for that tenant; its status is
//!   mirrored, its credentials land in a Secret owned by it, and a
//!   finalizer makes deletion follow the claim's policy.
//! - **shared services**: a `SharedService` is registered in the
//!   catalogue and deployed once in `svc-<name>` (see [`services`]).
//! - **subscriptions**: a `ServiceSubscription` subscribes its tenant,
//!   provisions the per-tenant resources and binds them in a Secret (see
//!   [`subscriptions`]).
//!
//! This crate must not depend on rocksdb, the store or the server: it uses
//! the control plane's typed gRPC API only.

pub mod backoff;
pub mod cache;
pub mod claims;
mod conditions;
pub mod feed;
pub mod leader;
pub mod metrics;
pub mod quantity;
pub mod services;
pub mod subscriptions;
pub mod tenants;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use ndc_api::Client as NdcClient;

/// What every controller shares.
pub struct Context {
    pub kube: kube::Client,
    pub ndc: NdcClient,
    pub metrics: metrics::Metrics,
    /// Objects waiting on control-plane claims (see [`feed`]).
    pub claim_feed: feed::ClaimFeed,
    /// Namespaces and shared services as last watched (see [`cache`]).
    pub namespaces: cache::Cached<k8s_openapi::api::core::v1::Namespace>,
    pub services: cache::Cached<ndc_crds::SharedService>,
    /// Failed reconciles, for the wait before each retry.
    pub backoff: backoff::Backoffs,
}

impl Context {
    /// Runs one reconcile, counting it and its duration for `/metrics`.
    pub async fn observed<T>(
        &self,
        controller: &str,
        f: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let start = std::time::Instant::now();
        let r = f.await;
        self.metrics.observe(controller, start.elapsed(), &r);
        r
    }

    /// Runs one reconcile of `o` as [`Context::observed`] does; once it
    /// succeeds, the object's backoff is forgotten.
    pub async fn reconciled<K, T>(
        &self,
        controller: &str,
        o: &K,
        f: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error>
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let me = ObjectRef::from_obj(o).erase();
        let r = self.observed(controller, f).await;
        if r.is_ok() {
            self.backoff.forget(&me);
        }
        r
    }

    /// When to try `o` again after `e`: `first` after a first failure,
    /// longer after each failure in a row (see [`backoff`]). Waiting for
    /// the control plane is no failure: it is looked at again after `first`.
    pub fn retry<K>(&self, o: &K, e: &Error, first: Duration) -> Action
    where
        K: kube::Resource<DynamicType = ()>,
    {
        if matches!(e, Error::Waiting(_)) {
            return Action::requeue(first);
        }
        Action::requeue(self.backoff.failed(ObjectRef::from_obj(o).erase(), first))
    }
}

/// The namespace of a namespaced object; a clear error if it has none
/// (the API server always gives one, so this is a bug or a hand-made object).
pub(crate) fn namespace<K>(o: &K) -> Result<String, Error>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    use kube::ResourceExt;
    o.namespace().ok_or_else(|| {
        Error::Other(format!(
            "{} {} has no namespace, though its kind is namespaced",
            K::kind(&()),
            o.name_any()
        ))
    })
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Context")
    }
}

/// Why a reconcile failed (it is retried with a backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("control plane: {0}")]
    ControlPlane(String),
    /// Not a failure: waiting for the control plane (a deletion under way).
    #[error("waiting: {0}")]
    Waiting(String),
    #[error("{0}")]
    Other(String),
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        Error::ControlPlane(format!("{:?}: {}", s.code(), s.message()))
    }
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(e: kube::runtime::finalizer::Error<Error>) -> Self {
        use kube::runtime::finalizer::Error as F;
        match e {
            F::ApplyFailed(e) | F::CleanupFailed(e) => e,
            other => Error::Other(other.to_string()),
        }
    }
}

/// Resolves when the operator is asked to stop; cheap to clone.
pub type Stop = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

/// Runs `once` (a list-then-watch of the control plane) again a second
/// after each time it ends, until `stop`; `what` names it in the log.
pub(crate) async fn follow_until_stopped<F, Fut>(stop: Stop, what: &str, mut once: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let work = async {
        loop {
            if let Err(e) = once().await {
                tracing::warn!(error = %e, "following the control plane's {what} failed; starting again shortly");
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = work => {}
    }
}

/// How the operator runs beside its controllers.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Serve `/metrics`, `/healthz` and `/readyz` here.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Hold this Lease while working, so two replicas never both write.
    pub lease: Option<leader::LeaseConfig>,
    /// Where the counts go (a clone shares them, so a caller can read them
    /// while the operator runs).
    pub metrics: metrics::Metrics,
}

/// Runs every controller until `shutdown` resolves (no election, no
/// metrics endpoint: for tests and single replicas).
pub async fn run(
    kube: kube::Client,
    ndc: NdcClient,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with(kube, ndc, Options::default(), shutdown).await
}

/// Runs the operator: metrics and health endpoints if asked, and the
/// controllers, under a Lease if asked, until `shutdown` resolves.
pub async fn run_with(
    kube: kube::Client,
    ndc: NdcClient,
    options: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use futures::FutureExt;
    let metrics = options.metrics.clone();
    let stop: Stop = shutdown.boxed().shared();
    let ctx = Arc::new(Context {
        kube: kube.clone(),
        ndc,
        metrics: metrics.clone(),
        claim_feed: feed::ClaimFeed::default(),
        namespaces: cache::Cached::start(kube.clone(), stop.clone()),
        services: cache::Cached::start(kube.clone(), stop.clone()),
        backoff: backoff::Backoffs::default(),
    });
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let server = match options.metrics_addr {
        Some(addr) => {
            let (bound, handle) = metrics::serve(addr, metrics.clone(), ready_rx).await?;
            tracing::info!(%bound, "metrics and health endpoints listening");
            Some(handle)
        }
        None => None,
    };
    // Ready once Kubernetes answers (a standby is ready too).
    if kube.apiserver_version().await.is_ok() {
        ready_tx.send_replace(true);
    }
    let controllers = {
        let (ctx, stop) = (ctx.clone(), stop.clone());
        move || {
            let (ctx, stop) = (ctx.clone(), stop.clone());
            async move {
                let tasks: Vec<futures::future::BoxFuture<'static, ()>> = vec![
                    tenants::follow_control_plane(ctx.clone(), stop.clone()).boxed(),
                    feed::follow(ctx.clone(), stop.clone()).boxed(),
                    tenants::controller(ctx.clone(), stop.clone()).boxed(),
                    claims::controller::<ndc_crds::ObjectBucket>(ctx.clone(), stop.clone()).boxed(),
                    claims::controller::<ndc_crds::Database>(ctx.clone(), stop.clone()).boxed(),
                    services::controller(ctx.clone(), stop.clone()).boxed(),
                    subscriptions::controller(ctx.clone(), stop.clone()).boxed(),
                ];
                futures::future::join_all(tasks).await;
            }
        }
    };
    match options.lease {
        Some(lease) => {
            let (leading_tx, mut leading_rx) = tokio::sync::watch::channel(false);
            let m = metrics.clone();
            tokio::spawn(async move {
                while leading_rx.changed().await.is_ok() {
                    let leading = *leading_rx.borrow();
                    m.set_leader(leading);
                }
            });
            leader::lead_observed(kube, lease, stop.clone(), controllers, leading_tx).await?;
        }
        None => {
            metrics.set_leader(true);
            controllers().await;
        }
    }
    if let Some(h) = server {
        h.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespaced_object_without_a_namespace_is_a_clear_error() {
        let mut b = ndc_crds::ServiceSubscription::new(
            "bao-cao",
            ndc_crds::ServiceSubscriptionSpec {
                service: "bao-cao".into(),
            },
        );
        let e = namespace(&b).expect_err("no namespace");
        assert_eq!(
            e.to_string(),
            "ServiceSubscription bao-cao has no namespace, though its kind is namespaced"
        );
        b.metadata.namespace = Some("ha-noi".into());
        assert_eq!(namespace(&b).expect("a namespace"), "ha-noi");
    }
}
