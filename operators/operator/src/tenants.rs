//! Tenants: the control plane's tenants mirrored as `Tenant` objects, and
//! each `Tenant` turned into its namespace and what goes in it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use ndc_api::tenants::tenants_client::TenantsClient;
use ndc_api::tenants::{ListTenantsRequest, WatchTenantsRequest};
use ndc_crds::{labels, Tenant, TenantQuota, TenantSpec, TenantStatus};
use serde_json::json;
use tracing::{info, warn};

use crate::{conditions, Context, Error, Stop};

/// The field manager of the objects the operator applies.
pub const MANAGER: &str = "ndc-operator";
/// The field manager of the tenants' status (conditions and namespace).
const STATUS_MANAGER: &str = "ndc-operator/tenants";
/// The field manager of the control-plane revision a `Tenant` mirrors.
const MIRROR_MANAGER: &str = "ndc-operator/tenant-mirror";
/// Names a namespace must not take: Kubernetes' own and shared services'.
const RESERVED: [&str; 4] = ["default", "kube-", "svc-", "ndc-"];

/// The namespace of a tenant: its id (an ASCII id usable as a Kubernetes
/// name), unless that collides with a reserved name.
pub fn namespace_of(tenant: &str) -> Option<String> {
    let reserved = RESERVED
        .iter()
        .any(|r| tenant == r.trim_end_matches('-') || (r.ends_with('-') && tenant.starts_with(r)));
    (!reserved).then(|| tenant.to_string())
}

fn apply_params() -> PatchParams {
    PatchParams::apply(MANAGER).force()
}

/// The mirror of one control-plane tenant.
fn mirror(t: &ndc_core::Tenant, all: &HashMap<String, ndc_core::Tenant>) -> TenantSpec {
    let mut ancestors = Vec::new();
    let mut at = t.parent.clone();
    while let Some(p) = at {
        if ancestors.contains(&p) {
            break;
        }
        at = all.get(&p).and_then(|x| x.parent.clone());
        ancestors.push(p);
    }
    ancestors.reverse();
    TenantSpec {
        display_name: t.display_name.clone(),
        level: t.level.as_str().into(),
        branch: t.branch.as_str().into(),
        parent: t.parent.clone(),
        admin_code: t.admin_code.clone(),
        security_level: t.security_level,
        state: t.state.as_str().into(),
        ancestors,
        aliases: t.aliases.iter().cloned().collect(),
        labels: t.labels.clone(),
        quota: TenantQuota {
            // What the tenant keeps for itself: its quota less what it
            // handed to its children.
            cpu_millis: t.quota.cpu_millis.saturating_sub(t.allocated.cpu_millis),
            memory_bytes: t
                .quota
                .memory_bytes
                .saturating_sub(t.allocated.memory_bytes),
            storage_bytes: t
                .quota
                .storage_bytes
                .saturating_sub(t.allocated.storage_bytes),
            buckets: t.quota.buckets.saturating_sub(t.allocated.buckets),
            databases: t.quota.databases.saturating_sub(t.allocated.databases),
            namespaces: t.quota.namespaces.saturating_sub(t.allocated.namespaces),
        },
    }
}

/// Keeps the `Tenant` objects equal to the control plane's tenants: lists
/// them, then follows the control plane's watch; lists again whenever the
/// watch breaks or falls behind.
pub async fn follow_control_plane(ctx: Arc<Context>, stop: Stop) {
    crate::follow_until_stopped(stop, "tenants", || follow_once(&ctx)).await;
}

async fn follow_once(ctx: &Context) -> Result<(), Error> {
    let auth = ctx.ndc.auth();
    let list = ctx
        .ndc
        .call(|ch| {
            let a = auth.clone();
            async move {
                TenantsClient::with_interceptor(ch, a)
                    .max_decoding_message_size(256 * 1024 * 1024)
                    .list(ListTenantsRequest::default())
                    .await
            }
        })
        .await?
        .into_inner();
    let mut all: HashMap<String, ndc_core::Tenant> = HashMap::new();
    for t in list.tenants {
        let t = from_pb(t)?;
        all.insert(t.id.clone(), t);
    }
    let mut applied: HashMap<String, TenantSpec> = HashMap::new();
    sync(ctx, &all, None, &mut applied, list.revision).await?;

    // Changes from the revision listed on.
    let mut stream = ctx
        .ndc
        .call(|ch| {
            let a = auth.clone();
            async move {
                TenantsClient::with_interceptor(ch, a)
                    .max_decoding_message_size(256 * 1024 * 1024)
                    .watch(WatchTenantsRequest {
                        start_revision: list.revision + 1,
                    })
                    .await
            }
        })
        .await?
        .into_inner();
    while let Some(msg) = stream.next().await {
        let msg = msg?;
        // Most changes touch one tenant's own fields (its usage, above all):
        // only that tenant is mirrored again. A change of the hierarchy (a
        // tenant gone, moved, or appearing as someone's parent) changes the
        // ancestors of others: then every tenant is looked at.
        let mut changed = Vec::new();
        let mut hierarchy = false;
        for e in msg.events {
            let id = e.id;
            match e.tenant {
                None => {
                    all.remove(&id);
                    hierarchy = true;
                }
                Some(t) => {
                    let t = from_pb(t)?;
                    hierarchy |= match all.get(&id) {
                        Some(old) => old.parent != t.parent,
                        None => all
                            .values()
                            .any(|x| x.parent.as_deref() == Some(id.as_str())),
                    };
                    all.insert(id.clone(), t);
                    changed.push(id);
                }
            }
        }
        let only = (!hierarchy).then_some(changed.as_slice());
        sync(ctx, &all, only, &mut applied, msg.revision).await?;
    }
    Err(Error::Other("the control plane's watch ended".into()))
}

