//! Tenancy rules through real `ndc server` processes: concurrency, roles,
//! reorganisation plans, retried requests.

mod support;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ndc_api::client::Auth;
use ndc_api::convert;
use ndc_api::tenants::tenants_client::TenantsClient;
use ndc_api::tenants::{self as pb};
use ndc_core::Level;
use support::tenancy::*;
use support::*;
use tonic::Code;

/// Many clients on different nodes race to take more than a parent has: the
/// parent's quota is never exceeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_clients_never_overdraw_a_parent() -> Result<()> {
    let c = national(3).await?;
    let endpoints = c.endpoints();
    // Hà Nội has 40 cores and gave 10 to Ba Đình: 30 left, so at most 15 of
    // these 24 communes of 2 cores each can be admitted.
    let mut tasks = Vec::new();
    for i in 0..24u64 {
        let addr = endpoints[i as usize % endpoints.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut t = tenants(&addr, OPERATOR)?;
            let s = spec(
                &format!("xa-{i}"),
                Level::Commune,
                Some("ha-noi"),
                Some(&format!("{:05}", 100 + i)),
                2,
            );
            anyhow::Ok(create(&mut t, &s).await)
        }));
    }
    let (mut admitted, mut refused) = (0, 0);
    for t in tasks {
        match t.await?? {
            Ok(_) => admitted += 1,
            Err(s) => {
                ensure!(
                    s.code() == Code::FailedPrecondition && s.message().contains("cannot hand out"),
                    "{s:?}"
                );
                refused += 1;
            }
        }
    }
    ensure!(
        admitted == 15 && refused == 9,
        "admitted {admitted}, refused {refused}"
    );
    let mut op = tenants(&endpoints[0], OPERATOR)?;
    let hn = op
        .get(pb::GetTenantRequest {
            id: "ha-noi".into(),
            stale: false,
        })
        .await?
        .into_inner()
        .tenant
        .context("ha-noi")?;
    let hn = convert::tenant_from_pb(hn).map_err(anyhow::Error::msg)?;
    ensure!(hn.allocated == cores(40), "allocated {:?}", hn.allocated);
    let kids = op
        .list(pb::ListTenantsRequest {
            parent: "ha-noi".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .tenants;
    let sum: u64 = kids
        .iter()
        .map(|k| {
            k.spec
                .as_ref()
                .and_then(|s| s.quota.as_ref())
                .map(|q| q.cpu_millis)
                .unwrap_or(0)
        })
        .sum();
    ensure!(
        sum <= 40_000 && kids.len() == 16,
        "children hold {sum} millicores in {} tenants",
        kids.len()
    );
    Ok(())
}

/// A tenant-admin of one province cannot read or change another province or
/// its communes; an auditor reads but cannot change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_keep_tenants_apart() -> Result<()> {
    let c = national(1).await?;
    let addr = c.addr(1);
    let mut hn = tenants(&addr, HANOI_ADMIN)?;

    // Its own subtree: allowed.
    create(
        &mut hn,
        &spec(
            "hoan-kiem",
            Level::Commune,
            Some("ha-noi"),
            Some("00070"),
            2,
        ),
    )
    .await?;
    hn.update(pb::UpdateTenantRequest {
        id: "ba-dinh".into(),
        quota: Some(convert::quota_to_pb(&cores(12))),
        ..Default::default()
    })
    .await?;
    hn.update(pb::UpdateTenantRequest {
        id: "ha-noi".into(),
        set_labels: true,
        labels: [("vung".to_string(), "bac".to_string())].into(),
        ..Default::default()
    })
    .await?;
    hn.get(pb::GetTenantRequest {
        id: "ba-dinh".into(),
        stale: false,
    })
    .await?;

    let denied =
        |r: Result<tonic::Response<pb::TenantResponse>, tonic::Status>, what: &str| -> Result<()> {
            let e = r.expect_err(what);
            ensure!(e.code() == Code::PermissionDenied, "{what}: {e:?}");
            Ok(())
        };
    denied(
        hn.get(pb::GetTenantRequest {
            id: "hue".into(),
            stale: false,
        })
        .await,
        "read another province",
    )?;
    denied(
        hn.get(pb::GetTenantRequest {
            id: "phu-xuan".into(),
            stale: false,
        })
        .await,
        "read another province's commune",
    )?;
    denied(
        hn.update(pb::UpdateTenantRequest {
            id: "hue".into(),
            display_name: Some("X".into()),
            ..Default::default()
        })
        .await,
        "rename another province",
    )?;
    denied(
        hn.update(pb::UpdateTenantRequest {
            id: "phu-xuan".into(),
            quota: Some(convert::quota_to_pb(&cores(1))),
            ..Default::default()
        })
        .await,
        "change another province's commune",
    )?;
    denied(
        hn.update(pb::UpdateTenantRequest {
            id: "ha-noi".into(),
            quota: Some(convert::quota_to_pb(&cores(90))),
            ..Default::default()
        })
        .await,
        "raise its own quota",
    )?;
    denied(
        create(
            &mut hn,
            &spec("xa-moi", Level::Commune, Some("hue"), Some("19999"), 1),
        )
        .await
        .map(tonic::Response::new),
        "create under another province",
    )?;
    let e = hn
        .delete(pb::DeleteTenantRequest {
            id: "phu-xuan".into(),
            decision: String::new(),
        })
        .await
        .expect_err("delete");
    ensure!(e.code() == Code::PermissionDenied, "{e:?}");
    let e = hn
        .reorganise(convert::reorg_to_pb(
            &ndc_core::Reorg::Rename {
                from: "ba-dinh".into(),
                to: "ba-dinh-2".into(),
            },
            None,
        ))
        .await
        .expect_err("reorganise");
    ensure!(
        e.code() == Code::PermissionDenied && e.message().contains("dc-operator"),
        "{e:?}"
    );
    // Listing shows only its own subtree.
    let listed: Vec<String> = hn
        .list(pb::ListTenantsRequest::default())
        .await?
        .into_inner()
        .tenants
        .into_iter()
        .filter_map(|t| t.spec.map(|s| s.id))
        .collect();
    ensure!(
        listed
            .iter()
            .all(|id| ["ha-noi", "ba-dinh", "hoan-kiem"].contains(&id.as_str()))
            && listed.len() == 3,
        "{listed:?}"
    );
    for req in [
        pb::ListTenantsRequest {
            subtree: "hue".into(),
            ..Default::default()
        },
        pb::ListTenantsRequest {
            parent: "hue".into(),
            ..Default::default()
        },
    ] {
        let e = hn.list(req).await.expect_err("list another province");
        ensure!(e.code() == Code::PermissionDenied, "{e:?}");
    }

    // The auditor reads everything and changes nothing.
    let mut au = tenants(&addr, AUDITOR)?;
    au.get(pb::GetTenantRequest {
        id: "hue".into(),
        stale: false,
    })
    .await?;
    denied(
        create(&mut au, &spec("x", Level::Central, None, None, 1))
            .await
            .map(tonic::Response::new),
        "auditor creates",
    )?;
    // Hue's admin cannot see Hà Nội either.
    let mut hu = tenants(&addr, HUE_ADMIN)?;
    denied(
        hu.get(pb::GetTenantRequest {
            id: "ha-noi".into(),
            stale: false,
        })
        .await,
        "hue reads ha-noi",
    )?;
    // No token, or a wrong one.
    let mut anon = TenantsClient::new(ndc_api::client::channel(&addr)?);
    let e = anon
        .get(pb::GetTenantRequest {
            id: "vn".into(),
            stale: false,
        })
        .await
        .expect_err("anonymous");
    ensure!(e.code() == Code::Unauthenticated, "{e:?}");
    let mut wrong = tenants(&addr, "not-a-known-token-at-all")?;
    let e = wrong
        .get(pb::GetTenantRequest {
            id: "vn".into(),
            stale: false,
        })
        .await
        .expect_err("wrong token");
    ensure!(e.code() == Code::Unauthenticated, "{e:?}");
    // The node-to-node service wants the cluster secret: a client cannot
    // forward a write, join, or retire a node without it.
    use ndc_api::raft::raft_client::RaftClient;
    for secret in [None, Some("a-wrong-cluster-secret-0000")] {
        let mut raft =
            RaftClient::with_interceptor(ndc_api::client::channel(&addr)?, Auth::cluster(secret)?);
        let e = raft
            .retire(ndc_api::raft::Payload { data: vec![1] })
            .await
            .expect_err("retire without the secret");
        ensure!(
            e.code() == Code::Unauthenticated && e.message().contains("cluster"),
            "{e:?}"
        );
        let e = raft
            .forward(ndc_api::raft::Payload { data: vec![1] })
            .await
            .expect_err("forward without the secret");
        ensure!(e.code() == Code::Unauthenticated, "{e:?}");
    }
    ensure!(status_with_token(&addr).await?, "the node is still serving");
    Ok(())
}

