//! Shared services: a `SharedService` is registered in the control plane's
//! catalogue (a second one offering a capability already shared at that
//! scope is refused, naming the first), then deployed once, in
//! `svc-<name>`, as a managed multi-tenant service: a Deployment with a
//! restricted security context (one per province for `per-province`), a
//! Service, a PodDisruptionBudget, a NetworkPolicy admitting the namespaces
//! of its subscribers, and a tenant-registry ConfigMap listing them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, watcher};
use kube::{Resource, ResourceExt};
use ndc_api::catalog::catalog_client::CatalogClient;
use ndc_api::catalog::{self as pb};
use ndc_crds::{labels, ServiceSubscription, SharedService, SharedServiceStatus, Tenant};
use serde_json::json;
use tonic::Code;
use tracing::warn;

use crate::tenants::MANAGER;
use crate::{conditions, quantity, Context, Error, Stop};

pub const FINALIZER: &str = "ndc.gov.vn/catalogue";

/// The namespace a shared service runs in.
pub fn namespace_of(service: &str) -> String {
    format!("svc-{service}")
}

/// The catalogue entry for a `SharedService`.
pub fn spec_pb(s: &SharedService) -> Result<pb::ServiceSpec, String> {
    let size = |v: &Option<String>| v.as_deref().map(quantity::bytes).transpose();
    Ok(pb::ServiceSpec {
        name: s.name_any(),
        display_name: s.spec.display_name.clone(),
        capability: s.spec.capability.clone(),
        layer: s.spec.layer.clone(),
        from: s.spec.scope.from.clone(),
        to: s.spec.scope.to.clone(),
        topology: s.spec.topology.clone(),
        depends_on: s.spec.depends_on.clone(),
        per_tenant_database_bytes: size(&s.spec.per_tenant.database)?.unwrap_or(0),
        per_tenant_bucket_bytes: size(&s.spec.per_tenant.bucket)?.unwrap_or(0),
        owner: s.spec.owner.clone().unwrap_or_default(),
        workload: s.spec.workload.is_some(),
    })
}

fn pp() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

fn meta(name: &str, ns: &str, service: &str) -> serde_json::Value {
    json!({
        "name": name, "namespace": ns,
        "labels": { labels::MANAGED_BY: labels::OPERATOR, labels::SERVICE: service },
    })
}

async fn subscribers(ctx: &Context, service: &str) -> Result<Vec<String>, Error> {
    let c = &ctx.ndc;
    let req = pb::ListSubscriptionsRequest {
        tenant: String::new(),
        service: service.into(),
    };
    let r = c
        .call(|ch| {
            let (a, req) = (c.auth(), req.clone());
            async move {
                CatalogClient::with_interceptor(ch, a)
                    .list_subscriptions(req)
                    .await
            }
        })
        .await?
        .into_inner();
    let mut t: Vec<String> = r.subscriptions.into_iter().map(|s| s.tenant).collect();
    t.sort();
    t.dedup();
    Ok(t)
}

/// The field manager of the shared services' status.
const STATUS_MANAGER: &str = "ndc-operator/services";

async fn set_status(
    api: &Api<SharedService>,
    s: &SharedService,
    status: SharedServiceStatus,
) -> Result<(), Error> {
    conditions::set_status(api, s, s.status.as_ref(), status, STATUS_MANAGER).await
}

