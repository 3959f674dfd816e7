//! Claims: an `ObjectBucket` or `Database` in a tenant namespace becomes a
//! claim in the control plane for that tenant. Its status is mirrored, its
//! credentials are delivered in a Secret it owns, and a finalizer makes its
//! deletion follow the claim's policy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use ndc_api::claims::claims_client::ClaimsClient;
use ndc_api::claims::{self as pb};
use ndc_crds::{labels, ClaimStatus, Database, DeletionPolicy, ObjectBucket};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::Code;
use tracing::warn;

use crate::feed::{ClaimFeed, Waiter};
use crate::tenants::MANAGER;
use crate::{conditions, quantity, Context, Error, Stop};

pub const FINALIZER: &str = "ndc.gov.vn/claim";
/// How long an object waiting on its claim waits for the claim feed before
/// it asks the control plane itself.
pub(crate) const WAIT_FALLBACK: Duration = Duration::from_secs(5);

/// What differs between the two claim kinds.
pub trait ClaimObject:
    Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// `bucket` or `database`, as the control plane names it.
    const KIND: &'static str;
    fn spec_pb(&self) -> Result<pb::create_claim_request::Spec, String>;
    fn policy(&self) -> DeletionPolicy;
    fn purge(&self) -> bool;
    fn claim_status(&self) -> Option<&ClaimStatus>;
    /// How the claim feed names an object of this kind.
    fn waiter(r: ObjectRef<Self>) -> Waiter;
    /// The feed's triggers for this kind's controller.
    fn triggers(feed: &ClaimFeed) -> BoxStream<'static, ObjectRef<Self>>;
}

impl ClaimObject for ObjectBucket {
    const KIND: &'static str = "bucket";
    fn waiter(r: ObjectRef<Self>) -> Waiter {
        Waiter::Bucket(r)
    }
    fn triggers(feed: &ClaimFeed) -> BoxStream<'static, ObjectRef<Self>> {
        feed.bucket_triggers().boxed()
    }
    fn spec_pb(&self) -> Result<pb::create_claim_request::Spec, String> {
        Ok(pb::create_claim_request::Spec::Bucket(pb::BucketSpec {
            size_bytes: quantity::bytes(&self.spec.size)?,
            versioning: self.spec.versioning,
            retention_days: self.spec.retention_days.unwrap_or(0),
        }))
    }
    fn policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy
    }
    fn purge(&self) -> bool {
        self.spec.purge_on_delete
    }
    fn claim_status(&self) -> Option<&ClaimStatus> {
        self.status.as_ref()
    }
}

impl ClaimObject for Database {
    const KIND: &'static str = "database";
    fn waiter(r: ObjectRef<Self>) -> Waiter {
        Waiter::Database(r)
    }
    fn triggers(feed: &ClaimFeed) -> BoxStream<'static, ObjectRef<Self>> {
        feed.database_triggers().boxed()
    }
    fn spec_pb(&self) -> Result<pb::create_claim_request::Spec, String> {
        Ok(pb::create_claim_request::Spec::Database(pb::DatabaseSpec {
            size_bytes: quantity::bytes(&self.spec.size)?,
            connection_limit: self.spec.connection_limit,
        }))
    }
    fn policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy
    }
    fn purge(&self) -> bool {
        false
    }
    fn claim_status(&self) -> Option<&ClaimStatus> {
        self.status.as_ref()
    }
}

fn policy_str(p: DeletionPolicy) -> &'static str {
    match p {
        DeletionPolicy::Retain => "retain",
        DeletionPolicy::Delete => "delete",
    }
}

/// The Secret holding a claim's credentials.
pub fn secret_name<K: ClaimObject>(o: &K) -> String {
    format!("{}-{}-credentials", o.name_any(), K::KIND)
}

/// The field manager of the claims' status.
const STATUS_MANAGER: &str = "ndc-operator/claims";

async fn set_status<K: ClaimObject>(
    api: &Api<K>,
    o: &K,
    mut status: ClaimStatus,
) -> Result<(), Error> {
    status.observed_generation = o.meta().generation.unwrap_or(0);
    conditions::set_status(api, o, o.claim_status(), status, STATUS_MANAGER).await
}

async fn get_claim(ctx: &Context, r: pb::ClaimRef) -> Result<Option<pb::Claim>, Error> {
    let c = &ctx.ndc;
    match c
        .call(|ch| {
            let (a, r) = (c.auth(), r.clone());
            async move { ClaimsClient::with_interceptor(ch, a).get(r).await }
        })
        .await
    {
        Ok(resp) => Ok(resp.into_inner().claim),
        Err(s) if s.code() == Code::NotFound => Ok(None),
        Err(s) => Err(s.into()),
    }
}

