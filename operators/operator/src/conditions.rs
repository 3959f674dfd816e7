//! Kubernetes-style conditions for the status of ndc's objects.

use ndc_crds::Condition;

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

/// Whether two condition lists say the same (times aside), so a status
/// that is only repeated is not written again.
pub fn same(a: &[Condition], b: &[Condition]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.type_ == y.type_
                && x.status == y.status
                && x.reason == y.reason
                && x.message == y.message
        })
}