async fn apply(s: Arc<SharedService>, ctx: &Context) -> Result<Action, Error> {
    let name = s.name_any();
    let api: Api<SharedService> = Api::all(ctx.kube.clone());
    let generation = s.meta().generation;
    let refuse = |reason: &str, message: String| SharedServiceStatus {
        observed_generation: generation.unwrap_or(0),
        conditions: vec![conditions::not_ready(reason, message, generation)],
        ..SharedServiceStatus::default()
    };
    let spec = match spec_pb(&s) {
        Ok(p) => p,
        Err(m) => {
            set_status(&api, &s, refuse("InvalidSpec", m)).await?;
            return Ok(Action::await_change());
        }
    };
    let decision = s
        .annotations()
        .get("ndc.gov.vn/exemption-decision")
        .cloned()
        .unwrap_or_default();
    let req = pb::RegisterRequest {
        spec: Some(spec),
        decision,
    };
    let c = &ctx.ndc;
    if let Err(st) = c
        .write(|ch, a| {
            let req = req.clone();
            async move { CatalogClient::with_interceptor(ch, a).register(req).await }
        })
        .await
    {
        if matches!(
            st.code(),
            Code::AlreadyExists | Code::InvalidArgument | Code::PermissionDenied
        ) {
            let reason = if st.code() == Code::AlreadyExists {
                "DuplicateCapability"
            } else {
                "Refused"
            };
            let message = if st.code() == Code::AlreadyExists {
                format!(
                    "{}; to run it anyway, annotate this object with ndc.gov.vn/exemption-decision=<decision reference>",
                    st.message()
                )
            } else {
                st.message().to_string()
            };
            set_status(&api, &s, refuse(reason, message)).await?;
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
        return Err(st.into());
    }
    let subs = subscribers(ctx, &name).await?;
    let Some(workload) = &s.spec.workload else {
        // A catalogue record (infrastructure that is not a workload).
        let status = SharedServiceStatus {
            observed_generation: generation.unwrap_or(0),
            conditions: vec![conditions::ready(
                "Registered",
                "in the catalogue; not a workload, nothing is deployed".into(),
                generation,
            )],
            subscribers: subs.len() as i32,
            ..SharedServiceStatus::default()
        };
        set_status(&api, &s, status).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    };
    let ns = namespace_of(&name);
    let nss: Api<Namespace> = Api::all(ctx.kube.clone());
    let namespace: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": ns, "labels": {
            labels::MANAGED_BY: labels::OPERATOR, labels::SERVICE: name,
            "pod-security.kubernetes.io/enforce": "restricted",
        }},
    }))
    .map_err(|e| Error::Other(e.to_string()))?;
    nss.patch(&ns, &pp(), &Patch::Apply(&namespace)).await?;

    // One instance, or one per province tenant.
    let instances: Vec<(String, Option<String>)> = if s.spec.topology == "per-province" {
        let tenants: Api<Tenant> = Api::all(ctx.kube.clone());
        let mut v: Vec<(String, Option<String>)> = tenants
            .list(&ListParams::default())
            .await?
            .into_iter()
            .filter(|t| t.spec.level == "province")
            .map(|t| (format!("{name}-{}", t.name_any()), Some(t.name_any())))
            .collect();
        v.sort();
        v
    } else {
        vec![(name.clone(), None)]
    };
    let deployments: Api<Deployment> = Api::namespaced(ctx.kube.clone(), &ns);
    let services: Api<Service> = Api::namespaced(ctx.kube.clone(), &ns);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(ctx.kube.clone(), &ns);
    let mut ready_replicas = 0;
    let mut all_ready = true;
    for (instance, province) in &instances {
        let mut pod_labels = BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), name.clone()),
            ("app.kubernetes.io/instance".to_string(), instance.clone()),
        ]);
        if let Some(p) = province {
            pod_labels.insert("ndc.gov.vn/province".into(), p.clone());
        }
        let d: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": meta(instance, &ns, &name),
            "spec": {
                "replicas": workload.replicas,
                "selector": { "matchLabels": pod_labels },
                "template": {
                    "metadata": { "labels": pod_labels },
                    "spec": {
                        "automountServiceAccountToken": false,
                        "securityContext": {
                            "runAsNonRoot": true,
                            "seccompProfile": { "type": "RuntimeDefault" },
                        },
                        "containers": [{
                            "name": "app",
                            "image": workload.image,
                            "ports": [{ "containerPort": workload.port, "name": "http" }],
                            "env": [{ "name": "NDC_TENANT_REGISTRY", "value": "/etc/ndc/tenant-registry/subscribers.json" }],
                            "resources": {
                                "requests": { "cpu": workload.cpu, "memory": workload.memory },
                                "limits": { "memory": workload.memory },
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "runAsNonRoot": true,
                                "capabilities": { "drop": ["ALL"] },
                            },
                            "volumeMounts": [{ "name": "tenant-registry", "mountPath": "/etc/ndc/tenant-registry", "readOnly": true }],
                        }],
                        "volumes": [{ "name": "tenant-registry", "configMap": { "name": "tenant-registry" } }],
                    },
                },
            },
        }))
        .map_err(|e| Error::Other(e.to_string()))?;
        let d = deployments
            .patch(instance, &pp(), &Patch::Apply(&d))
            .await?;
        let ready = d
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        ready_replicas += ready;
        all_ready &= ready >= workload.replicas;
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta(instance, &ns, &name),
            "spec": {
                "selector": pod_labels,
                "ports": [{ "name": "http", "port": 80, "targetPort": workload.port }],
            },
        }))
        .map_err(|e| Error::Other(e.to_string()))?;
        services.patch(instance, &pp(), &Patch::Apply(&svc)).await?;
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": meta(instance, &ns, &name),
            "spec": { "maxUnavailable": 1, "selector": { "matchLabels": pod_labels } },
        }))
        .map_err(|e| Error::Other(e.to_string()))?;
        pdbs.patch(instance, &pp(), &Patch::Apply(&pdb)).await?;
    }

    // Subscribers' namespaces may reach it; nothing else from outside.
    let np: NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": meta("ndc-allow-subscribers", &ns, &name),
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress"],
            "ingress": [
                { "from": [{ "podSelector": {} }] },
                { "from": [{ "namespaceSelector": { "matchExpressions": [{
                    "key": labels::TENANT, "operator": "In",
                    "values": if subs.is_empty() { vec!["-none-".to_string()] } else { subs.clone() },
                }]}}]},
            ],
        },
    }))
    .map_err(|e| Error::Other(e.to_string()))?;
    Api::<NetworkPolicy>::namespaced(ctx.kube.clone(), &ns)
        .patch("ndc-allow-subscribers", &pp(), &Patch::Apply(&np))
        .await?;
    let registry: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": meta("tenant-registry", &ns, &name),
        "data": {
            "subscribers.json": serde_json::to_string(&subs).unwrap_or_default(),
            "subscribers.txt": subs.join("\n"),
        },
    }))
    .map_err(|e| Error::Other(e.to_string()))?;
    Api::<ConfigMap>::namespaced(ctx.kube.clone(), &ns)
        .patch("tenant-registry", &pp(), &Patch::Apply(&registry))
        .await?;

    let condition = if all_ready {
        conditions::ready(
            "Running",
            format!(
                "{} instance(s) ready, {} subscriber(s)",
                instances.len(),
                subs.len()
            ),
            generation,
        )
    } else {
        conditions::not_ready(
            "Starting",
            format!("waiting for {} instance(s) to be ready", instances.len()),
            generation,
        )
    };
    let status = SharedServiceStatus {
        observed_generation: generation.unwrap_or(0),
        conditions: vec![condition],
        instances: instances.len() as i32,
        ready_replicas,
        subscribers: subs.len() as i32,
    };
    set_status(&api, &s, status).await?;
    Ok(if all_ready {
        Action::requeue(Duration::from_secs(60))
    } else {
        Action::requeue(Duration::from_millis(500))
    })
}

