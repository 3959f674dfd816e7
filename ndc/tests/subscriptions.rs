//! Subscribing a tenant that is already subscribed, and registering a service
//! unchanged, answer as the first time did, from a linearizable read: no log
//! entry. Anything new, and a refusal, still go through the log.

mod support;

use anyhow::{ensure, Context, Result};
use ndc_api::catalog::catalog_client::CatalogClient;
use ndc_api::catalog::{self as pb};
use ndc_api::client::Auth;
use support::tenancy::*;
use tonic::Code;

type Catalog =
    CatalogClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Auth>>;

fn catalog(addr: &str, token: &str) -> Result<Catalog> {
    Ok(CatalogClient::with_interceptor(
        ndc_api::client::channel(addr)?,
        Auth::new(Some(token))?,
    ))
}

/// The term and the last log index of the node at `addr`.
async fn log_mark(addr: &str) -> Result<(u64, u64)> {
    let s = ndc_api::cluster::cluster_client::ClusterClient::with_interceptor(
        ndc_api::client::channel(addr)?,
        Auth::new(Some(OPERATOR))?,
    )
    .status(ndc_api::cluster::StatusRequest {})
    .await?
    .into_inner();
    Ok((s.term, s.last_log_index))
}

async fn last_log_index(addr: &str) -> Result<u64> {
    Ok(log_mark(addr).await?.1)
}

/// The highest term and last log index over the nodes at `addrs` (the
/// leader holds every committed entry, whichever node leads).
async fn cluster_mark(addrs: &[String]) -> Result<(u64, u64)> {
    let mut mark = (0, 0);
    for a in addrs {
        let (term, index) = log_mark(a).await?;
        mark = (mark.0.max(term), mark.1.max(index));
    }
    Ok(mark)
}

/// Runs `step` and says whether the cluster's log stayed where it was. A
/// new election appends an entry of its own, so a step during which the
/// term moved tells nothing: it is run again (a few times at most).
async fn writes_nothing<F, Fut>(addrs: &[String], mut step: F) -> Result<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    for _ in 0..5 {
        let before = cluster_mark(addrs).await?;
        step().await?;
        let after = cluster_mark(addrs).await?;
        if after.0 == before.0 {
            return Ok(after.1 == before.1);
        }
    }
    anyhow::bail!("the term kept moving: no quiet moment to check the log")
}

fn subscribe(tenant: &str) -> pb::SubscribeRequest {
    pb::SubscribeRequest {
        tenant: tenant.into(),
        service: "hop-truc-tuyen".into(),
    }
}

fn meetings() -> pb::ServiceSpec {
    pb::ServiceSpec {
        name: "hop-truc-tuyen".into(),
        display_name: "Họp trực tuyến".into(),
        capability: "video-meetings".into(),
        layer: "application".into(),
        from: "central".into(),
        to: "commune".into(),
        topology: "central".into(),
        ..Default::default()
    }
}

fn register(spec: pb::ServiceSpec) -> pb::RegisterRequest {
    pb::RegisterRequest {
        spec: Some(spec),
        decision: String::new(),
    }
}

