//! The provisioner's queue: the claims that have not converged, kept
//! current from the store's change feed.

use super::*;

/// Where a queued claim is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for a free slot, in `ready`.
    Ready,
    /// A pass is under way.
    Busy,
    /// Failed; tried again at this instant, in `later`.
    Later(Instant),
}

struct Entry {
    created: u64,
    /// What the claim last asked for: a change of it ends a backoff.
    basis: StatusBasis,
    state: State,
    /// The backoff after the next failure.
    delay: Duration,
}

/// The claims that have not converged, as the leader last saw them. Filled
/// by one read of every claim when the node becomes leader, then kept
/// current from the store's change feed, so a pass never waits for a scan.
/// Only names are kept (a million claims take a few hundred MiB), and a
/// pass reads its claim as it is then. Taking the next claims and ending a
/// backoff cost a logarithm, however many claims wait or keep failing.
#[derive(Default)]
pub(super) struct Queue {
    index: HashMap<String, Entry>,
    /// Claims waiting for a slot, oldest first: (created revision, uid).
    ready: BTreeSet<(u64, String)>,
    /// Claims in backoff, soonest first.
    later: BTreeSet<(Instant, String)>,
    /// The revision the queue reflects; older changes are ignored.
    pub(super) revision: u64,
    /// Whether it was filled since it was last found behind the feed.
    pub(super) loaded: bool,
    /// Kinds this node has no backend for: a claim of such a kind that
    /// already says so waits for a change instead of being retried.
    no_backend: Vec<ClaimKind>,
}

impl Queue {
    pub(super) fn new(provisioning: &Provisioning) -> Queue {
        let mut no_backend = Vec::new();
        if provisioning.objects.is_none() {
            no_backend.push(ClaimKind::Bucket);
        }
        if provisioning.databases.is_none() {
            no_backend.push(ClaimKind::Database);
        }
        Queue {
            no_backend,
            ..Queue::default()
        }
    }

    pub(super) fn clear(&mut self) {
        *self = Queue {
            no_backend: std::mem::take(&mut self.no_backend),
            ..Queue::default()
        };
    }