fn from_pb(t: ndc_api::tenants::Tenant) -> Result<ndc_core::Tenant, Error> {
    let id = t.spec.as_ref().map(|s| s.id.clone()).unwrap_or_default();
    ndc_api::convert::tenant_from_pb(t).map_err(|e| Error::Other(format!("tenant {id}: {e}")))
}

/// Brings the `Tenant` objects to `all`, or only those named in `only`
/// (which then removes none); `applied` remembers what was last written so
/// unchanged tenants cost nothing.
async fn sync(
    ctx: &Context,
    all: &HashMap<String, ndc_core::Tenant>,
    only: Option<&[String]>,
    applied: &mut HashMap<String, TenantSpec>,
    revision: u64,
) -> Result<(), Error> {
    let api: Api<Tenant> = Api::all(ctx.kube.clone());
    if applied.is_empty() {
        // First pass: what is in the cluster now.
        for t in api.list(&ListParams::default()).await? {
            applied.insert(t.name_any(), t.spec.clone());
        }
    }
    let tenants: Vec<(&String, &ndc_core::Tenant)> = match only {
        Some(ids) => ids.iter().filter_map(|id| all.get_key_value(id)).collect(),
        None => all.iter().collect(),
    };
    for (id, t) in tenants {
        let spec = mirror(t, all);
        if applied.get(id) == Some(&spec) {
            continue;
        }
        let obj = Tenant::new(id, spec.clone());
        api.patch(id, &apply_params(), &Patch::Apply(&obj)).await?;
        let status = json!({
            "apiVersion": Tenant::api_version(&()), "kind": Tenant::kind(&()),
            "metadata": { "name": id }, "status": { "revision": revision },
        });
        api.patch_status(
            id,
            &PatchParams::apply(MIRROR_MANAGER).force(),
            &Patch::Apply(&status),
        )
        .await?;
        applied.insert(id.clone(), spec);
    }
    if only.is_some() {
        return Ok(());
    }
    let gone: Vec<String> = applied
        .keys()
        .filter(|id| !all.contains_key(*id))
        .cloned()
        .collect();
    for id in gone {
        info!(tenant = %id, "tenant left the control plane; its mirror goes, its namespace stays");
        // The mirror first, so no reconcile of it relabels the namespace after.
        match api.delete(&id, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(ns) = namespace_of(&id) {
            // Re-homed to the tenant that took this id as an alias, if any.
            let heir = all
                .values()
                .find(|t| t.aliases.contains(&id))
                .map(|t| t.id.clone());
            mark_orphaned(ctx, &ns, heir.as_deref()).await?;
        }
        applied.remove(&id);
    }
    Ok(())
}

/// A namespace whose tenant is gone keeps its data; it is labelled with the
/// tenant that took it over, or marked as having none.
async fn mark_orphaned(ctx: &Context, ns: &str, heir: Option<&str>) -> Result<(), Error> {
    let api: Api<Namespace> = Api::all(ctx.kube.clone());
    let patch = json!({
        "metadata": {
            "labels": { labels::TENANT: heir },
            "annotations": {
                "ndc.gov.vn/former-tenant": ns,
                "ndc.gov.vn/note": match heir {
                    Some(h) => format!("tenant {ns} was merged or renamed into {h}; this namespace is kept with its data"),
                    None => format!("tenant {ns} no longer exists; this namespace is kept with its data until an operator removes it"),
                },
            },
        }
    });
    match api
        .patch(ns, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn object_meta(name: &str, ns: &str, owner: &Tenant) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        labels: Some(BTreeMap::from([
            (labels::MANAGED_BY.to_string(), labels::OPERATOR.to_string()),
            (labels::TENANT.to_string(), owner.name_any()),
        ])),
        owner_references: owner.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    }
}

/// The namespace's labels: tenant, level, branch, one tree label per
/// ancestor and itself (HNC style), and Pod Security `restricted`.
pub fn namespace_labels(t: &Tenant) -> BTreeMap<String, String> {
    let id = t.name_any();
    let mut l = BTreeMap::from([
        (labels::MANAGED_BY.to_string(), labels::OPERATOR.to_string()),
        (labels::TENANT.to_string(), id.clone()),
        (labels::LEVEL.to_string(), t.spec.level.clone()),
        (labels::BRANCH.to_string(), t.spec.branch.clone()),
        (
            "pod-security.kubernetes.io/enforce".to_string(),
            "restricted".to_string(),
        ),
        (
            "pod-security.kubernetes.io/audit".to_string(),
            "restricted".to_string(),
        ),
        (
            "pod-security.kubernetes.io/warn".to_string(),
            "restricted".to_string(),
        ),
    ]);
    let depth = t.spec.ancestors.len();
    for (i, a) in t.spec.ancestors.iter().enumerate() {
        l.insert(
            format!("{a}{}", labels::TREE_SUFFIX),
            (depth - i).to_string(),
        );
    }
    l.insert(format!("{id}{}", labels::TREE_SUFFIX), "0".into());
    l
}

fn resource_quota(t: &Tenant, ns: &str) -> ResourceQuota {
    let q = &t.spec.quota;
    let hard = [
        ("requests.cpu", format!("{}m", q.cpu_millis)),
        ("requests.memory", q.memory_bytes.to_string()),
        ("requests.storage", q.storage_bytes.to_string()),
        ("count/objectbuckets.ndc.gov.vn", q.buckets.to_string()),
        ("count/databases.ndc.gov.vn", q.databases.to_string()),
    ];
    ResourceQuota {
        metadata: object_meta("ndc-quota", ns, t),
        spec: Some(ResourceQuotaSpec {
            hard: Some(quantities(&hard)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Resource amounts by name.
fn quantities(q: &[(&str, String)]) -> BTreeMap<String, Quantity> {
    q.iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.clone())))
        .collect()
}

fn limit_range(t: &Tenant, ns: &str) -> LimitRange {
    let cpu_memory = |cpu: &str, memory: &str| {
        Some(quantities(&[
            ("cpu", cpu.into()),
            ("memory", memory.into()),
        ]))
    };
    LimitRange {
        metadata: object_meta("ndc-defaults", ns, t),
        spec: Some(LimitRangeSpec {
            limits: vec![LimitRangeItem {
                type_: "Container".into(),
                default_request: cpu_memory("100m", "128Mi"),
                default: cpu_memory("500m", "512Mi"),
                ..Default::default()
            }],
        }),
    }
}

/// A selector of the objects with these labels (all of them when `labels`
/// is empty).
fn selector(labels: &[(&str, &str)]) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        ..Default::default()
    })
}