/// Creates the claim for `o`; `Err` with what to do next when its spec is
/// invalid or the control plane refuses it (its status says why).
async fn create<K: ClaimObject>(
    ctx: &Context,
    api: &Api<K>,
    o: &K,
    tenant: &str,
) -> Result<Result<pb::Claim, Action>, Error> {
    let name = o.name_any();
    let generation = o.meta().generation;
    let spec = match o.spec_pb() {
        Ok(s) => s,
        Err(m) => {
            let status = ClaimStatus {
                phase: "Failed".into(),
                conditions: vec![conditions::not_ready("InvalidSpec", m, generation)],
                ..ClaimStatus::default()
            };
            set_status(api, o, status).await?;
            return Ok(Err(Action::await_change()));
        }
    };
    let req = pb::CreateClaimRequest {
        tenant: tenant.to_string(),
        name,
        spec: Some(spec),
        deletion_policy: policy_str(o.policy()).into(),
    };
    let c = &ctx.ndc;
    match c
        .write(|ch, a| {
            let req = req.clone();
            async move { ClaimsClient::with_interceptor(ch, a).create(req).await }
        })
        .await
    {
        Ok(r) => Ok(Ok(r.into_inner().claim.unwrap_or_default())),
        Err(s) if ndc_api::is_refusal(&s) => {
            let status = ClaimStatus {
                phase: "Failed".into(),
                conditions: vec![conditions::not_ready(
                    "Refused",
                    format!(
                        "the control plane refused this {} for tenant {tenant}: {}; change the spec or ask for more quota (ndc tenant update)",
                        K::KIND,
                        s.message()
                    ),
                    generation,
                )],
                ..ClaimStatus::default()
            };
            set_status(api, o, status).await?;
            // Quota may be raised meanwhile: look again later.
            Ok(Err(Action::requeue(Duration::from_secs(30))))
        }
        Err(s) => Err(s.into()),
    }
}