/// A reorganisation applies exactly the plan that was shown: if the tenants
/// changed in between, nothing is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_plan_is_not_applied() -> Result<()> {
    let c = national(1).await?;
    let mut t = tenants(&c.addr(1), OPERATOR)?;
    let reorg = ndc_core::Reorg::Reparent {
        tenant: "ba-dinh".into(),
        parent: "hue".into(),
    };
    let shown = t
        .plan(convert::reorg_to_pb(&reorg, None))
        .await?
        .into_inner();
    ensure!(!shown.digest.is_empty() && !shown.applied, "{shown:?}");
    // Someone changes Ba Đình's quota after the plan was shown.
    t.update(pb::UpdateTenantRequest {
        id: "ba-dinh".into(),
        quota: Some(convert::quota_to_pb(&cores(3))),
        ..Default::default()
    })
    .await?;
    let mut req = convert::reorg_to_pb(&reorg, None);
    req.expected_digest = shown.digest.clone();
    let e = t.reorganise(req).await.expect_err("stale plan");
    ensure!(
        e.code() == Code::FailedPrecondition && e.message().contains("plan again"),
        "{e:?}"
    );
    let bd = t
        .get(pb::GetTenantRequest {
            id: "ba-dinh".into(),
            stale: false,
        })
        .await?
        .into_inner()
        .tenant
        .context("ba-dinh")?;
    ensure!(
        bd.spec.map(|s| s.parent) == Some("ha-noi".into()),
        "nothing moved"
    );
    // Planned again, it applies.
    let fresh = t
        .plan(convert::reorg_to_pb(&reorg, None))
        .await?
        .into_inner();
    ensure!(fresh.digest != shown.digest);
    let mut req = convert::reorg_to_pb(&reorg, None);
    req.expected_digest = fresh.digest;
    let done = t.reorganise(req).await?.into_inner();
    ensure!(done.applied, "{done:?}");
    let bd = t
        .get(pb::GetTenantRequest {
            id: "ba-dinh".into(),
            stale: false,
        })
        .await?
        .into_inner()
        .tenant
        .context("ba-dinh")?;
    ensure!(
        bd.spec.map(|s| s.parent) == Some("hue".into()),
        "moved under hue"
    );
    Ok(())
}

