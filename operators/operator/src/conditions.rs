//! Kubernetes-style conditions for the status of ndc's objects, and the
//! one way the operator writes a status.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use ndc_crds::{ClaimStatus, Condition, SharedServiceStatus, SubscriptionStatus, TenantStatus};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use crate::Error;

fn now() -> String {
    // RFC 3339 in UTC, from the system clock.
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    k8s_openapi::jiff::Timestamp::from_second(d.as_secs() as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn condition(status: &str, reason: &str, message: String, generation: Option<i64>) -> Condition {
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: now(),
        observed_generation: generation.unwrap_or(0),
    }
}

pub fn ready(reason: &str, message: String, generation: Option<i64>) -> Condition {
    condition("True", reason, message, generation)
}

pub fn not_ready(reason: &str, message: String, generation: Option<i64>) -> Condition {
    condition("False", reason, message, generation)
}

/// Gives each condition of `new` the transition time of the condition of
/// the same type in `old` when its status is the same: as on Kubernetes,
/// a condition's `lastTransitionTime` changes only when its status does
/// (a new reason or message alone is no transition).
pub fn keep_transition_times(new: &mut [Condition], old: &[Condition]) {
    for c in new {
        if let Some(prev) = old
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
        {
            c.last_transition_time = prev.last_transition_time.clone();
        }
    }
}

/// The status of one of ndc's kinds, as the operator writes it.
pub trait Status: Serialize + PartialEq {
    /// Fields another writer owns: left out of this status's apply.
    const NOT_MINE: &'static [&'static str] = &[];
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn conditions(&self) -> &[Condition];
    /// Takes from `old` the optional fields this status leaves unset: a
    /// status written without them keeps those already there.
    fn keep_unset(&mut self, _old: &Self) {}
}

impl Status for ClaimStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn keep_unset(&mut self, old: &Self) {
        let keep = |new: &mut Option<String>, old: &Option<String>| {
            if new.is_none() {
                new.clone_from(old);
            }
        };
        keep(&mut self.claim_uid, &old.claim_uid);
        keep(&mut self.external_name, &old.external_name);
        keep(&mut self.endpoint, &old.endpoint);
        keep(&mut self.secret_name, &old.secret_name);
    }
}

impl Status for SharedServiceStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}

impl Status for SubscriptionStatus {
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn keep_unset(&mut self, old: &Self) {
        if self.binding_secret.is_none() {
            self.binding_secret.clone_from(&old.binding_secret);
        }
    }
}

impl Status for TenantStatus {
    /// The control-plane revision is the tenant mirror's to write.
    const NOT_MINE: &'static [&'static str] = &["revision"];
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn keep_unset(&mut self, old: &Self) {
        self.revision = old.revision;
    }
}

/// `status` as it will be written over `old`: unset fields and unchanged
/// transition times kept. `None` when it says nothing `old` does not.
pub fn to_write<S: Status>(mut status: S, old: Option<&S>) -> Option<S> {
    if let Some(old) = old {
        status.keep_unset(old);
        keep_transition_times(status.conditions_mut(), old.conditions());
        if *old == status {
            return None;
        }
    }
    Some(status)
}