async fn apply<K: ClaimObject>(o: Arc<K>, ctx: &Context) -> Result<Action, Error> {
    let ns = crate::namespace(&*o)?;
    let name = o.name_any();
    let api: Api<K> = Api::namespaced(ctx.kube.clone(), &ns);
    let generation = o.meta().generation;
    let Some(tenant) = ctx.namespaces.tenant_of(&ns).await? else {
        let status = ClaimStatus {
            phase: "Failed".into(),
            conditions: vec![conditions::not_ready(
                "NotInTenantNamespace",
                format!(
                    "namespace {ns} belongs to no tenant: create this {} in your tenant's namespace (the one labelled {}=<tenant>)",
                    K::KIND,
                    labels::TENANT
                ),
                generation,
            )],
            ..ClaimStatus::default()
        };
        set_status(&api, &o, status).await?;
        return Ok(Action::await_change());
    };
    let by_name = pb::ClaimRef {
        uid: String::new(),
        tenant: tenant.clone(),
        kind: K::KIND.into(),
        name: name.clone(),
    };
    // Registered before the claim is read, so no change is missed between.
    ctx.claim_feed
        .wait(&tenant, K::KIND, &name, K::waiter(ObjectRef::from_obj(&*o)));
    let claim = match get_claim(ctx, by_name.clone()).await? {
        Some(c) => c,
        None => match create(ctx, &api, &*o, &tenant).await? {
            Ok(c) => c,
            Err(action) => return Ok(action),
        },
    };
    let ready = claim.ready;
    let message = claim
        .conditions
        .iter()
        .find(|k| k.r#type == "Ready")
        .map(|k| k.message.clone())
        .unwrap_or_else(|| format!("the control plane is provisioning this {}", K::KIND));
    let mut status = ClaimStatus {
        phase: claim.phase.clone(),
        claim_uid: Some(claim.uid.clone()),
        external_name: Some(claim.external_name.clone()),
        endpoint: (!claim.endpoint.is_empty()).then(|| claim.endpoint.clone()),
        ..ClaimStatus::default()
    };
    if ready {
        deliver_secret(ctx, &*o, &claim).await?;
        status.secret_name = Some(secret_name(&*o));
        status.conditions = vec![conditions::ready("Provisioned", message, generation)];
    } else {
        let reason = if claim.phase == "Failed" {
            "ProvisioningFailed"
        } else {
            "Provisioning"
        };
        status.conditions = vec![conditions::not_ready(reason, message, generation)];
    }
    set_status(&api, &o, status).await?;
    // Until it is ready, a change of the claim reconciles this object at
    // once; the timer is only a safety net.
    if ready {
        ctx.claim_feed.done(&tenant, K::KIND, &name);
        Ok(Action::requeue(Duration::from_secs(300)))
    } else {
        Ok(Action::requeue(WAIT_FALLBACK))
    }
}

/// Writes the credentials Secret, owned by the claim object.
async fn deliver_secret<K: ClaimObject>(
    ctx: &Context,
    o: &K,
    claim: &pb::Claim,
) -> Result<(), Error> {
    let c = &ctx.ndc;
    let r = pb::ClaimRef {
        uid: claim.uid.clone(),
        ..Default::default()
    };
    let creds = c
        .call(|ch| {
            let (a, r) = (c.auth(), r.clone());
            async move { ClaimsClient::with_interceptor(ch, a).credentials(r).await }
        })
        .await?
        .into_inner();
    let ns = crate::namespace(o)?;
    let name = secret_name(o);
    let data: BTreeMap<String, String> = creds.values.into_iter().collect();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: Some(BTreeMap::from([(
                labels::MANAGED_BY.to_string(),
                labels::OPERATOR.to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                "ndc.gov.vn/credentials-generation".to_string(),
                creds.generation.to_string(),
            )])),
            owner_references: o.controller_owner_ref(&()).map(|r| vec![r]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        string_data: Some(data),
        ..Default::default()
    };
    Api::<Secret>::namespaced(ctx.kube.clone(), &ns)
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

async fn cleanup<K: ClaimObject>(o: Arc<K>, ctx: &Context) -> Result<Action, Error> {
    let ns = crate::namespace(&*o)?;
    let api: Api<K> = Api::namespaced(ctx.kube.clone(), &ns);
    let Some(uid) = o.claim_status().and_then(|s| s.claim_uid.clone()) else {
        // Never became a claim: nothing outside to handle.
        return Ok(Action::await_change());
    };
    let r = pb::ClaimRef {
        uid: uid.clone(),
        ..Default::default()
    };
    let Some(claim) = get_claim(ctx, r.clone()).await? else {
        // Handled by its policy and forgotten: the finalizer can go.
        return Ok(Action::await_change());
    };
    if !claim.deleting || (o.purge() && !claim.purge) {
        let req = pb::DeleteClaimRequest {
            claim: Some(r),
            purge: o.purge(),
        };
        let c = &ctx.ndc;
        let res = c
            .write(|ch, a| {
                let req = req.clone();
                async move { ClaimsClient::with_interceptor(ch, a).delete(req).await }
            })
            .await;
        if let Err(s) = res {
            if s.code() == Code::NotFound {
                return Ok(Action::await_change());
            }
            if ndc_api::is_refusal(&s) {
                let status = ClaimStatus {
                    phase: "Deleting".into(),
                    claim_uid: Some(uid),
                    conditions: vec![conditions::not_ready(
                        "DeletionRefused",
                        format!(
                            "{}; set spec.purgeOnDelete to delete the objects too, or remove the finalizer {FINALIZER} to keep it without ndc",
                            s.message()
                        ),
                        o.meta().generation,
                    )],
                    ..o.claim_status().cloned().unwrap_or_default()
                };
                set_status(&api, &o, status).await?;
                return Err(Error::ControlPlane(s.message().to_string()));
            }
            return Err(s.into());
        }
    }
    // Wait for the provisioner to handle it; the finalizer stays until then.
    Err(Error::Waiting(format!(
        "{} {} is being deleted by the control plane (policy {})",
        K::KIND,
        o.name_any(),
        claim.deletion_policy
    )))
}

/// How long after a first failure a claim object is tried again.
const FIRST_RETRY: Duration = Duration::from_millis(500);

#[tracing::instrument(skip_all, fields(kind = K::KIND, name = %o.name_any(), namespace = o.meta().namespace.as_deref()))]
async fn reconcile<K: ClaimObject>(o: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let me = o.clone();
    let work = async {
        let ns = crate::namespace(&*o)?;
        let api: Api<K> = Api::namespaced(ctx.kube.clone(), &ns);
        finalizer(&api, FINALIZER, o, |event| async {
            match event {
                Event::Apply(o) => apply(o, &ctx).await,
                Event::Cleanup(o) => {
                    let me = K::waiter(ObjectRef::from_obj(&*o));
                    ctx.claim_feed.cleanup(me, cleanup(o, &ctx)).await
                }
            }
        })
        .await
        .map_err(Error::from)
    };
    ctx.reconciled(K::KIND, &*me, work).await
}

fn error_policy<K: ClaimObject>(o: Arc<K>, e: &Error, ctx: Arc<Context>) -> Action {
    let retry = ctx.retry(&*o, e, FIRST_RETRY);
    tracing::debug!(name = %o.name_any(), error = %e, ?retry, "claim reconcile: retrying");
    retry
}

/// Runs the controller for one claim kind.
pub async fn controller<K: ClaimObject>(ctx: Arc<Context>, stop: Stop) {
    let client = ctx.kube.clone();
    Controller::new(Api::<K>::all(client.clone()), watcher::Config::default())
        .owns(
            Api::<Secret>::all(client),
            watcher::Config::default().labels(&format!(
                "{}={}",
                labels::MANAGED_BY,
                labels::OPERATOR
            )),
        )
        .reconcile_on(K::triggers(&ctx.claim_feed))
        .graceful_shutdown_on(stop)
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(|r| async move {
            match r {
                Ok(_) => {}
                Err(kube::runtime::controller::Error::ReconcilerFailed(Error::Waiting(m), _)) => {
                    tracing::debug!(kind = K::KIND, "{m}")
                }
                Err(e) => warn!(kind = K::KIND, error = %e, "claim controller"),
            }
        })
        .await;
}
