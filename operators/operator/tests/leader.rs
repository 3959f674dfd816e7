//! Leader election against the Kubernetes API simulator: one replica works
//! at a time, a stopped leader hands over at once, an expired Lease is taken
//! over, a leader that loses its Lease stops working.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use ndc_operator::leader::{lead, lead_observed, LeaseConfig};
use tokio::sync::{oneshot, watch};

const DEADLINE: Duration = Duration::from_secs(20);
const NS: &str = "ndc-system";
const NAME: &str = "ndc-operator";

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "warn,ndc_operator=debug",
        ))
        .with_test_writer()
        .try_init();
}

/// Short timings so the tests run quickly: held 2 s, renewed every 200 ms.
fn config(identity: &str) -> LeaseConfig {
    let mut cfg = LeaseConfig::new(identity);
    cfg.lease_duration = Duration::from_secs(2);
    cfg.renew_every = Duration::from_millis(200);
    cfg
}

async fn simulator() -> Result<(ndc_kube_sim::Running, kube::Client)> {
    init_tracing();
    let sim = ndc_kube_sim::Simulator::new().start().await?;
    let client = kube::Client::try_from(kube::Config::new(sim.url().parse()?))?;
    Ok((sim, client))
}

/// Works in flight across every candidate, and the most ever seen at once.
#[derive(Default)]
struct Shared {
    running: AtomicUsize,
    most: AtomicUsize,
}

/// One candidate's work in flight (0 or 1) and how many times it started.
#[derive(Default)]
struct Mine {
    running: AtomicUsize,
    starts: AtomicUsize,
}

/// Counts a work in flight from its start until it is dropped.
struct Working(Arc<Shared>, Arc<Mine>);

