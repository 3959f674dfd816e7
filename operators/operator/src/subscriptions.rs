//! Subscriptions: a `ServiceSubscription` in a tenant namespace subscribes
//! that tenant to a shared service through the control plane (which checks
//! the service's scope against the tenant's level, and its dependencies),
//! provisions the per-tenant resources the service declares as claims of
//! the tenant, and hands the tenant a binding Secret (endpoint and
//! credentials) with an egress NetworkPolicy opening the way to the service.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, watcher};
use kube::{Resource, ResourceExt};
use ndc_api::catalog::catalog_client::CatalogClient;
use ndc_api::catalog::{self as cpb};
use ndc_api::claims::claims_client::ClaimsClient;
use ndc_api::claims::{self as pb};
use ndc_crds::{labels, ServiceSubscription, SharedService, SubscriptionStatus, Tenant};
use tonic::Code;
use tracing::warn;

use crate::feed::Waiter;
use crate::tenants::MANAGER;
use crate::{conditions, quantity, Context, Error, Stop};

pub const FINALIZER: &str = "ndc.gov.vn/subscription";

fn pp() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// The field manager of the subscriptions' status.
const STATUS_MANAGER: &str = "ndc-operator/subscriptions";

async fn set_status(
    api: &Api<ServiceSubscription>,
    o: &ServiceSubscription,
    status: SubscriptionStatus,
) -> Result<(), Error> {
    conditions::set_status(api, o, o.status.as_ref(), status, STATUS_MANAGER).await
}

fn failed(o: &ServiceSubscription, reason: &str, message: String) -> SubscriptionStatus {
    let generation = o.meta().generation;
    SubscriptionStatus {
        observed_generation: generation.unwrap_or(0),
        phase: "Failed".into(),
        conditions: vec![conditions::not_ready(reason, message, generation)],
        binding_secret: None,
    }
}

/// A per-tenant resource of a subscription: its claim name and kind.
fn resources(service: &str, s: &SharedService) -> Vec<(String, &'static str, String)> {
    let mut v = Vec::new();
    if let Some(size) = &s.spec.per_tenant.database {
        v.push((format!("{service}-db"), "database", size.clone()));
    }
    if let Some(size) = &s.spec.per_tenant.bucket {
        v.push((format!("{service}-files"), "bucket", size.clone()));
    }
    v
}

/// Ensures a claim exists for the tenant; returns it once Ready with its
/// credentials, `Ok(None)` while it is being provisioned.
async fn ensure_claim(
    ctx: &Context,
    tenant: &str,
    name: &str,
    kind: &str,
    size: &str,
) -> Result<Result<Option<BTreeMap<String, String>>, String>, Error> {
    let c = &ctx.ndc;
    let r = pb::ClaimRef {
        uid: String::new(),
        tenant: tenant.into(),
        kind: kind.into(),
        name: name.into(),
    };
    let got = c
        .call(|ch| {
            let (a, r) = (c.auth(), r.clone());
            async move { ClaimsClient::with_interceptor(ch, a).get(r).await }
        })
        .await;
    let claim = match got {
        Ok(resp) => resp.into_inner().claim.unwrap_or_default(),
        Err(s) if s.code() == Code::NotFound => {
            let bytes = match quantity::bytes(size) {
                Ok(b) => b,
                Err(m) => return Ok(Err(m)),
            };
            let spec = if kind == "database" {
                pb::create_claim_request::Spec::Database(pb::DatabaseSpec {
                    size_bytes: bytes,
                    connection_limit: 0,
                })
            } else {
                pb::create_claim_request::Spec::Bucket(pb::BucketSpec {
                    size_bytes: bytes,
                    versioning: false,
                    retention_days: 0,
                })
            };
            let req = pb::CreateClaimRequest {
                tenant: tenant.into(),
                name: name.into(),
                spec: Some(spec),
                deletion_policy: "retain".into(),
            };
            match c
                .write(|ch, a| {
                    let req = req.clone();
                    async move { ClaimsClient::with_interceptor(ch, a).create(req).await }
                })
                .await
            {
                Ok(_) => return Ok(Ok(None)),
                // A refusal, but for two codes that pass on a retry here: the
                // tenant not known yet (NotFound), and a create that raced an
                // earlier pass (AlreadyExists: the next get finds the claim).
                Err(s)
                    if ndc_api::is_refusal(&s)
                        && !matches!(s.code(), Code::NotFound | Code::AlreadyExists) =>
                {
                    return Ok(Err(format!("its {kind} {name}: {}", s.message())))
                }
                Err(s) => return Err(s.into()),
            }
        }
        Err(s) => return Err(s.into()),
    };
    if claim.phase == "Failed" {
        let m = claim
            .conditions
            .iter()
            .map(|k| k.message.clone())
            .next()
            .unwrap_or_default();
        return Ok(Err(format!("its {kind} {name} failed: {m}")));
    }
    if !claim.ready {
        return Ok(Ok(None));
    }
    let cref = pb::ClaimRef {
        uid: claim.uid.clone(),
        ..Default::default()
    };
    let creds = c
        .call(|ch| {
            let (a, r) = (c.auth(), cref.clone());
            async move { ClaimsClient::with_interceptor(ch, a).credentials(r).await }
        })
        .await?
        .into_inner();
    Ok(Ok(Some(creds.values.into_iter().collect())))
}

