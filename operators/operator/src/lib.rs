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

pub mod claims;
mod conditions;
pub mod quantity;
pub mod tenants;

use std::sync::Arc;

use ndc_api::Client as NdcClient;

/// What every controller shares.
pub struct Context {
    pub kube: kube::Client,
    pub ndc: NdcClient,
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

/// Runs every controller until `shutdown` resolves.
pub async fn run(
    kube: kube::Client,
    ndc: NdcClient,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use futures::FutureExt;
    let ctx = Arc::new(Context { kube, ndc });
    let stop: Stop = shutdown.boxed().shared();
    futures::future::join4(
        tenants::follow_control_plane(ctx.clone(), stop.clone()),
        tenants::controller(ctx.clone(), stop.clone()),
        claims::controller::<ndc_crds::ObjectBucket>(ctx.clone(), stop.clone()),
        claims::controller::<ndc_crds::Database>(ctx.clone(), stop.clone()),
    )
    .await;
    Ok(())
}