impl Working {
    fn start(shared: Arc<Shared>, mine: Arc<Mine>) -> Self {
        let now = shared.running.fetch_add(1, Ordering::SeqCst) + 1;
        shared.most.fetch_max(now, Ordering::SeqCst);
        mine.running.fetch_add(1, Ordering::SeqCst);
        mine.starts.fetch_add(1, Ordering::SeqCst);
        Working(shared, mine)
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        self.1.running.fetch_sub(1, Ordering::SeqCst);
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Candidate {
    identity: String,
    mine: Arc<Mine>,
    leading: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Candidate {
    fn start(client: &kube::Client, identity: &str, shared: &Arc<Shared>) -> Self {
        let mine = Arc::new(Mine::default());
        let (stop, stopped) = oneshot::channel::<()>();
        let (tx, leading) = watch::channel(false);
        let (s, m) = (shared.clone(), mine.clone());
        let work = move || {
            let (s, m) = (s.clone(), m.clone());
            async move {
                let _working = Working::start(s, m);
                std::future::pending::<()>().await;
            }
        };
        let task = tokio::spawn(lead_observed(
            client.clone(),
            config(identity),
            async {
                let _ = stopped.await;
            },
            work,
            tx,
        ));
        Candidate {
            identity: identity.into(),
            mine,
            leading,
            stop: Some(stop),
            task,
        }
    }

    fn working(&self) -> bool {
        self.mine.running.load(Ordering::SeqCst) > 0
    }

    fn starts(&self) -> usize {
        self.mine.starts.load(Ordering::SeqCst)
    }

    /// Asks it to stop and waits until `lead` has returned.
    async fn stop(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .context("lead did not return after stop")??
    }
}

use ndc_testkit::holds_within as eventually;

/// Checks `cond` every few milliseconds for all of `during`.
async fn throughout(during: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + during;
    while Instant::now() < until {
        if !cond() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

async fn lease(client: &kube::Client) -> Result<Lease> {
    Ok(Api::<Lease>::namespaced(client.clone(), NS)
        .get(NAME)
        .await?)
}

fn holder(l: &Lease) -> Option<String> {
    l.spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .filter(|h| !h.is_empty())
}

/// Writes the Lease as `holder` would (creating it and its namespace if
/// missing), renewed `age` ago for `secs` seconds; retries lost races.
async fn write_lease(
    client: &kube::Client,
    holder: Option<&str>,
    age: Duration,
    secs: i32,
) -> Result<()> {
    let renewed = Timestamp::now() - SignedDuration::try_from(age)?;
    let spec = LeaseSpec {
        holder_identity: holder.map(Into::into),
        acquire_time: Some(MicroTime(renewed)),
        renew_time: Some(MicroTime(renewed)),
        lease_duration_seconds: Some(secs),
        lease_transitions: Some(0),
        ..Default::default()
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let until = Instant::now() + DEADLINE;
    loop {
        let r = match leases.get_opt(NAME).await? {
            Some(mut l) => {
                let transitions = l.spec.as_ref().and_then(|s| s.lease_transitions);
                l.spec = Some(LeaseSpec {
                    lease_transitions: transitions,
                    ..spec.clone()
                });
                leases.replace(NAME, &PostParams::default(), &l).await
            }
            None => {
                let namespaces: Api<Namespace> = Api::all(client.clone());
                if namespaces.get_opt(NS).await?.is_none() {
                    let ns = Namespace {
                        metadata: ObjectMeta {
                            name: Some(NS.into()),
                            ..Default::default()
                        },
                        ..Default::default()
                    };
                    namespaces.create(&PostParams::default(), &ns).await?;
                }
                let l = Lease {
                    metadata: ObjectMeta {
                        name: Some(NAME.into()),
                        ..Default::default()
                    },
                    spec: Some(spec.clone()),
                };
                leases.create(&PostParams::default(), &l).await
            }
        };
        match r {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && Instant::now() < until => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_works_at_a_time_and_a_stopped_leader_hands_over() -> Result<()> {
    let (sim, client) = simulator().await?;
    let shared = Arc::new(Shared::default());
    let a = Candidate::start(&client, "replica-a", &shared);
    let b = Candidate::start(&client, "replica-b", &shared);

    assert!(
        eventually(DEADLINE, || a.working() || b.working()).await,
        "no candidate started working"
    );
    // Longer than the lease: the leader keeps it by renewing, the other waits.
    let first_starts = a.starts() + b.starts();
    assert!(
        throughout(Duration::from_secs(3), || {
            shared.running.load(Ordering::SeqCst) == 1 && a.starts() + b.starts() == first_starts
        })
        .await,
        "leadership changed or two works ran while the leader was alive"
    );
    assert_eq!(first_starts, 1);
    let (leader, standby) = if a.working() { (a, b) } else { (b, a) };
    assert!(*leader.leading.borrow());
    assert!(!*standby.leading.borrow());
    // The simulator started without the namespace: the first candidate made it.
    let l = lease(&client).await?;
    assert_eq!(holder(&l).as_deref(), Some(leader.identity.as_str()));
    assert_eq!(
        l.spec.as_ref().and_then(|s| s.lease_duration_seconds),
        Some(2)
    );

    // Stopping the leader drops its work and releases the lease…
    let leader_id = leader.identity.clone();
    let leader_mine = leader.mine.clone();
    leader.stop().await?;
    assert_eq!(leader_mine.running.load(Ordering::SeqCst), 0);
    let l = lease(&client).await?;
    assert_ne!(
        holder(&l).as_deref(),
        Some(leader_id.as_str()),
        "the stopped leader did not release the lease"
    );
    // …and the standby takes over.
    assert!(
        eventually(DEADLINE, || standby.working()).await,
        "the standby did not take over"
    );
    assert!(*standby.leading.borrow());
    let l = lease(&client).await?;
    assert_eq!(holder(&l).as_deref(), Some(standby.identity.as_str()));
    assert!(
        l.spec
            .as_ref()
            .and_then(|s| s.lease_transitions)
            .unwrap_or(0)
            >= 1
    );

    let standby_id = standby.identity.clone();
    standby.stop().await?;
    assert_eq!(shared.running.load(Ordering::SeqCst), 0);
    assert_eq!(
        shared.most.load(Ordering::SeqCst),
        1,
        "two works ran at once"
    );
    let l = lease(&client).await?;
    assert_ne!(holder(&l).as_deref(), Some(standby_id.as_str()));
    sim.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_candidates_never_work_together() -> Result<()> {
    let (sim, client) = simulator().await?;
    let shared = Arc::new(Shared::default());
    let mut candidates: Vec<Candidate> = (0..4)
        .map(|i| Candidate::start(&client, &format!("replica-{i}"), &shared))
        .collect();
    // Stop the leader three times over; each time another one takes over.
    for round in 0..3 {
        assert!(
            eventually(DEADLINE, || candidates.iter().any(Candidate::working)).await,
            "round {round}: nobody took over"
        );
        let i = candidates
            .iter()
            .position(Candidate::working)
            .context("a leader")?;
        candidates.swap_remove(i).stop().await?;
        assert!(
            shared.most.load(Ordering::SeqCst) <= 1,
            "two works ran at once"
        );
    }
    assert!(eventually(DEADLINE, || candidates.iter().any(Candidate::working)).await);
    for c in candidates {
        c.stop().await?;
    }
    assert_eq!(
        shared.most.load(Ordering::SeqCst),
        1,
        "two works ran at once"
    );
    sim.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_lease_is_taken_over_once_expired() -> Result<()> {
    let (sim, client) = simulator().await?;
    let written = Instant::now();
    // Held by a replica that died just now, for 2 s.
    write_lease(&client, Some("dead-replica"), Duration::ZERO, 2).await?;
    let shared = Arc::new(Shared::default());
    let c = Candidate::start(&client, "replica-c", &shared);
    // Not before it expires…
    let early = Duration::from_millis(1500).saturating_sub(written.elapsed());
    assert!(
        throughout(early, || !c.working()).await,
        "the lease was taken over before it expired"
    );
    // …but soon after.
    assert!(
        eventually(DEADLINE, || c.working()).await,
        "the expired lease was not taken over"
    );
    assert!(written.elapsed() >= Duration::from_secs(1));
    let l = lease(&client).await?;
    assert_eq!(holder(&l).as_deref(), Some("replica-c"));
    assert_eq!(l.spec.as_ref().and_then(|s| s.lease_transitions), Some(1));
    c.stop().await?;
    sim.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_expired_lease_is_taken_over_at_once() -> Result<()> {
    let (sim, client) = simulator().await?;
    // Renewed an hour ago for 15 s.
    write_lease(&client, Some("gone"), Duration::from_secs(3600), 15).await?;
    let shared = Arc::new(Shared::default());
    let c = Candidate::start(&client, "replica-c", &shared);
    assert!(eventually(DEADLINE, || c.working()).await);
    assert_eq!(holder(&lease(&client).await?).as_deref(), Some("replica-c"));
    c.stop().await?;
    sim.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_sees_another_holder_stops_working() -> Result<()> {
    let (sim, client) = simulator().await?;
    let shared = Arc::new(Shared::default());
    let c = Candidate::start(&client, "replica-c", &shared);
    assert!(eventually(DEADLINE, || c.working()).await);

    // Someone else takes the lease (for an hour).
    write_lease(&client, Some("intruder"), Duration::ZERO, 3600).await?;
    assert!(
        eventually(DEADLINE, || !c.working() && !*c.leading.borrow()).await,
        "the leader kept working on a lease it lost"
    );
    assert!(
        throughout(Duration::from_secs(1), || !c.working()).await,
        "the leader went back to work while another held the lease"
    );
    assert_eq!(holder(&lease(&client).await?).as_deref(), Some("intruder"));

    // Released: it takes the lease again and starts its work afresh.
    write_lease(&client, None, Duration::ZERO, 1).await?;
    assert!(eventually(DEADLINE, || c.working()).await);
    assert_eq!(c.starts(), 2);
    c.stop().await?;
    assert_eq!(shared.most.load(Ordering::SeqCst), 1);
    sim.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_renew_stops_working() -> Result<()> {
    let (sim, client) = simulator().await?;
    let shared = Arc::new(Shared::default());
    let c = Candidate::start(&client, "replica-c", &shared);
    assert!(eventually(DEADLINE, || c.working()).await);
    let gone = Instant::now();
    tokio::time::timeout(DEADLINE, sim.stop())
        .await
        .context("the simulator did not stop")??;
    // Well before the lease (2 s) could expire for anybody else.
    assert!(
        eventually(DEADLINE, || !c.working()).await,
        "the leader kept working without renewing"
    );
    assert!(
        gone.elapsed() < Duration::from_secs(2),
        "the work outlived the lease: {:?}",
        gone.elapsed()
    );
    c.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_that_ends_releases_the_lease() -> Result<()> {
    let (sim, client) = simulator().await?;
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    tokio::time::timeout(
        DEADLINE,
        lead(
            client.clone(),
            config("replica-c"),
            std::future::pending(),
            move || {
                let r = r.clone();
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                }
            },
        ),
    )
    .await
    .context("lead did not return when its work ended")??;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(holder(&lease(&client).await?), None);
    sim.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_timings_are_refused() -> Result<()> {
    let (sim, client) = simulator().await?;
    let mut cfg = config("replica-c");
    cfg.renew_every = cfg.lease_duration;
    let r = lead(client.clone(), cfg, std::future::pending(), || async {}).await;
    assert!(r.is_err());
    let r = lead(client, config(""), std::future::pending(), || async {}).await;
    assert!(r.is_err());
    assert_eq!(
        LeaseConfig::new("x").lease_duration,
        Duration::from_secs(15)
    );
    sim.stop().await?;
    Ok(())
}