async fn apply(o: Arc<ServiceSubscription>, ctx: &Context) -> Result<Action, Error> {
    let ns = crate::namespace(&*o)?;
    let api: Api<ServiceSubscription> = Api::namespaced(ctx.kube.clone(), &ns);
    let service = o.spec.service.clone();
    let Some(tenant) = ctx.namespaces.tenant_of(&ns).await? else {
        let m = format!(
            "namespace {ns} belongs to no tenant: create the subscription in your tenant's namespace (labelled {}=<tenant>)",
            labels::TENANT
        );
        set_status(&api, &o, failed(&o, "NotInTenantNamespace", m)).await?;
        // Namespaces are not watched here, and a status change does not
        // bring a subscription round: look again now and then, in case the
        // namespace is given to a tenant.
        return Ok(Action::requeue(Duration::from_secs(60)));
    };
    let Some(shared) = ctx.services.service(&service).await? else {
        let m = format!("there is no shared service {service}: see `kubectl get sharedservices` or `ndc catalog`");
        set_status(&api, &o, failed(&o, "NoSuchService", m)).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    // The control plane checks scope and dependencies.
    let req = cpb::SubscribeRequest {
        tenant: tenant.clone(),
        service: service.clone(),
    };
    let c = &ctx.ndc;
    if let Err(s) = c
        .write(|ch, a| {
            let req = req.clone();
            async move { CatalogClient::with_interceptor(ch, a).subscribe(req).await }
        })
        .await
    {
        if ndc_api::is_refusal(&s) {
            let m = format!(
                "the control plane refused the subscription: {}",
                s.message()
            );
            set_status(&api, &o, failed(&o, "Refused", m)).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        return Err(s.into());
    }
    // Per-tenant resources, as claims of the tenant.
    let mut binding: BTreeMap<String, String> = BTreeMap::new();
    let mut pending = Vec::new();
    let needs = resources(&service, &shared);
    // A change of any of them reconciles this subscription at once.
    let me = Waiter::Subscription(ObjectRef::from_obj(&*o));
    for (name, kind, _) in &needs {
        ctx.claim_feed.wait(&tenant, kind, name, me.clone());
    }
    for (name, kind, size) in needs.iter().cloned() {
        match ensure_claim(ctx, &tenant, &name, kind, &size).await? {
            Ok(Some(values)) => {
                for (k, v) in values {
                    binding.insert(format!("{kind}_{k}"), v);
                }
            }
            Ok(None) => pending.push(format!("{kind} {name}")),
            Err(m) => {
                let m = format!(
                    "{service} needs per-tenant resources and {m}; raise the tenant's quota (ndc tenant update) or free some"
                );
                set_status(&api, &o, failed(&o, "ResourcesRefused", m)).await?;
                return Ok(Action::requeue(Duration::from_secs(30)));
            }
        }
    }
    if !pending.is_empty() {
        let generation = o.meta().generation;
        let status = SubscriptionStatus {
            observed_generation: generation.unwrap_or(0),
            phase: "Provisioning".into(),
            conditions: vec![conditions::not_ready(
                "Provisioning",
                format!("waiting for {}", pending.join(", ")),
                generation,
            )],
            binding_secret: None,
        };
        set_status(&api, &o, status).await?;
        return Ok(Action::requeue(crate::claims::WAIT_FALLBACK));
    }
    for (name, kind, _) in &needs {
        ctx.claim_feed.done(&tenant, kind, name);
    }
    bind(ctx, &o, &tenant, &shared, binding).await
}

/// Egress from the whole namespace to the shared service's namespace.
fn egress_to(svc_ns: &str) -> NetworkPolicySpec {
    NetworkPolicySpec {
        pod_selector: Some(LabelSelector::default()),
        policy_types: Some(vec!["Egress".into()]),
        egress: Some(vec![NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([(
                        "kubernetes.io/metadata.name".to_string(),
                        svc_ns.to_string(),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// Hands the tenant the binding Secret (where the service answers for it,
/// with the credentials in `binding`) and the egress policy to reach it.
async fn bind(
    ctx: &Context,
    o: &ServiceSubscription,
    tenant: &str,
    shared: &SharedService,
    mut binding: BTreeMap<String, String>,
) -> Result<Action, Error> {
    let ns = crate::namespace(o)?;
    let api: Api<ServiceSubscription> = Api::namespaced(ctx.kube.clone(), &ns);
    let service = o.spec.service.clone();
    // Where the service answers for this tenant.
    let svc_ns = crate::services::namespace_of(&service);
    let instance = if shared.spec.topology == "per-province" {
        let t = Api::<Tenant>::all(ctx.kube.clone()).get_opt(tenant).await?;
        let province = t.and_then(|t| {
            if t.spec.level == "province" {
                Some(t.name_any())
            } else {
                t.spec.ancestors.get(1).cloned()
            }
        });
        match province {
            Some(p) => format!("{service}-{p}"),
            None => service.clone(),
        }
    } else {
        service.clone()
    };
    binding.insert("service".into(), service.clone());
    binding.insert(
        "endpoint".into(),
        format!("http://{instance}.{svc_ns}.svc.cluster.local"),
    );
    binding.insert("tenant".into(), tenant.to_string());
    let secret_name = format!("{service}-binding");
    let owner = o.controller_owner_ref(&()).map(|r| vec![r]);
    let meta = |name: &str| ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.clone()),
        labels: Some(BTreeMap::from([
            (labels::MANAGED_BY.to_string(), labels::OPERATOR.to_string()),
            (labels::SERVICE.to_string(), service.clone()),
        ])),
        owner_references: owner.clone(),
        ..Default::default()
    };
    let secret = Secret {
        metadata: meta(&secret_name),
        type_: Some("Opaque".into()),
        string_data: Some(binding),
        ..Default::default()
    };
    Api::<Secret>::namespaced(ctx.kube.clone(), &ns)
        .patch(&secret_name, &pp(), &Patch::Apply(&secret))
        .await?;
    let np_name = format!("ndc-allow-{service}");
    let np = NetworkPolicy {
        metadata: meta(&np_name),
        spec: Some(egress_to(&svc_ns)),
    };
    Api::<NetworkPolicy>::namespaced(ctx.kube.clone(), &ns)
        .patch(&np_name, &pp(), &Patch::Apply(&np))
        .await?;
    let generation = o.meta().generation;
    let status = SubscriptionStatus {
        observed_generation: generation.unwrap_or(0),
        phase: "Bound".into(),
        conditions: vec![conditions::ready(
            "Bound",
            format!("{tenant} uses {service}; endpoint and credentials in Secret {secret_name}"),
            generation,
        )],
        binding_secret: Some(secret_name),
    };
    set_status(&api, o, status).await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Unsubscribes; the per-tenant claims are released under their policy
/// (retain: the data stays with the tenant).
async fn cleanup(o: Arc<ServiceSubscription>, ctx: &Context) -> Result<Action, Error> {
    let ns = crate::namespace(&*o)?;
    let Some(tenant) = ctx.namespaces.tenant_of(&ns).await? else {
        return Ok(Action::await_change());
    };
    let service = o.spec.service.clone();
    let c = &ctx.ndc;
    let req = cpb::SubscribeRequest {
        tenant: tenant.clone(),
        service: service.clone(),
    };
    match c
        .write(|ch, a| {
            let req = req.clone();
            async move {
                CatalogClient::with_interceptor(ch, a)
                    .unsubscribe(req)
                    .await
            }
        })
        .await
    {
        Ok(_) => {}
        Err(s) if s.code() == Code::NotFound => {}
        Err(s) => return Err(s.into()),
    }
    for (name, kind) in [
        (format!("{service}-db"), "database"),
        (format!("{service}-files"), "bucket"),
    ] {
        let req = pb::DeleteClaimRequest {
            claim: Some(pb::ClaimRef {
                uid: String::new(),
                tenant: tenant.clone(),
                kind: kind.into(),
                name,
            }),
            purge: false,
        };
        match c
            .write(|ch, a| {
                let req = req.clone();
                async move { ClaimsClient::with_interceptor(ch, a).delete(req).await }
            })
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => return Err(s.into()),
        }
    }
    Ok(Action::await_change())
}

/// How long after a first failure a subscription is tried again.
const FIRST_RETRY: Duration = Duration::from_secs(1);

#[tracing::instrument(skip_all, fields(name = %o.name_any(), namespace = o.meta().namespace.as_deref()))]
async fn reconcile(o: Arc<ServiceSubscription>, ctx: Arc<Context>) -> Result<Action, Error> {
    let me = o.clone();
    let work = async {
        let ns = crate::namespace(&*o)?;
        let api: Api<ServiceSubscription> = Api::namespaced(ctx.kube.clone(), &ns);
        finalizer(&api, FINALIZER, o, |event| async {
            match event {
                Event::Apply(o) => apply(o, &ctx).await,
                Event::Cleanup(o) => {
                    let me = Waiter::Subscription(ObjectRef::from_obj(&*o));
                    ctx.claim_feed.cleanup(me, cleanup(o, &ctx)).await
                }
            }
        })
        .await
        .map_err(Error::from)
    };
    ctx.reconciled("subscriptions", &*me, work).await
}

fn error_policy(o: Arc<ServiceSubscription>, e: &Error, ctx: Arc<Context>) -> Action {
    let retry = ctx.retry(&*o, e, FIRST_RETRY);
    tracing::debug!(name = %o.name_any(), error = %e, ?retry, "subscription reconcile: retrying");
    retry
}

/// What of a subscription asks for a reconcile: its spec, its deletion and
/// its finalizers. Not its status, which only this controller writes: each
/// status it wrote used to bring the subscription round once more. (Nor a
/// watch that lists again: an unchanged subscription is not reconciled for
/// it; each reconcile ends with a requeue of its own instead.)
pub(crate) fn worth_a_reconcile(s: &ServiceSubscription) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.meta().generation.hash(&mut h);
    s.meta().deletion_timestamp.is_some().hash(&mut h);
    s.finalizers().hash(&mut h);
    Some(h.finish())
}

pub async fn controller(ctx: Arc<Context>, stop: Stop) {
    use kube::runtime::{reflector, PredicateConfig, WatchStreamExt};
    let client = ctx.kube.clone();
    let (reader, writer) = reflector::store();
    let subscriptions = watcher(
        Api::<ServiceSubscription>::all(client.clone()),
        watcher::Config::default(),
    )
    .reflect(writer)
    .applied_objects()
    .predicate_filter(worth_a_reconcile, PredicateConfig::default());
    Controller::for_stream(subscriptions, reader)
        .owns(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default().labels(&format!(
                "{}={}",
                labels::MANAGED_BY,
                labels::OPERATOR
            )),
        )
        .owns(
            Api::<NetworkPolicy>::all(client),
            watcher::Config::default().labels(&format!(
                "{}={}",
                labels::MANAGED_BY,
                labels::OPERATOR
            )),
        )
        .reconcile_on(ctx.claim_feed.subscription_triggers())
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                warn!(error = %e, "subscription controller");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_written_does_not_bring_a_subscription_round_again() {
        let mut s = ServiceSubscription::new(
            "bao-cao",
            ndc_crds::ServiceSubscriptionSpec {
                service: "bao-cao".into(),
            },
        );
        s.meta_mut().generation = Some(1);
        let created = worth_a_reconcile(&s);
        s.meta_mut().finalizers = Some(vec![FINALIZER.into()]);
        let finalized = worth_a_reconcile(&s);
        assert_ne!(finalized, created);
        s.status = Some(failed(&s, "Refused", "not at this level".into()));
        assert_eq!(worth_a_reconcile(&s), finalized);
        s.meta_mut().generation = Some(2);
        let changed = worth_a_reconcile(&s);
        assert_ne!(changed, finalized);
        s.meta_mut().deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        assert_ne!(worth_a_reconcile(&s), changed);
    }
}
