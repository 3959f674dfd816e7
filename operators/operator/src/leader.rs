//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several
//! operator replicas only one writes to the cluster at a time.
//!
//! The Lease names its holder (`holderIdentity`), when the holder last
//! renewed it (`renewTime`) and for how long a renewal counts
//! (`leaseDurationSeconds`). A candidate takes the Lease when it is free (no
//! holder) or expired (`renewTime + leaseDurationSeconds` in the past); every
//! write is a replace guarded by the `resourceVersion` read just before, so
//! of two candidates racing for the same Lease one gets `409 Conflict` and
//! loses. The holder renews every `renew_every`; it drops its work as soon
//! as a renewal fails or shows another holder, and at the latest
//! `lease_duration - renew_every` after its last successful renewal (a
//! renewal that hangs), that is before any other candidate may consider the
//! Lease expired. Expiry is judged on the clocks of the candidates against
//! the holder's `renewTime`: the replicas' clocks must agree to well within
//! `renew_every`.
//!
//! Identities must be unique among the candidates (a pod name, say): a
//! candidate that finds its own identity on the Lease takes it at once.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// Where the Lease lives, who we are, and the timings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The Lease's namespace; created if missing.
    pub namespace: String,
    /// The Lease's name: the same for every replica.
    pub name: String,
    /// This replica's identity, unique among the candidates (a pod name).
    pub identity: String,
    /// How long a renewal holds the Lease (written as whole seconds,
    /// rounded up).
    pub lease_duration: Duration,
    /// How often the holder renews, and how often a standby tries to take
    /// the Lease. At most half of `lease_duration`.
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// The operator's Lease, `ndc-system/ndc-operator`: held for 15 s,
    /// renewed every 5 s.
    pub fn new(identity: impl Into<String>) -> Self {
        LeaseConfig {
            namespace: "ndc-system".into(),
            name: "ndc-operator".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.identity.is_empty() {
            anyhow::bail!("leader election: the identity must not be empty");
        }
        if self.namespace.is_empty() || self.name.is_empty() {
            anyhow::bail!("leader election: the Lease's namespace and name must not be empty");
        }
        if self.lease_duration < Duration::from_secs(1) {
            anyhow::bail!("leader election: the lease duration must be at least 1 s");
        }
        if self.renew_every.is_zero() || self.renew_every * 2 > self.lease_duration {
            anyhow::bail!(
                "leader election: renew_every ({:?}) must be more than zero and at most half the lease duration ({:?})",
                self.renew_every,
                self.lease_duration
            );
        }
        Ok(())
    }

    /// `leaseDurationSeconds`: the duration rounded up to whole seconds.
    fn duration_secs(&self) -> i32 {
        let secs = self
            .lease_duration
            .as_secs()
            .saturating_add(u64::from(self.lease_duration.subsec_nanos() > 0));
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

/// Runs `work` while this replica holds the Lease, until `stop` resolves.
///
/// Loops: acquire the Lease (creating it, and its namespace, if missing;
/// taking it over only when free or expired), then run `work()` and renew
/// every `renew_every`. When a renewal fails or another holder shows up the
/// work future is dropped at once and the replica goes back to acquiring;
/// `work()` is called afresh on the next acquisition. When `stop` resolves
/// the work is dropped and the Lease released (holder cleared) so that a
/// standby takes over without waiting for it to expire. If `work` returns
/// by itself the Lease is released too and `lead` returns.
///
/// Errors only on a configuration it cannot use; trouble with the API
/// server is logged and retried.
pub async fn lead<F, Fut>(
    client: kube::Client,
    cfg: LeaseConfig,
    stop: impl Future<Output = ()>,
    work: F,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let (leading, _) = watch::channel(false);
    lead_observed(client, cfg, stop, work, leading).await
}

/// [`lead`], telling `leading` whether this replica holds the Lease (true
/// from acquisition until the work is dropped).
pub async fn lead_observed<F, Fut>(
    client: kube::Client,
    cfg: LeaseConfig,
    stop: impl Future<Output = ()>,
    work: F,
    leading: watch::Sender<bool>,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    cfg.check()?;
    let elector = Elector {
        leases: Api::namespaced(client.clone(), &cfg.namespace),
        namespaces: Api::all(client),
        duration_secs: cfg.duration_secs(),
        cfg,
    };
    let mut stop = pin!(stop);
    let mut seen_holder: Option<String> = None;
    loop {
        // Acquiring.
        let attempt = tokio::select! {
            biased;
            () = &mut stop => {
                elector.release().await;
                return Ok(());
            }
            a = tokio::time::timeout(elector.cfg.lease_duration, elector.try_acquire()) => {
                match a {
                    Ok(a) => a.map_err(anyhow::Error::from),
                    Err(_) => Err(anyhow::anyhow!("no answer in {:?}", elector.cfg.lease_duration)),
                }
            }
        };
        let wait = match attempt {
            Ok(Attempt::Acquired { at }) => {
                info!(
                    lease = %elector.lease_ref(),
                    identity = %elector.cfg.identity,
                    "acquired the leader lease; leading"
                );
                seen_holder = None;
                leading.send_replace(true);
                let outcome = {
                    let work = work();
                    elector.hold(at, &mut stop, work).await
                };
                // The work future is dropped by now.
                leading.send_replace(false);
                match outcome {
                    Held::Stopped => {
                        info!(lease = %elector.lease_ref(), "stopping: releasing the leader lease");
                        elector.release().await;
                        return Ok(());
                    }
                    Held::WorkDone => {
                        info!(lease = %elector.lease_ref(), "the work ended: releasing the leader lease");
                        elector.release().await;
                        return Ok(());
                    }
                    Held::Lost(why) => {
                        warn!(lease = %elector.lease_ref(), reason = %why, "lost the leader lease; work stopped, standing by");
                        // Try again at once: the lease may still be ours.
                        Duration::ZERO
                    }
                }
            }
            Ok(Attempt::Held { holder, expires_in }) => {
                if seen_holder.as_deref() != Some(holder.as_str()) {
                    info!(
                        lease = %elector.lease_ref(),
                        holder = %holder,
                        "the leader lease is held by another replica; standing by"
                    );
                    seen_holder = Some(holder);
                }
                // Look again when it would expire, or sooner (it may be released).
                expires_in.min(elector.cfg.renew_every)
            }
            Ok(Attempt::Raced) => {
                debug!(lease = %elector.lease_ref(), "another candidate wrote the lease first");
                elector.cfg.renew_every
            }
            Err(e) => {
                warn!(lease = %elector.lease_ref(), error = %e, "cannot acquire the leader lease; retrying");
                elector.cfg.renew_every
            }
        };
        if !wait.is_zero() {
            tokio::select! {
                biased;
                () = &mut stop => {
                    elector.release().await;
                    return Ok(());
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

struct Elector {
    leases: Api<Lease>,
    namespaces: Api<Namespace>,
    cfg: LeaseConfig,
    duration_secs: i32,
}

enum Attempt {
    /// Ours: renewed (written) at `at`, by our clock, just before the write.
    Acquired { at: Instant },
    /// Another holder's, valid for `expires_in` more.
    Held {
        holder: String,
        expires_in: Duration,
    },
    /// Another candidate wrote it between our read and our write.
    Raced,
}

enum Held {
    Stopped,
    WorkDone,
    Lost(String),
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.is_not_found())
}

fn holder_of(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// How long the Lease stays valid after `now`, if it is still valid.
fn remaining(spec: &LeaseSpec, now: Timestamp, default_secs: i32) -> Option<Duration> {
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    let secs = spec.lease_duration_seconds.unwrap_or(default_secs).max(0);
    let Ok(expires) = renewed.checked_add(SignedDuration::from_secs(i64::from(secs))) else {
        // Beyond the representable range: as good as forever.
        return Some(Duration::MAX);
    };
    let left = expires.duration_since(now);
    if left.is_positive() {
        Duration::try_from(left).ok()
    } else {
        None
    }
}

impl Elector {
    fn lease_ref(&self) -> String {
        format!("{}/{}", self.cfg.namespace, self.cfg.name)
    }

    fn ours(&self, lease: &Lease) -> bool {
        holder_of(lease) == Some(self.cfg.identity.as_str())
    }

    async fn try_acquire(&self) -> Result<Attempt, kube::Error> {
        let Some(mut lease) = self.leases.get_opt(&self.cfg.name).await? else {
            return self.create().await;
        };
        let now = Timestamp::now();
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let renewing = holder.as_deref() == Some(self.cfg.identity.as_str());
        if let Some(h) = holder.as_ref().filter(|_| !renewing) {
            if let Some(left) = remaining(spec, now, self.duration_secs) {
                return Ok(Attempt::Held {
                    holder: h.clone(),
                    expires_in: left,
                });
            }
            info!(lease = %self.lease_ref(), holder = %h, "the leader lease expired; taking it over");
        }
        if !renewing {
            // A new holder (after another, or after a release).
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(self.cfg.identity.clone());
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(self.duration_secs);
        let at = Instant::now();
        // `lease` carries the resourceVersion just read: a concurrent write wins.
        match self
            .leases
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Acquired { at }),
            Err(e) if conflict(&e) => Ok(Attempt::Raced),
            Err(e) => Err(e),
        }
    }

    async fn create(&self) -> Result<Attempt, kube::Error> {
        let now = Timestamp::now();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.cfg.name.clone()),
                namespace: Some(self.cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.cfg.identity.clone()),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_duration_seconds: Some(self.duration_secs),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        let at = Instant::now();
        match self.leases.create(&PostParams::default(), &lease).await {
            Ok(_) => return Ok(Attempt::Acquired { at }),
            Err(e) if conflict(&e) => return Ok(Attempt::Raced),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(e),
        }
        // The namespace is missing.
        info!(namespace = %self.cfg.namespace, "creating the leader lease's namespace");
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(self.cfg.namespace.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        match self.namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(e) if conflict(&e) => {}
            Err(e) => return Err(e),
        }
        let at = Instant::now();
        match self.leases.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Acquired { at }),
            Err(e) if conflict(&e) => Ok(Attempt::Raced),
            Err(e) => Err(e),
        }
    }

    /// Runs `work` while renewing; returns (having dropped `work`) when
    /// `stop` resolves, the work ends, or the Lease is lost.
    async fn hold(
        &self,
        acquired_at: Instant,
        stop: &mut (impl Future<Output = ()> + Unpin),
        work: impl Future<Output = ()>,
    ) -> Held {
        let work = pin!(work);
        let renewing = pin!(self.keep_renewing(acquired_at));
        tokio::select! {
            biased;
            () = stop => Held::Stopped,
            why = renewing => Held::Lost(why),
            () = work => Held::WorkDone,
        }
    }

    /// Renews every `renew_every`; returns why the Lease is no longer ours.
    async fn keep_renewing(&self, mut renewed_at: Instant) -> String {
        let deadline_after = self.cfg.lease_duration - self.cfg.renew_every;
        loop {
            tokio::time::sleep_until(renewed_at + self.cfg.renew_every).await;
            let started = Instant::now();
            match tokio::time::timeout_at(renewed_at + deadline_after, self.renew()).await {
                Ok(Ok(None)) => {
                    debug!(lease = %self.lease_ref(), "renewed the leader lease");
                    renewed_at = started;
                }
                Ok(Ok(Some(holder))) => return format!("now held by {holder:?}"),
                Ok(Err(e)) => return format!("renewal failed: {e}"),
                Err(_) => {
                    return format!(
                        "no renewal for {deadline_after:?}: the lease may expire for the others"
                    )
                }
            }
        }
    }

    /// Renews the Lease if it is still ours: `None`, or who holds it now.
    /// A write that races another is retried on what it wrote.
    async fn renew(&self) -> Result<Option<String>, kube::Error> {
        loop {
            let Some(mut lease) = self.leases.get_opt(&self.cfg.name).await? else {
                return Ok(Some(String::new()));
            };
            if !self.ours(&lease) {
                return Ok(Some(holder_of(&lease).unwrap_or_default().to_string()));
            }
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            spec.lease_duration_seconds = Some(self.duration_secs);
            match self
                .leases
                .replace(&self.cfg.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => return Ok(None),
                Err(e) if conflict(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Clears the holder if it is us, so a standby need not wait for the
    /// Lease to expire. Best effort, bounded by the lease duration.
    async fn release(&self) {
        let release = async {
            loop {
                let Some(mut lease) = self.leases.get_opt(&self.cfg.name).await? else {
                    return Ok::<bool, kube::Error>(false);
                };
                if !self.ours(&lease) {
                    return Ok(false);
                }
                let spec = lease.spec.get_or_insert_with(Default::default);
                spec.holder_identity = None;
                spec.renew_time = Some(MicroTime(Timestamp::now()));
                spec.lease_duration_seconds = Some(1);
                match self
                    .leases
                    .replace(&self.cfg.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => return Ok(true),
                    Err(e) if conflict(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        match tokio::time::timeout(self.cfg.lease_duration, release).await {
            Ok(Ok(true)) => info!(lease = %self.lease_ref(), "released the leader lease"),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                warn!(lease = %self.lease_ref(), error = %e, "cannot release the leader lease; it will expire")
            }
            Err(_) => {
                warn!(lease = %self.lease_ref(), "releasing the leader lease timed out; it will expire")
            }
        }
    }
}