async fn cleanup(s: Arc<SharedService>, ctx: &Context) -> Result<Action, Error> {
    let name = s.name_any();
    let req = pb::GetServiceRequest { name: name.clone() };
    let c = &ctx.ndc;
    match c
        .write(|ch, a| {
            let req = req.clone();
            async move { CatalogClient::with_interceptor(ch, a).remove(req).await }
        })
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(st) if st.code() == Code::NotFound => Ok(Action::await_change()),
        Err(st) if st.code() == Code::FailedPrecondition => {
            let api: Api<SharedService> = Api::all(ctx.kube.clone());
            let status = SharedServiceStatus {
                conditions: vec![conditions::not_ready(
                    "HasSubscribers",
                    format!("{}; it stays until they unsubscribe", st.message()),
                    s.meta().generation,
                )],
                ..s.status.clone().unwrap_or_default()
            };
            set_status(&api, &s, status).await?;
            Err(Error::Waiting(st.message().to_string()))
        }
        Err(st) => Err(st.into()),
    }
}

/// How long after a first failure a shared service is tried again.
const FIRST_RETRY: Duration = Duration::from_secs(1);

#[tracing::instrument(skip_all, fields(name = %s.name_any()))]
async fn reconcile(s: Arc<SharedService>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<SharedService> = Api::all(ctx.kube.clone());
    let me = s.clone();
    let work = finalizer(&api, FINALIZER, s, |event| async {
        match event {
            Event::Apply(s) => apply(s, &ctx).await,
            Event::Cleanup(s) => cleanup(s, &ctx).await,
        }
    });
    ctx.reconciled("services", &*me, async { work.await.map_err(Error::from) })
        .await
}

fn error_policy(s: Arc<SharedService>, e: &Error, ctx: Arc<Context>) -> Action {
    let retry = ctx.retry(&*s, e, FIRST_RETRY);
    tracing::debug!(service = %s.name_any(), error = %e, ?retry, "shared service reconcile: retrying");
    retry
}

/// The shared service an object of its own namespace belongs to. The same
/// label is on each subscriber's binding Secret and egress NetworkPolicy in
/// the tenant's namespace: those are the subscription's, not the service's.
fn by_label<K: Resource>(o: K) -> Option<ObjectRef<SharedService>> {
    let service = o.meta().labels.as_ref()?.get(labels::SERVICE)?;
    (o.meta().namespace.as_deref() == Some(namespace_of(service).as_str()))
        .then(|| ObjectRef::new(service))
}