/// Creating a tenant, retried with the same request id after a lost answer,
/// creates it once and records it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_creation_is_recorded_once() -> Result<()> {
    let c = national(1).await?;
    let addr = c.addr(1);
    let client = |id: &str| -> Result<Tenants> {
        Ok(TenantsClient::with_interceptor(
            ndc_api::client::channel(&addr)?,
            Auth::new(Some(OPERATOR))?.with_request_id(id)?,
        ))
    };
    let s = spec("xa-moi", Level::Commune, Some("hue"), Some("20100"), 1);
    let first = create(&mut client("create-xa-moi-1")?, &s).await?;
    let again = create(&mut client("create-xa-moi-1")?, &s).await?;
    ensure!(
        again.revision == first.revision,
        "the retry got the first answer"
    );
    // Without the same id, it is a second request, refused as a duplicate.
    let e = create(&mut client("create-xa-moi-2")?, &s)
        .await
        .expect_err("duplicate");
    ensure!(e.code() == Code::AlreadyExists, "{e:?}");
    let (code, out, err) = ndc(&[
        "--endpoints",
        &addr,
        "--token",
        AUDITOR,
        "-o",
        "json",
        "audit",
        "list",
        "--target",
        "xa-moi",
    ])?;
    let records: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("{code} {err}"))?;
    ensure!(
        records.as_array().map(|a| a.len()) == Some(1),
        "one audit record: {out}"
    );
    Ok(())
}

