//! The claim feed: the operator follows the control plane's claims and, when
//! one changes, reconciles at once the objects waiting on it (a bucket, a
//! database, or a subscription's per-tenant resources), instead of asking
//! the control plane about each waiting object on a timer.
//!
//! A waiting object registers the claim it waits on, by tenant, kind and
//! name. The timers stay, slower, as a safety net (a watch that broke, a
//! tenant merged meanwhile).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use kube::runtime::reflector::ObjectRef;
use ndc_api::claims::claims_client::ClaimsClient;
use ndc_api::claims::WatchClaimsRequest;
use ndc_crds::{Database, ObjectBucket, ServiceSubscription};
use tokio::sync::broadcast;

use crate::{Context, Error, Stop};

/// Triggers kept for a controller that is busy; one that falls further
/// behind is caught by its timers.
const BACKLOG: usize = 16_384;

/// A claim as the feed names it: tenant, kind (`bucket` or `database`), name.
pub type ClaimKey = (String, String, String);

/// An object that waits on a claim.
#[derive(Clone, Debug, PartialEq)]
pub enum Waiter {
    Bucket(ObjectRef<ObjectBucket>),
    Database(ObjectRef<Database>),
    Subscription(ObjectRef<ServiceSubscription>),
}

/// Who waits on which claim, and the triggers of each controller.
pub struct ClaimFeed {
    waiting: Mutex<HashMap<ClaimKey, Waiter>>,
    buckets: broadcast::Sender<ObjectRef<ObjectBucket>>,
    databases: broadcast::Sender<ObjectRef<Database>>,
    subscriptions: broadcast::Sender<ObjectRef<ServiceSubscription>>,
}

impl Default for ClaimFeed {
    fn default() -> Self {
        ClaimFeed {
            waiting: Mutex::default(),
            buckets: broadcast::channel(BACKLOG).0,
            databases: broadcast::channel(BACKLOG).0,
            subscriptions: broadcast::channel(BACKLOG).0,
        }
    }
}

fn key(tenant: &str, kind: &str, name: &str) -> ClaimKey {
    (tenant.to_string(), kind.to_string(), name.to_string())
}