/// What of a subscription may change the service's subscribers: what
/// brings the subscription itself round (spec, deletion, finalizers), its
/// phase and the reason of its condition (written after the control plane
/// took the subscription, or refused it), and anything at all once it is
/// being deleted (the control plane forgets it
/// before its last finalizer goes; an API server may then only say it was
/// deleted, with the object as it last stored it). A status rewritten with
/// the same phase and reason changes nothing here.
fn subscribers_may_change(s: &ServiceSubscription) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    crate::subscriptions::worth_a_reconcile(s).hash(&mut h);
    if s.meta().deletion_timestamp.is_some() {
        s.meta().resource_version.hash(&mut h);
    }
    // The phase and the reason of its condition: a refusal after the
    // control plane took it (its resources refused) is Failed as a refusal
    // before is, but with another reason.
    if let Some(st) = &s.status {
        st.phase.hash(&mut h);
        for c in &st.conditions {
            (&c.type_, &c.reason).hash(&mut h);
        }
    }
    Some(h.finish())
}

pub async fn controller(ctx: Arc<Context>, stop: Stop) {
    use kube::runtime::{PredicateConfig, WatchStreamExt};
    let client = ctx.kube.clone();
    let managed =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::OPERATOR));
    Controller::new(
        Api::<SharedService>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<Deployment>::all(client.clone()),
        managed.clone(),
        by_label,
    )
    .watches(
        Api::<NetworkPolicy>::all(client.clone()),
        managed.clone(),
        by_label,
    )
    .watches(Api::<ConfigMap>::all(client.clone()), managed, by_label)
    // A subscription changes who may reach the service.
    .watches_stream(
        watcher(
            Api::<ServiceSubscription>::all(client),
            watcher::Config::default(),
        )
        .touched_objects()
        .predicate_filter(subscribers_may_change, PredicateConfig::default()),
        |s: ServiceSubscription| Some(ObjectRef::new(&s.spec.service)),
    )
    .graceful_shutdown_on(stop)
    .run(reconcile, error_policy, ctx)
    .for_each(|r| async move {
        match r {
            Ok(_) => {}
            Err(kube::runtime::controller::Error::ReconcilerFailed(Error::Waiting(m), _)) => {
                tracing::debug!("{m}")
            }
            Err(e) => warn!(error = %e, "shared service controller"),
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled<K: Resource + Default>(service: &str, ns: &str) -> K {
        let mut o = K::default();
        o.meta_mut().namespace = Some(ns.into());
        o.meta_mut().labels = Some([(labels::SERVICE.to_string(), service.to_string())].into());
        o
    }

    #[test]
    fn only_objects_in_the_services_namespace_are_its_own() {
        let own: NetworkPolicy = labelled("bao-cao", "svc-bao-cao");
        assert_eq!(by_label(own), Some(ObjectRef::new("bao-cao")));
        // A subscriber's egress policy carries the same label elsewhere.
        let subscriber: NetworkPolicy = labelled("bao-cao", "ha-noi");
        assert_eq!(by_label(subscriber), None);
        assert_eq!(by_label(NetworkPolicy::default()), None);
    }

    #[test]
    fn a_subscription_matters_to_its_service_when_its_phase_changes() {
        let mut s = ServiceSubscription::new(
            "bao-cao",
            ndc_crds::ServiceSubscriptionSpec {
                service: "bao-cao".into(),
            },
        );
        let status = |phase: &str, message: &str| ndc_crds::SubscriptionStatus {
            phase: phase.into(),
            conditions: vec![conditions::not_ready("Provisioning", message.into(), None)],
            ..Default::default()
        };
        s.status = Some(status("Provisioning", "waiting for database, bucket"));
        let first = subscribers_may_change(&s);
        s.status = Some(status("Provisioning", "waiting for bucket"));
        assert_eq!(subscribers_may_change(&s), first);
        // Refused before or after the control plane took it: not the same.
        let refused = |reason: &str| ndc_crds::SubscriptionStatus {
            phase: "Failed".into(),
            conditions: vec![conditions::not_ready(reason, "no".into(), None)],
            ..Default::default()
        };
        s.status = Some(refused("Refused"));
        let before = subscribers_may_change(&s);
        s.status = Some(refused("ResourcesRefused"));
        assert_ne!(subscribers_may_change(&s), before);
        s.status = Some(status("Bound", "bound"));
        let bound = subscribers_may_change(&s);
        assert_ne!(bound, first);
        s.meta_mut().finalizers = Some(vec![crate::subscriptions::FINALIZER.into()]);
        let finalized = subscribers_may_change(&s);
        assert_ne!(finalized, bound);
        // Being deleted, every new version counts, the final one included.
        s.meta_mut().deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        s.meta_mut().resource_version = Some("41".into());
        let deleting = subscribers_may_change(&s);
        assert_ne!(deleting, finalized);
        s.meta_mut().resource_version = Some("42".into());
        assert_ne!(subscribers_may_change(&s), deleting);
    }
}
