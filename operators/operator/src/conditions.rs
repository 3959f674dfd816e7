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
}
