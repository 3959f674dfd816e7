//! What the simulator does in place of controllers: defaults, cluster IPs
//! and the status of workloads.

use serde_json::{json, Value};

use super::Key;
use crate::{now_rfc3339, Kind, Simulator};

/// What the simulator does in place of Kubernetes controllers (nothing
/// runs): a Service gets a cluster IP from 10.96.0.0/16 (an address only,
/// never a target); a Deployment or StatefulSet reports its replicas for its
/// current generation, ready at once when `ready` (otherwise none ready yet:
/// [`Simulator::ready_delay`] makes them ready later).
pub(super) fn simulate_controllers(kind: &Kind, obj: &mut Value, serial: u64, ready: bool) {
    match (kind.group, kind.kind) {
        ("", "Service") if obj["spec"]["clusterIP"].is_null() && serial > 0 => {
            obj["spec"]["clusterIP"] = json!(format!(
                "10.96.{}.{}",
                (serial / 254) % 256,
                serial % 254 + 1
            ));
        }
        ("apps", "Deployment" | "StatefulSet") => {
            obj["status"] = workload_status(kind.kind, obj, ready);
        }
        _ => {}
    }
}

/// A Deployment's or StatefulSet's status for its current generation: all
/// replicas updated, and all or none of them ready. Shaped so that
/// `kubectl rollout status` waits while none are ready and then succeeds.
fn workload_status(kind: &str, obj: &Value, ready: bool) -> Value {
    let replicas = obj["spec"]["replicas"].as_u64().unwrap_or(1);
    let generation = obj["metadata"]["generation"].as_u64().unwrap_or(1);
    let ready = ready || replicas == 0;
    let ready_count = if ready { replicas } else { 0 };
    let now = now_rfc3339();
    if kind == "StatefulSet" {
        let revision = format!(
            "{}-{generation:x}",
            obj["metadata"]["name"].as_str().unwrap_or_default()
        );
        return json!({
            "observedGeneration": generation, "replicas": replicas, "readyReplicas": ready_count,
            "availableReplicas": ready_count, "currentReplicas": replicas, "updatedReplicas": replicas,
            "currentRevision": revision, "updateRevision": revision,
        });
    }
    let available = |yes: bool, reason: &str| {
        json!({"type": "Available", "status": if yes { "True" } else { "False" }, "reason": reason,
               "lastUpdateTime": now, "lastTransitionTime": now})
    };
    let mut status = json!({
        "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
        "conditions": [
            if ready { available(true, "MinimumReplicasAvailable") } else { available(false, "MinimumReplicasUnavailable") },
            {"type": "Progressing", "status": "True",
             "reason": if ready { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
             "lastUpdateTime": now, "lastTransitionTime": now},
        ],
    });
    if ready {
        status["readyReplicas"] = json!(replicas);
        status["availableReplicas"] = json!(replicas);
    } else if replicas > 0 {
        status["unavailableReplicas"] = json!(replicas);
    }
    status
}

/// The kinds whose replicas the simulator reports ready.
pub(super) fn is_workload(kind: &Kind) -> bool {
    matches!(
        (kind.group, kind.kind),
        ("apps", "Deployment" | "StatefulSet")
    )
}

/// Defaults the API server fills in that clients rely on: a StatefulSet's
/// rolling update strategy (`kubectl rollout status` needs it).
pub(super) fn default_spec(kind: &Kind, obj: &mut Value) {
    if (kind.group, kind.kind) == ("apps", "StatefulSet")
        && obj["spec"].is_object()
        && obj["spec"]["updateStrategy"].is_null()
    {
        obj["spec"]["updateStrategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}});
    }
}

impl Simulator {
    /// After the ready delay, reports a workload's replicas ready if it is
    /// still the same object at the same generation.
    pub(super) fn schedule_ready(&self, kind: &Kind, key: Key, obj: &Value) {
        let (Some(uid), Some(generation)) = (
            obj["metadata"]["uid"].as_str().map(str::to_string),
            obj["metadata"]["generation"].as_u64(),
        ) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (sim, kind, delay) = (self.clone(), *kind, self.ready_delay);
        runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            let mut o = sim.objects.lock().unwrap_or_else(|e| e.into_inner());
            let Some(current) = o.items.get(&key) else {
                return;
            };
            let meta = &current["metadata"];
            if meta["uid"].as_str() != Some(uid.as_str())
                || meta["generation"].as_u64() != Some(generation)
                || !meta["deletionTimestamp"].is_null()
            {
                return;
            }
            let mut obj = current.clone();
            obj["status"] = workload_status(kind.kind, &obj, true);
            o.revision += 1;
            obj["metadata"]["resourceVersion"] = json!(o.revision.to_string());
            o.items.insert(key.clone(), obj.clone());
            o.record("MODIFIED", &key.0, &key.1, obj);
        });
    }
}
