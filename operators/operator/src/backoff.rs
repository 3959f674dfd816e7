//! When a failed reconcile is tried again: an exponential backoff with
//! jitter, kept per object, forgotten once the object reconciles.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::core::DynamicObject;
use kube::runtime::reflector::ObjectRef;

/// The longest wait before a retry.
pub const CAP: Duration = Duration::from_secs(300);

/// Failures in a row, per object.
#[derive(Default)]
pub struct Backoffs {
    failures: Mutex<HashMap<ObjectRef<DynamicObject>, u32>>,
}

impl Backoffs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<DynamicObject>, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `o` failed again: the wait before its next try, from `first` (the
    /// wait after a first failure) doubled for each failure before it.
    pub fn failed(&self, o: ObjectRef<DynamicObject>, first: Duration) -> Duration {
        let before = {
            let mut m = self.lock();
            let n = m.entry(o).or_default();
            let before = *n;
            *n = n.saturating_add(1);
            before
        };
        delay(first, before, getrandom::u64().ok())
    }

    /// `o` reconciled: its next failure is a first one again.
    pub fn forget(&self, o: &ObjectRef<DynamicObject>) {
        self.lock().remove(o);
    }

    /// Objects whose last reconcile failed.
    pub fn failing(&self) -> usize {
        self.lock().len()
    }
}

/// `first` doubled `before` times, at most [`CAP`], of which the upper half
/// is drawn from `random` (so that objects failing together do not all try
/// again together, and none waits longer than the doubling says). Without
/// randomness at hand, the whole doubled wait.
fn delay(first: Duration, before: u32, random: Option<u64>) -> Duration {
    let full = first
        .saturating_mul(2u32.saturating_pow(before.min(31)))
        .min(CAP);
    let half = full / 2;
    let span = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    match random {
        Some(r) => half + Duration::from_nanos(r % span.saturating_add(1)),
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(name: &str) -> ObjectRef<DynamicObject> {
        ObjectRef::<ndc_crds::ObjectBucket>::new(name)
            .within("t1")
            .erase()
    }

    #[test]
    fn the_wait_doubles_with_jitter_up_to_the_cap() {
        let first = Duration::from_millis(500);
        assert_eq!(delay(first, 0, Some(0)), Duration::from_millis(250));
        assert_eq!(delay(first, 0, Some(250_000_000)), first);
        assert_eq!(delay(first, 0, None), first);
        let third = delay(first, 3, Some(u64::MAX));
        assert!(third >= Duration::from_secs(2) && third <= Duration::from_secs(4));
        assert_eq!(delay(first, 30, None), CAP);
        assert_eq!(delay(first, u32::MAX, Some(0)), CAP / 2);
    }

    #[test]
    fn each_object_backs_off_alone_and_is_forgotten_once_it_reconciles() {
        let b = Backoffs::default();
        let first = Duration::from_secs(1);
        assert!(b.failed(bucket("docs"), first) <= first);
        for _ in 0..20 {
            b.failed(bucket("docs"), first);
        }
        assert!(b.failed(bucket("docs"), first) >= CAP / 2);
        // Another object starts from the first wait.
        assert!(b.failed(bucket("files"), first) <= first);
        assert_eq!(b.failing(), 2);
        b.forget(&bucket("docs"));
        assert_eq!(b.failing(), 1);
        assert!(b.failed(bucket("docs"), first) <= first);
    }
}