    /// Whether a pass could change anything: not when the claim already
    /// reports that its kind has no backend here (until the node is
    /// configured with one, and restarted).
    pub(super) fn workable(&self, claim: &Claim) -> bool {
        let reported = claim
            .status
            .ready_condition()
            .is_some_and(|c| matches!(c.reason.as_str(), NO_OBJECT_STORE | NO_DATABASE_SERVER));
        !(reported && self.no_backend.contains(&claim.kind()))
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// Takes `uid` out of the set its state puts it in.
    fn unlist(&mut self, uid: &str, e: &Entry) {
        match e.state {
            State::Ready => {
                self.ready.remove(&(e.created, uid.to_string()));
            }
            State::Later(at) => {
                self.later.remove(&(at, uid.to_string()));
            }
            State::Busy => {}
        }
    }

    fn set_state(&mut self, uid: &str, state: State) {
        let Some(e) = self.index.remove(uid) else {
            return;
        };
        self.unlist(uid, &e);
        match state {
            State::Ready => {
                self.ready.insert((e.created, uid.to_string()));
            }
            State::Later(at) => {
                self.later.insert((at, uid.to_string()));
            }
            State::Busy => {}
        }
        self.index.insert(uid.to_string(), Entry { state, ..e });
    }

    pub(super) fn remove(&mut self, uid: &str) {
        if let Some(e) = self.index.remove(uid) {
            self.unlist(uid, &e);
        }
    }

    /// Takes a claim as it now is. A new claim, or one that asks for
    /// something new, is ready at once (a backoff ends).
    pub(super) fn put(&mut self, claim: &Claim) {
        if claim.converged() || !self.workable(claim) {
            self.remove(&claim.uid);
            return;
        }
        let basis = StatusBasis::of(claim);
        match self.index.get_mut(&claim.uid) {
            Some(e) if e.basis == basis => {}
            Some(e) => {
                e.basis = basis;
                e.delay = FIRST_RETRY;
                if matches!(e.state, State::Later(_)) {
                    self.set_state(&claim.uid, State::Ready);
                }
            }
            None => {
                self.index.insert(
                    claim.uid.clone(),
                    Entry {
                        created: claim.created_revision,
                        basis,
                        state: State::Ready,
                        delay: FIRST_RETRY,
                    },
                );
                self.ready
                    .insert((claim.created_revision, claim.uid.clone()));
            }
        }
    }

    /// Backoffs that are over end.
    pub(super) fn wake(&mut self, now: Instant) {
        while let Some((at, uid)) = self.later.first().cloned() {
            if at > now {
                break;
            }
            self.set_state(&uid, State::Ready);
        }
    }

    /// The oldest `n` ready claims, marked busy.
    pub(super) fn take(&mut self, n: usize) -> Vec<String> {
        let uids: Vec<String> = self.ready.iter().take(n).map(|(_, u)| u.clone()).collect();
        for uid in &uids {
            self.set_state(uid, State::Busy);
        }
        uids
    }

    /// A pass ended: a failed one waits its backoff; a claim that is still
    /// here after a good pass is looked at again (the pass reads it fresh).
    pub(super) fn done(&mut self, uid: &str, ok: bool, now: Instant) {
        let Some(e) = self.index.get_mut(uid) else {
            return;
        };
        if e.state != State::Busy {
            return;
        }
        if ok {
            e.delay = FIRST_RETRY;
            self.set_state(uid, State::Ready);
        } else {
            let at = now + e.delay;
            e.delay = (e.delay * 2).min(MAX_RETRY);
            self.set_state(uid, State::Later(at));
        }
    }

    /// Applies a batch of changes from the feed.
    pub(super) fn apply(&mut self, b: &ndc_store::WatchBatch) {
        match b {
            ndc_store::WatchBatch::Reset { .. } => self.loaded = false,
            ndc_store::WatchBatch::Changes { revision, events } => {
                if !self.loaded || *revision <= self.revision {
                    return;
                }
                self.revision = *revision;
                for e in events.iter() {
                    let Some(uid) = e.key.strip_prefix(ndc_store::keys::CLAIMS_PREFIX) else {
                        continue;
                    };
                    if e.kind == ndc_store::EventKind::Delete {
                        self.remove(uid);
                        continue;
                    }
                    match serde_json::from_slice::<Claim>(&e.object.value) {
                        Ok(c) => self.put(&c),
                        Err(err) => {
                            warn!(%uid, error = %err, "unreadable claim in the change feed; reading every claim again");
                            self.loaded = false;
                        }
                    }
                }
            }
        }
    }
}

/// Why a claim is not provisioned: its kind has no backend on this node.
pub(super) const NO_OBJECT_STORE: &str = "NoObjectStore";
pub(super) const NO_DATABASE_SERVER: &str = "NoDatabaseServer";

/// Claims read at once when the queue is filled.
const LOAD_PAGE: usize = 10_000;

/// Fills the queue with every claim that has not converged, a page at a
/// time. Returns the revision of the first page, or `None` if the store
/// could not be read.
pub(super) fn load(claims: &ndc_store::StoreReader, queue: &mut Queue) -> Option<u64> {
    queue.clear();
    let mut first = None;
    let mut after: Option<String> = None;
    loop {
        let page = match claims.list(ndc_store::keys::CLAIMS_PREFIX, after.as_deref(), LOAD_PAGE) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot read the claims to provision");
                return None;
            }
        };
        first.get_or_insert(page.revision);
        for (key, o) in &page.items {
            match serde_json::from_slice::<Claim>(&o.value) {
                Ok(c) => {
                    queue.put(&c);
                }
                Err(e) => warn!(%key, error = %e, "unreadable claim left out of provisioning"),
            }
        }
        if !page.more {
            return first;
        }
        after = page.items.last().map(|(k, _)| k.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(uid: &str, created: u64, generation: u64, ready: bool) -> Claim {
        let phase = if ready { "ready" } else { "pending" };
        serde_json::from_value(serde_json::json!({
            "uid": uid, "tenant": "t", "name": uid,
            "spec": {"bucket": {"size_bytes": 1}},
            "deletion_policy": "retain",
            "generation": generation, "created_revision": created,
            "created_at_ms": 0, "created_by": "test",
            "credentials": {"generation": 1, "nonce": "", "ciphertext": ""},
            "status": {"phase": phase, "observed_generation": generation, "observed_credentials": 1},
        }))
        .expect("a claim")
    }

    #[test]
    fn claims_are_taken_oldest_first_and_converged_ones_leave() {
        let mut q = Queue::default();
        q.put(&claim("c", 30, 1, false));
        q.put(&claim("a", 10, 1, false));
        q.put(&claim("b", 20, 1, false));
        q.put(&claim("r", 5, 1, true));
        assert_eq!(q.len(), 3, "a ready claim is not queued");
        assert_eq!(q.take(2), vec!["a".to_string(), "b".to_string()]);
        // Busy claims are not taken twice.
        assert_eq!(q.take(5), vec!["c".to_string()]);
        q.put(&claim("a", 10, 1, true));
        assert_eq!(q.len(), 2);
        // A claim still here after a good pass is looked at again.
        q.done("b", true, Instant::now());
        assert_eq!(q.take(5), vec!["b".to_string()]);
    }

    #[test]
    fn a_failure_waits_its_backoff_unless_the_claim_asks_for_something_new() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        q.put(&claim("a", 1, 1, false));
        assert_eq!(q.take(1).len(), 1);
        q.done("a", false, t0);
        q.wake(t0);
        assert!(q.take(1).is_empty(), "taken again during its backoff");
        q.wake(t0 + FIRST_RETRY);
        assert_eq!(q.take(1), vec!["a".to_string()]);
        // The second failure waits twice as long.
        q.done("a", false, t0);
        q.wake(t0 + FIRST_RETRY);
        assert!(q.take(1).is_empty());
        q.wake(t0 + FIRST_RETRY * 2);
        assert_eq!(q.take(1), vec!["a".to_string()]);
        // A report of the same request keeps the backoff; a new generation ends it.
        q.done("a", false, t0);
        q.put(&claim("a", 1, 1, false));
        assert!(q.take(1).is_empty());
        q.put(&claim("a", 1, 2, false));
        assert_eq!(q.take(1), vec!["a".to_string()]);
    }

    #[test]
    fn a_claim_that_reports_a_missing_backend_waits_for_a_change() {
        let mut q = Queue::new(&Provisioning::default());
        let mut c = claim("a", 1, 1, false);
        q.put(&c);
        assert_eq!(q.len(), 1, "not yet reported: one pass reports it");
        c.status.phase = Phase::Failed;
        c.status.conditions = vec![condition(false, NO_OBJECT_STORE, "none".into())];
        q.put(&c);
        assert_eq!(q.len(), 0);
        // With an object store the same claim is worked on.
        let mut q = Queue::default();
        q.put(&c);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn many_claims_in_backoff_cost_nothing_to_pass_over() {
        let mut q = Queue::default();
        let t0 = Instant::now();
        for i in 0..10_000u64 {
            q.put(&claim(&format!("f{i:05}"), i, 1, false));
        }
        let failing = q.take(10_000);
        for uid in &failing {
            q.done(uid, false, t0);
        }
        q.put(&claim("new", 20_000, 1, false));
        q.wake(t0);
        // Only the new claim is ready; the failing ones sit in `later`.
        assert_eq!(q.ready.len(), 1);
        assert_eq!(q.later.len(), 10_000);
        assert_eq!(q.take(16), vec!["new".to_string()]);
    }
}