/// Writes `status` on `o` (whose status is `old`) by server-side apply of
/// the status subresource as `manager`, unless it only repeats `old`.
pub async fn set_status<K, S>(
    api: &Api<K>,
    o: &K,
    old: Option<&S>,
    status: S,
    manager: &str,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + DeserializeOwned,
    S: Status,
{
    let Some(status) = to_write(status, old) else {
        return Ok(());
    };
    let mut body = serde_json::to_value(&status).map_err(|e| Error::Other(e.to_string()))?;
    if let Some(fields) = body.as_object_mut() {
        for f in S::NOT_MINE {
            fields.remove(*f);
        }
    }
    let name = o.name_any();
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "name": name },
        "status": body,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(mut c: Condition, time: &str) -> Condition {
        c.last_transition_time = time.into();
        c
    }

    #[test]
    fn a_transition_time_changes_only_with_the_status() {
        let old = vec![at(not_ready("Provisioning", "waiting".into(), None), "t0")];
        // Another reason and message, the same status: no transition.
        let mut new = vec![not_ready("ProvisioningFailed", "no room".into(), None)];
        keep_transition_times(&mut new, &old);
        assert_eq!(new[0].last_transition_time, "t0");
        assert_eq!(new[0].reason, "ProvisioningFailed");
        // Another status: a transition, at the new time.
        let mut new = vec![at(ready("Provisioned", "ok".into(), None), "t1")];
        keep_transition_times(&mut new, &old);
        assert_eq!(new[0].last_transition_time, "t1");
    }

    #[test]
    fn a_repeated_status_is_not_written_and_unset_fields_stay() {
        let old = ClaimStatus {
            phase: "Ready".into(),
            claim_uid: Some("u1".into()),
            conditions: vec![at(ready("Provisioned", "ok".into(), None), "t0")],
            ..ClaimStatus::default()
        };
        let again = ClaimStatus {
            phase: "Ready".into(),
            conditions: vec![ready("Provisioned", "ok".into(), None)],
            ..ClaimStatus::default()
        };
        assert_eq!(to_write(again, Some(&old)), None);
        let failed = ClaimStatus {
            phase: "Failed".into(),
            conditions: vec![not_ready("NotInTenantNamespace", "no".into(), None)],
            ..ClaimStatus::default()
        };
        let written = to_write(failed, Some(&old)).expect("a change");
        assert_eq!(written.claim_uid.as_deref(), Some("u1"));
        assert_ne!(written.conditions[0].last_transition_time, "t0");
    }

    #[test]
    fn a_tenants_revision_is_left_to_the_mirror() {
        let old = TenantStatus {
            revision: 7,
            ..TenantStatus::default()
        };
        let new = TenantStatus {
            namespace: "ha-noi".into(),
            ..TenantStatus::default()
        };
        assert_eq!(to_write(new, Some(&old)).map(|s| s.revision), Some(7));
        assert_eq!(TenantStatus::NOT_MINE, ["revision"]);
    }

    /// Against the API simulator: the status is applied as its controller's
    /// manager through the status subresource, a repeat is not written, a
    /// new reason alone keeps the transition time, and the mirror's
    /// revision is left alone.
    #[tokio::test]
    async fn a_status_is_applied_by_its_controller_and_repeats_are_not_written() {
        use kube::api::PostParams;
        use ndc_crds::Tenant;
        let sim = ndc_kube_sim::Simulator::new().start().await.expect("sim");
        let kube = kube::Client::try_from(kube::Config::new(sim.url().parse().expect("url")))
            .expect("client");
        let crds: Api<ndc_crds::CustomResourceDefinition> = Api::all(kube.clone());
        for (_, crd) in ndc_crds::all() {
            crds.create(&PostParams::default(), &crd)
                .await
                .expect("crd");
        }
        let api: Api<Tenant> = Api::all(kube.clone());
        let spec = serde_json::from_value(json!({
            "displayName": "Hà Nội", "level": "province", "branch": "state",
            "securityLevel": 3, "state": "active",
            "quota": {"cpuMillis": 0, "memoryBytes": 0, "storageBytes": 0,
                      "buckets": 0, "databases": 0, "namespaces": 0},
        }))
        .expect("spec");
        api.create(&PostParams::default(), &Tenant::new("ha-noi", spec))
            .await
            .expect("tenant");
        let revision = json!({"apiVersion": "ndc.gov.vn/v1alpha1", "kind": "Tenant",
            "metadata": {"name": "ha-noi"}, "status": {"revision": 7}});
        api.patch_status(
            "ha-noi",
            &PatchParams::apply("mirror").force(),
            &Patch::Apply(&revision),
        )
        .await
        .expect("revision");
        let t = api.get("ha-noi").await.expect("get");
        let status = |reason: &str| TenantStatus {
            observed_generation: 1,
            conditions: vec![at(not_ready(reason, "waiting".into(), Some(1)), "t0")],
            namespace: "ha-noi".into(),
            revision: 0,
        };
        let manager = "ndc-operator/tenants";
        set_status(&api, &t, t.status.as_ref(), status("Starting"), manager)
            .await
            .expect("first");
        let t = api.get("ha-noi").await.expect("get");
        let st = t.status.clone().expect("status");
        assert_eq!((st.revision, st.namespace.as_str()), (7, "ha-noi"));
        let entry = t
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .find(|f| f.manager.as_deref() == Some(manager))
            .expect("the controller's manager");
        assert_eq!(
            (entry.operation.as_deref(), entry.subresource.as_deref()),
            (Some("Apply"), Some("status"))
        );
        // A repeat is not written.
        let before = t.metadata.resource_version.clone();
        set_status(&api, &t, t.status.as_ref(), status("Starting"), manager)
            .await
            .expect("repeat");
        let t = api.get("ha-noi").await.expect("get");
        assert_eq!(t.metadata.resource_version, before);
        // Another reason, the same status: written, the time kept.
        let mut other = status("StillStarting");
        other.conditions[0].last_transition_time = "t1".into();
        set_status(&api, &t, t.status.as_ref(), other, manager)
            .await
            .expect("reason");
        let st = api
            .get("ha-noi")
            .await
            .expect("get")
            .status
            .expect("status");
        assert_eq!(st.conditions[0].reason, "StillStarting");
        assert_eq!(st.conditions[0].last_transition_time, "t0");
        assert_eq!(st.revision, 7);
        sim.stop().await.expect("stop");
    }
}
