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
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, Namespace,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
    SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, watcher};
use kube::{Resource, ResourceExt};
use ndc_api::catalog::catalog_client::CatalogClient;
use ndc_api::catalog::{self as pb};
use ndc_crds::{labels, ServiceSubscription, SharedService, SharedServiceStatus, Tenant, Workload};
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

fn meta(name: &str, ns: &str, service: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        labels: Some(BTreeMap::from([
            (labels::MANAGED_BY.to_string(), labels::OPERATOR.to_string()),
            (labels::SERVICE.to_string(), service.to_string()),
        ])),
        ..Default::default()
    }
}

/// The namespace a shared service runs in, Pod Security `restricted`.
fn service_namespace(ns: &str, service: &str) -> Namespace {
    let mut metadata = meta(ns, ns, service);
    metadata.namespace = None;
    if let Some(l) = metadata.labels.as_mut() {
        l.insert(
            "pod-security.kubernetes.io/enforce".into(),
            "restricted".into(),
        );
    }
    Namespace {
        metadata,
        ..Default::default()
    }
}

fn selecting(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels.clone()),
        ..Default::default()
    }
}

/// The pods of one instance: locked down, the tenant registry mounted.
fn pod_spec(workload: &Workload) -> PodSpec {
    let registry = "tenant-registry";
    let container = Container {
        name: "app".into(),
        image: Some(workload.image.clone()),
        ports: Some(vec![ContainerPort {
            container_port: workload.port,
            name: Some("http".into()),
            ..Default::default()
        }]),
        env: Some(vec![EnvVar {
            name: "NDC_TENANT_REGISTRY".into(),
            value: Some("/etc/ndc/tenant-registry/subscribers.json".into()),
            ..Default::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity(workload.cpu.clone())),
                ("memory".to_string(), Quantity(workload.memory.clone())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_string(),
                Quantity(workload.memory.clone()),
            )])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: registry.into(),
            mount_path: "/etc/ndc/tenant-registry".into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        ..Default::default()
    };
    PodSpec {
        automount_service_account_token: Some(false),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        containers: vec![container],
        volumes: Some(vec![Volume {
            name: registry.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: registry.into(),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

fn deployment(
    instance: &str,
    ns: &str,
    service: &str,
    pod_labels: &BTreeMap<String, String>,
    workload: &Workload,
) -> Deployment {
    Deployment {
        metadata: meta(instance, ns, service),
        spec: DeploymentSpec {
            replicas: Some(workload.replicas),
            selector: selecting(pod_labels),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels.clone()),
                    ..Default::default()
                }),
                spec: Some(pod_spec(workload)),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

fn service_object(
    instance: &str,
    ns: &str,
    service: &str,
    pod_labels: &BTreeMap<String, String>,
    workload: &Workload,
) -> Service {
    Service {
        metadata: meta(instance, ns, service),
        spec: Some(ServiceSpec {
            selector: Some(pod_labels.clone()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::Int(workload.port)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn disruption_budget(
    instance: &str,
    ns: &str,
    service: &str,
    pod_labels: &BTreeMap<String, String>,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(instance, ns, service),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(selecting(pod_labels)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Subscribers' namespaces may reach the service; nothing else from outside.
fn subscribers_policy(ns: &str, service: &str, subs: &[String]) -> NetworkPolicy {
    let peer = |p: NetworkPolicyPeer| NetworkPolicyIngressRule {
        from: Some(vec![p]),
        ..Default::default()
    };
    let tenants = LabelSelectorRequirement {
        key: labels::TENANT.into(),
        operator: "In".into(),
        values: Some(if subs.is_empty() {
            vec!["-none-".to_string()]
        } else {
            subs.to_vec()
        }),
    };
    NetworkPolicy {
        metadata: meta("ndc-allow-subscribers", ns, service),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector::default()),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                peer(NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector::default()),
                    ..Default::default()
                }),
                peer(NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector {
                        match_expressions: Some(vec![tenants]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            ]),
            ..Default::default()
        }),
    }
}

/// The tenant registry the service reads: its subscribers.
fn registry(ns: &str, service: &str, subs: &[String]) -> ConfigMap {
    ConfigMap {
        metadata: meta("tenant-registry", ns, service),
        data: Some(BTreeMap::from([
            (
                "subscribers.json".to_string(),
                serde_json::to_string(subs).unwrap_or_default(),
            ),
            ("subscribers.txt".to_string(), subs.join("\n")),
        ])),
        ..Default::default()
    }
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

/// Registers the service in the catalogue; the reason and message of the
/// status to write instead when the control plane refuses it.
async fn register(
    s: &SharedService,
    spec: pb::ServiceSpec,
    ctx: &Context,
) -> Result<Option<(&'static str, String)>, Error> {
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
    match c
        .write(|ch, a| {
            let req = req.clone();
            async move { CatalogClient::with_interceptor(ch, a).register(req).await }
        })
        .await
    {
        Ok(_) => Ok(None),
        Err(st) if st.code() == Code::AlreadyExists => Ok(Some((
            "DuplicateCapability",
            format!(
                "{}; to run it anyway, annotate this object with ndc.gov.vn/exemption-decision=<decision reference>",
                st.message()
            ),
        ))),
        Err(st) if ndc_api::is_refusal(&st) => Ok(Some(("Refused", st.message().to_string()))),
        Err(st) => Err(st.into()),
    }
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
    if let Some((reason, message)) = register(&s, spec, ctx).await? {
        set_status(&api, &s, refuse(reason, message)).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
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
    Api::<Namespace>::all(ctx.kube.clone())
        .patch(&ns, &pp(), &Patch::Apply(&service_namespace(&ns, &name)))
        .await?;
    let instances = instances(ctx, &s).await?;
    let mut ready_replicas = 0;
    let mut all_ready = true;
    for (instance, province) in &instances {
        let ready = deploy(ctx, &ns, &name, instance, province.as_deref(), workload).await?;
        ready_replicas += ready;
        all_ready &= ready >= workload.replicas;
    }
    Api::<NetworkPolicy>::namespaced(ctx.kube.clone(), &ns)
        .patch(
            "ndc-allow-subscribers",
            &pp(),
            &Patch::Apply(&subscribers_policy(&ns, &name, &subs)),
        )
        .await?;
    Api::<ConfigMap>::namespaced(ctx.kube.clone(), &ns)
        .patch(
            "tenant-registry",
            &pp(),
            &Patch::Apply(&registry(&ns, &name, &subs)),
        )
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

/// One instance, or one per province tenant (with its province).
async fn instances(
    ctx: &Context,
    s: &SharedService,
) -> Result<Vec<(String, Option<String>)>, Error> {
    let name = s.name_any();
    if s.spec.topology != "per-province" {
        return Ok(vec![(name, None)]);
    }
    let tenants: Api<Tenant> = Api::all(ctx.kube.clone());
    let mut v: Vec<(String, Option<String>)> = tenants
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter(|t| t.spec.level == "province")
        .map(|t| (format!("{name}-{}", t.name_any()), Some(t.name_any())))
        .collect();
    v.sort();
    Ok(v)
}

/// Deploys one instance (Deployment, Service, PodDisruptionBudget); its
/// ready replicas.
async fn deploy(
    ctx: &Context,
    ns: &str,
    name: &str,
    instance: &str,
    province: Option<&str>,
    workload: &Workload,
) -> Result<i32, Error> {
    let mut pod_labels = BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), name.to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            instance.to_string(),
        ),
    ]);
    if let Some(p) = province {
        pod_labels.insert("ndc.gov.vn/province".into(), p.to_string());
    }
    let d = deployment(instance, ns, name, &pod_labels, workload);
    let d = Api::<Deployment>::namespaced(ctx.kube.clone(), ns)
        .patch(instance, &pp(), &Patch::Apply(&d))
        .await?;
    let svc = service_object(instance, ns, name, &pod_labels, workload);
    Api::<Service>::namespaced(ctx.kube.clone(), ns)
        .patch(instance, &pp(), &Patch::Apply(&svc))
        .await?;
    let pdb = disruption_budget(instance, ns, name, &pod_labels);
    Api::<PodDisruptionBudget>::namespaced(ctx.kube.clone(), ns)
        .patch(instance, &pp(), &Patch::Apply(&pdb))
        .await?;
    Ok(d.status.and_then(|s| s.ready_replicas).unwrap_or(0))
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