/// Deny all ingress and egress, except inside the namespace and DNS.
fn network_policy(t: &Tenant, ns: &str) -> NetworkPolicy {
    let inside = || NetworkPolicyPeer {
        pod_selector: selector(&[]),
        ..Default::default()
    };
    let dns = |protocol: &str| NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(53)),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: object_meta("ndc-default-deny", ns, t),
        spec: Some(NetworkPolicySpec {
            pod_selector: selector(&[]),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![inside()]),
                ..Default::default()
            }]),
            egress: Some(vec![
                NetworkPolicyEgressRule {
                    to: Some(vec![inside()]),
                    ..Default::default()
                },
                NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        namespace_selector: selector(&[(
                            "kubernetes.io/metadata.name",
                            "kube-system",
                        )]),
                        pod_selector: selector(&[("k8s-app", "kube-dns")]),
                        ..Default::default()
                    }]),
                    ports: Some(vec![dns("UDP"), dns("TCP")]),
                },
            ]),
        }),
    }
}

/// The tenant's admins (group `ndc:tenant-admin:<id>`) administer the namespace.
fn role_binding(t: &Tenant, ns: &str) -> RoleBinding {
    RoleBinding {
        metadata: object_meta("ndc-tenant-admins", ns, t),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "admin".into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Group".into(),
            name: format!("ndc:tenant-admin:{}", t.name_any()),
            ..Default::default()
        }]),
    }
}

/// The tenant's namespace, written over `current` (its resourceVersion,
/// if it exists).
fn namespace(t: &Tenant, ns: &str, current: Option<&Namespace>) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(ns.into()),
            labels: Some(namespace_labels(t)),
            resource_version: current.and_then(|n| n.metadata.resource_version.clone()),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tracing::instrument(skip_all, fields(name = %t.name_any()))]
async fn reconcile(t: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let me = t.clone();
    ctx.reconciled("tenants", &*me, reconcile_tenant(t, &ctx))
        .await
}

