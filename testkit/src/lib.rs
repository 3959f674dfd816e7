//! ndc's test helpers, shared by every crate's tests: waiting for a
//! condition with a deadline (never a bare sleep), builders of test values,
//! and the storage drivers' conformance suites ([`conformance`]).
//!
//! For dev-dependencies only: no shipped crate may depend on it (the
//! dependency-rule test in `ndc/tests/architecture.rs` checks this).

pub mod conformance;

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ndc_core::{Branch, Level, Quota, TenantSpec};

/// How long a test waits for something that should happen, unless it says
/// otherwise. Long enough for a loaded CI machine; a test that passes
/// waits far less.
pub const DEADLINE: Duration = Duration::from_secs(60);
/// How often a condition is looked at again.
pub const POLL: Duration = Duration::from_millis(25);

/// Polls `check` until it gives a value, or fails once [`DEADLINE`] has
/// passed, naming `what` it waited for.
pub async fn wait_for<T, F, Fut>(what: &str, check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_for_within(DEADLINE, what, check).await
}

/// [`wait_for`] with a deadline of its own.
pub async fn wait_for_within<T, F, Fut>(within: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether `cond` comes to hold within `within` (looked at every [`POLL`]).
pub async fn holds_within(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until `cond` holds; panics, naming `what`, after [`DEADLINE`].
pub async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    assert!(
        holds_within(DEADLINE, cond).await,
        "timed out waiting for {what}"
    );
}

/// [`wait_until`] for tests without a runtime: blocks the thread.
pub fn wait_until_blocking(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(POLL);
    }
}

/// `n` cores' worth of every resource: n cores, n GiB of memory, 16·n GiB
/// of storage, n buckets, databases and namespaces.
pub fn cores(n: u64) -> Quota {
    Quota {
        cpu_millis: n * 1000,
        memory_bytes: n << 30,
        storage_bytes: n << 34,
        buckets: n,
        databases: n,
        namespaces: n,
    }
}

/// A State-branch tenant for tests: display name "Đơn vị <id>", security
/// level 3, no labels, quota [`cores`]`(n)`, no deletion protection.
pub fn tenant_spec(
    id: &str,
    level: Level,
    parent: Option<&str>,
    code: Option<&str>,
    n: u64,
) -> TenantSpec {
    TenantSpec {
        id: id.into(),
        display_name: format!("Đơn vị {id}"),
        level,
        branch: Branch::State,
        parent: parent.map(Into::into),
        admin_code: code.map(Into::into),
        security_level: 3,
        labels: Default::default(),
        quota: cores(n),
        deletion_protection: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_ends_with_the_value_or_at_its_deadline() {
        let mut n = 0;
        let got = wait_for("three tries", || {
            n += 1;
            std::future::ready((n == 3).then_some(n))
        })
        .await
        .unwrap();
        assert_eq!(got, 3);
        let e = wait_for_within(Duration::from_millis(60), "never", || {
            std::future::ready(None::<()>)
        })
        .await
        .unwrap_err();
        assert_eq!(e.to_string(), "timed out waiting for never");
        assert!(!holds_within(Duration::from_millis(60), || false).await);
    }
}