/// Subscribes `tenant` and returns the subscription answered.
async fn subscription(c: &mut Catalog, tenant: &str) -> Result<pb::Subscription> {
    c.subscribe(subscribe(tenant))
        .await?
        .into_inner()
        .subscription
        .context("no subscription in the answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_again_answers_from_a_read_and_writes_nothing() -> Result<()> {
    let c = national(3).await?;
    let leader = c.leader().await?;
    let follower = (1..=3).find(|id| *id != leader).unwrap_or(1);
    let (at_leader, at_follower) = (c.addr(leader), c.addr(follower));
    let all: Vec<String> = (1..=3).map(|id| c.addr(id)).collect();
    let mut op = catalog(&at_leader, OPERATOR)?;
    op.register(register(meetings())).await?;

    // The first time goes through the log.
    let mut hanoi = catalog(&at_follower, HANOI_ADMIN)?;
    let before = last_log_index(&at_leader).await?;
    let first = subscription(&mut hanoi, "ba-dinh").await?;
    ensure!(
        last_log_index(&at_leader).await? > before,
        "the first subscribe wrote nothing"
    );

    // Again, on either node: the same answer, and no entry.
    let quiet = writes_nothing(&all, || async {
        for addr in [&at_follower, &at_leader] {
            let again = catalog(addr, HANOI_ADMIN)?
                .subscribe(subscribe("ba-dinh"))
                .await?
                .into_inner();
            ensure!(
                again.subscription.as_ref() == Some(&first),
                "{again:?} vs {first:?}"
            );
            ensure!(again.revision >= first.created_revision, "{again:?}");
        }
        Ok(())
    })
    .await?;
    ensure!(quiet, "subscribing again wrote to the log");

    // Someone who may not ask is refused, subscribed or not.
    let refused = catalog(&at_follower, HUE_ADMIN)?
        .subscribe(subscribe("ba-dinh"))
        .await
        .expect_err("hue's admin may not subscribe ba-dinh");
    ensure!(refused.code() == Code::PermissionDenied, "{refused:?}");

    // Unsubscribed, a new subscription is made through the log again.
    hanoi.unsubscribe(subscribe("ba-dinh")).await?;
    let before = last_log_index(&at_leader).await?;
    let second = subscription(&mut hanoi, "ba-dinh").await?;
    ensure!(
        last_log_index(&at_leader).await? > before,
        "a new subscription wrote nothing"
    );
    ensure!(
        second.created_revision > first.created_revision,
        "{second:?} vs {first:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registering_a_service_unchanged_answers_from_a_read_and_writes_nothing() -> Result<()> {
    let c = national(3).await?;
    let leader = c.leader().await?;
    let follower = (1..=3).find(|id| *id != leader).unwrap_or(1);
    let (at_leader, at_follower) = (c.addr(leader), c.addr(follower));
    let all: Vec<String> = (1..=3).map(|id| c.addr(id)).collect();

    // The first time goes through the log.
    let before = last_log_index(&at_leader).await?;
    let first = catalog(&at_follower, OPERATOR)?
        .register(register(meetings()))
        .await?
        .into_inner();
    ensure!(
        last_log_index(&at_leader).await? > before,
        "the first register wrote nothing"
    );
    let stored = first.service.context("no service in the answer")?;
    ensure!(stored.generation == 1, "{stored:?}");

    // Again, unchanged, on either node: the service as stored, and no entry.
    let quiet = writes_nothing(&all, || async {
        for addr in [&at_follower, &at_leader] {
            let again = catalog(addr, OPERATOR)?
                .register(register(meetings()))
                .await?
                .into_inner();
            ensure!(again.service.as_ref() == Some(&stored), "{again:?}");
            ensure!(again.revision >= stored.created_revision, "{again:?}");
        }
        Ok(())
    })
    .await?;
    ensure!(quiet, "registering again unchanged wrote to the log");

    // Someone who may not register is refused, unchanged or not.
    let refused = catalog(&at_follower, HANOI_ADMIN)?
        .register(register(meetings()))
        .await
        .expect_err("a tenant admin may not register a service");
    ensure!(refused.code() == Code::PermissionDenied, "{refused:?}");

    // Another service for the same capability and scope is refused.
    let rival = pb::ServiceSpec {
        name: "hop-2".into(),
        ..meetings()
    };
    let refused = catalog(&at_follower, OPERATOR)?
        .register(register(rival))
        .await
        .expect_err("a second service for video meetings");
    ensure!(refused.code() == Code::AlreadyExists, "{refused:?}");

    // A changed spec goes through the log, as a new generation.
    let before = last_log_index(&at_leader).await?;
    let changed = catalog(&at_follower, OPERATOR)?
        .register(register(pb::ServiceSpec {
            display_name: "Họp trực tuyến toàn quốc".into(),
            ..meetings()
        }))
        .await?
        .into_inner()
        .service
        .context("no service in the answer")?;
    ensure!(
        last_log_index(&at_leader).await? > before,
        "a changed spec wrote nothing"
    );
    ensure!(changed.generation == 2, "{changed:?}");
    ensure!(
        changed.created_revision == stored.created_revision,
        "{changed:?} vs {stored:?}"
    );
    Ok(())
}

/// The typed catalogue watch: a service registered, a tenant subscribed and
/// unsubscribed arrive as typed events, in order; a tenant-admin may not
/// watch the whole catalogue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_watch_streams_typed_changes() -> Result<()> {
    let c = national(1).await?;
    let addr = c.addr(1);
    let mut op = catalog(&addr, OPERATOR)?;
    let mut watch = op
        .watch(pb::WatchCatalogRequest { start_revision: 0 })
        .await?
        .into_inner();
    let first = watch.message().await?.context("no established message")?;
    ensure!(first.events.is_empty());

    op.register(register(meetings())).await?;
    subscription(&mut op, "ba-dinh").await?;
    op.unsubscribe(subscribe("ba-dinh")).await?;

    let mut seen = Vec::new();
    let events = async {
        while seen.len() < 3 {
            let msg = watch.message().await?.context("the watch ended")?;
            ensure!(msg.revision > first.revision);
            for e in msg.events {
                let put = e.kind == pb::catalog_event::Kind::Put as i32;
                seen.push(match e.object.context("an event without its object")? {
                    pb::catalog_event::Object::Service(s) => {
                        format!("service {} {put}", s.spec.unwrap_or_default().name)
                    }
                    pb::catalog_event::Object::Subscription(s) => {
                        format!("subscription {}->{} {put}", s.tenant, s.service)
                    }
                });
            }
        }
        Ok::<(), anyhow::Error>(())
    };
    tokio::time::timeout(ndc_testkit::DEADLINE, events)
        .await
        .context("three catalogue events did not come")??;
    ensure!(
        seen == [
            "service hop-truc-tuyen true",
            "subscription ba-dinh->hop-truc-tuyen true",
            "subscription ba-dinh->hop-truc-tuyen false",
        ],
        "{seen:?}"
    );

    let e = catalog(&addr, HANOI_ADMIN)?
        .watch(pb::WatchCatalogRequest { start_revision: 0 })
        .await
        .expect_err("a tenant-admin watched the whole catalogue");
    ensure!(e.code() == Code::PermissionDenied, "{e:?}");
    Ok(())
}