/// The typed tenant watch: from a listed revision, each change as a typed
/// event (a put with the tenant, a delete with its id); only roles that
/// read every tenant may open it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tenant_watch_streams_typed_changes_from_a_revision() -> Result<()> {
    let c = national(1).await?;
    let addr = c.addr(1);
    let mut op = tenants(&addr, OPERATOR)?;
    let listed = op
        .list(pb::ListTenantsRequest::default())
        .await?
        .into_inner();
    let mut watch = op
        .watch(pb::WatchTenantsRequest {
            start_revision: listed.revision + 1,
        })
        .await?
        .into_inner();
    let first = watch.message().await?.context("no established message")?;
    ensure!(first.events.is_empty() && first.revision == listed.revision);

    create(
        &mut op,
        &spec("tay-ho", Level::Commune, Some("ha-noi"), Some("00103"), 1),
    )
    .await?;
    op.delete(pb::DeleteTenantRequest {
        id: "tay-ho".into(),
        ..Default::default()
    })
    .await?;
    // Creating a commune changes its parent's allocation too: wait for the
    // put of tay-ho, then for its delete.
    let mut seen_put = None;
    let events = async {
        loop {
            let msg = watch.message().await?.context("the watch ended")?;
            ensure!(msg.revision > listed.revision);
            let mut deleted = false;
            for e in msg.events {
                if e.id != "tay-ho" {
                    continue;
                }
                if e.kind == pb::tenant_event::Kind::Put as i32 {
                    let t = convert::tenant_from_pb(e.tenant.context("a put without its tenant")?)
                        .map_err(anyhow::Error::msg)?;
                    ensure!(t.parent.as_deref() == Some("ha-noi"), "{t:?}");
                    seen_put = Some(msg.revision);
                } else {
                    ensure!(e.tenant.is_none(), "a delete carries no tenant");
                    deleted = true;
                }
            }
            if deleted {
                return Ok::<u64, anyhow::Error>(msg.revision);
            }
        }
    };
    let deleted_at = tokio::time::timeout(Duration::from_secs(60), events)
        .await
        .context("no delete event within 60 s")??;
    let put_at = seen_put.context("the put came after the delete, or never")?;
    ensure!(put_at < deleted_at);

    // A tenant-admin reads only its subtree: it may not watch them all.
    let mut hn = tenants(&addr, HANOI_ADMIN)?;
    let e = hn
        .watch(pb::WatchTenantsRequest { start_revision: 0 })
        .await
        .expect_err("a tenant-admin watched every tenant");
    ensure!(e.code() == Code::PermissionDenied, "{e:?}");
    // The auditor reads every tenant: it may.
    let mut au = tenants(&addr, AUDITOR)?;
    au.watch(pb::WatchTenantsRequest { start_revision: 0 })
        .await?;
    Ok(())
}