/// The triggers of one channel, as a stream for `Controller::reconcile_on`.
fn stream<T: Clone + Send + 'static>(
    tx: &broadcast::Sender<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::unfold(tx.subscribe(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(v) => return Some((v, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

impl ClaimFeed {
    /// `w` waits on the claim `name` of kind `kind` of `tenant`.
    pub fn wait(&self, tenant: &str, kind: &str, name: &str, w: Waiter) {
        self.lock().insert(key(tenant, kind, name), w);
    }

    /// Nobody waits on that claim any more.
    pub fn done(&self, tenant: &str, kind: &str, name: &str) {
        self.lock().remove(&key(tenant, kind, name));
    }

    /// `w` is gone (deleted while it waited): it waits on nothing.
    pub fn forget(&self, w: &Waiter) {
        self.lock().retain(|_, v| v != w);
    }

    /// Runs the clean-up of a deleted object `w`; once it has succeeded,
    /// `w` waits on nothing.
    pub async fn cleanup<T, E>(
        &self,
        w: Waiter,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let r = f.await;
        if r.is_ok() {
            self.forget(&w);
        }
        r
    }

    /// Claims waited on now.
    pub fn waiting(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClaimKey, Waiter>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reconciles whoever waits on this claim.
    fn changed(&self, k: &ClaimKey) {
        let Some(w) = self.lock().get(k).cloned() else {
            return;
        };
        // No receiver (a controller not running yet) is not an error.
        let _sent = match w {
            Waiter::Bucket(r) => self.buckets.send(r).is_ok(),
            Waiter::Database(r) => self.databases.send(r).is_ok(),
            Waiter::Subscription(r) => self.subscriptions.send(r).is_ok(),
        };
    }

    pub fn bucket_triggers(&self) -> impl Stream<Item = ObjectRef<ObjectBucket>> + Send + 'static {
        stream(&self.buckets)
    }

    pub fn database_triggers(&self) -> impl Stream<Item = ObjectRef<Database>> + Send + 'static {
        stream(&self.databases)
    }

    pub fn subscription_triggers(
        &self,
    ) -> impl Stream<Item = ObjectRef<ServiceSubscription>> + Send + 'static {
        stream(&self.subscriptions)
    }
}

/// The feed's key of a claim from the control plane's claim.
fn claim_key(c: &ndc_api::claims::Claim) -> Option<ClaimKey> {
    if c.tenant.is_empty() || c.kind.is_empty() || c.name.is_empty() {
        return None;
    }
    Some(key(&c.tenant, &c.kind, &c.name))
}

/// Follows the control plane's claims until `stop`, watching again after a
/// break (changes missed meanwhile are caught by the controllers' timers).
pub async fn follow(ctx: Arc<Context>, stop: Stop) {
    crate::follow_until_stopped(stop, "claims", || follow_once(&ctx)).await;
}

async fn follow_once(ctx: &Context) -> Result<(), Error> {
    let auth = ctx.ndc.auth();
    // From now on: what changes from here matters. The first message says
    // the watch is established.
    let mut stream = ctx
        .ndc
        .call(|ch| {
            let a = auth.clone();
            async move {
                ClaimsClient::with_interceptor(ch, a)
                    .max_decoding_message_size(256 * 1024 * 1024)
                    .watch(WatchClaimsRequest { start_revision: 0 })
                    .await
            }
        })
        .await?
        .into_inner();
    // Everyone waiting may have missed a change while the watch was down.
    let all: Vec<ClaimKey> = ctx.claim_feed.lock().keys().cloned().collect();
    for k in &all {
        ctx.claim_feed.changed(k);
    }
    while let Some(msg) = stream.next().await {
        for e in &msg?.events {
            if let Some(k) = e.claim.as_ref().and_then(claim_key) {
                ctx.claim_feed.changed(&k);
            }
        }
    }
    Err(Error::Other("the control plane's claim watch ended".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_named_by_tenant_kind_and_name() {
        let c = ndc_api::claims::Claim {
            uid: "u1".into(),
            tenant: "t1".into(),
            kind: "bucket".into(),
            name: "docs".into(),
            ..Default::default()
        };
        assert_eq!(
            claim_key(&c),
            Some(("t1".into(), "bucket".into(), "docs".into()))
        );
        assert_eq!(claim_key(&ndc_api::claims::Claim::default()), None);
    }

    #[tokio::test]
    async fn a_change_reaches_only_the_object_that_waits_on_it() {
        let feed = ClaimFeed::default();
        let mut buckets = Box::pin(feed.bucket_triggers());
        let r = ObjectRef::<ObjectBucket>::new("docs").within("t1");
        feed.wait("t1", "bucket", "docs", Waiter::Bucket(r.clone()));
        feed.changed(&key("t1", "bucket", "other"));
        feed.changed(&key("t1", "bucket", "docs"));
        assert_eq!(buckets.next().await, Some(r));
        feed.done("t1", "bucket", "docs");
        assert_eq!(feed.waiting(), 0);
        // Nobody waits on docs now: the next trigger is the next waiter's.
        feed.changed(&key("t1", "bucket", "docs"));
        let r2 = ObjectRef::<ObjectBucket>::new("files").within("t2");
        feed.wait("t2", "bucket", "files", Waiter::Bucket(r2.clone()));
        feed.changed(&key("t2", "bucket", "files"));
        assert_eq!(buckets.next().await, Some(r2.clone()));
        // Deleted while it waits: forgotten, with what it waited on.
        let s = ObjectRef::<ServiceSubscription>::new("sub").within("t2");
        feed.wait("t2", "database", "svc-db", Waiter::Subscription(s.clone()));
        feed.wait("t2", "bucket", "svc-files", Waiter::Subscription(s.clone()));
        assert_eq!(feed.waiting(), 3);
        feed.forget(&Waiter::Subscription(s));
        assert_eq!(feed.waiting(), 1);
        feed.forget(&Waiter::Bucket(r2));
        assert_eq!(feed.waiting(), 0);
    }
}