async fn reconcile_tenant(t: Arc<Tenant>, ctx: &Context) -> Result<Action, Error> {
    let id = t.name_any();
    let api: Api<Tenant> = Api::all(ctx.kube.clone());
    let Some(ns) = namespace_of(&id) else {
        let status = TenantStatus {
            observed_generation: t.metadata.generation.unwrap_or(0),
            conditions: vec![conditions::not_ready(
                "ReservedName",
                format!("tenant id {id} is a reserved namespace name; rename the tenant (ndc tenant rename) to give it a namespace"),
                t.metadata.generation,
            )],
            namespace: String::new(),
            revision: 0,
        };
        conditions::set_status(&api, &*t, t.status.as_ref(), status, STATUS_MANAGER).await?;
        return Ok(Action::await_change());
    };
    let pp = apply_params();
    let nss: Api<Namespace> = Api::all(ctx.kube.clone());
    // A namespace whose tenant left (merged, renamed) belongs to its heir
    // now: a reconcile that was already under way must not take it back.
    let current = nss.get_opt(&ns).await?;
    let former = current
        .as_ref()
        .and_then(|n| n.annotations().get("ndc.gov.vn/former-tenant").cloned());
    if former.as_deref() == Some(id.as_str()) {
        return Ok(Action::await_change());
    }
    // Written only over the namespace as just read: if it was handed to an
    // heir meanwhile, the write is refused (409) and the next reconcile
    // sees why.
    let namespace = namespace(&t, &ns, current.as_ref());
    nss.patch(&ns, &pp, &Patch::Apply(&namespace)).await?;
    Api::<ResourceQuota>::namespaced(ctx.kube.clone(), &ns)
        .patch("ndc-quota", &pp, &Patch::Apply(&resource_quota(&t, &ns)))
        .await?;
    Api::<LimitRange>::namespaced(ctx.kube.clone(), &ns)
        .patch("ndc-defaults", &pp, &Patch::Apply(&limit_range(&t, &ns)))
        .await?;
    Api::<NetworkPolicy>::namespaced(ctx.kube.clone(), &ns)
        .patch(
            "ndc-default-deny",
            &pp,
            &Patch::Apply(&network_policy(&t, &ns)),
        )
        .await?;
    Api::<RoleBinding>::namespaced(ctx.kube.clone(), &ns)
        .patch(
            "ndc-tenant-admins",
            &pp,
            &Patch::Apply(&role_binding(&t, &ns)),
        )
        .await?;
    let generation = t.metadata.generation;
    let ready = conditions::ready(
        "Synced",
        format!(
            "namespace {ns} and its quota, limits, network policy and admin binding are in place"
        ),
        generation,
    );
    let status = TenantStatus {
        observed_generation: generation.unwrap_or(0),
        conditions: vec![ready],
        namespace: ns,
        revision: 0,
    };
    conditions::set_status(&api, &*t, t.status.as_ref(), status, STATUS_MANAGER).await?;
    Ok(Action::requeue(Duration::from_secs(600)))
}

/// How long after a first failure a tenant is tried again.
const FIRST_RETRY: Duration = Duration::from_secs(2);

fn error_policy(t: Arc<Tenant>, e: &Error, ctx: Arc<Context>) -> Action {
    let retry = ctx.retry(&*t, e, FIRST_RETRY);
    warn!(tenant = %t.name_any(), error = %e, ?retry, "tenant reconcile failed; retrying");
    retry
}

/// Turns each `Tenant` into its namespace and what it holds; anything the
/// operator owns that is changed or deleted is put back.
pub async fn controller(ctx: Arc<Context>, stop: Stop) {
    let client = ctx.kube.clone();
    let cfg =
        watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, labels::OPERATOR));
    // The owned objects live in namespaces while their Tenant is cluster
    // scoped: map them back by the tenant label rather than by owner.
    fn to_tenant<K: Resource>(o: K) -> Option<ObjectRef<Tenant>> {
        o.meta()
            .labels
            .as_ref()?
            .get(labels::TENANT)
            .map(|t| ObjectRef::new(t))
    }
    Controller::new(
        Api::<Tenant>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<ResourceQuota>::all(client.clone()),
        cfg.clone(),
        to_tenant,
    )
    .watches(
        Api::<LimitRange>::all(client.clone()),
        cfg.clone(),
        to_tenant,
    )
    .watches(
        Api::<NetworkPolicy>::all(client.clone()),
        cfg.clone(),
        to_tenant,
    )
    .watches(
        Api::<RoleBinding>::all(client.clone()),
        cfg.clone(),
        to_tenant,
    )
    .watches(Api::<Namespace>::all(client.clone()), cfg, to_tenant)
    .graceful_shutdown_on(stop)
    .run(reconcile, error_policy, ctx)
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "tenant controller");
        }
    })
    .await;
}
