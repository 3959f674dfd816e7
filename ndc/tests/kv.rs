//! The object API through real nodes: reads, watches, bad input, races,
//! retries, health and reflection, and `ndc up`.

mod support;

use anyhow::{ensure, Context, Result};
use futures::StreamExt;
use ndc_api::kv::kv_client::KvClient;
use ndc_api::kv::{self as pb, Consistency, GetRequest, PutRequest};
use support::*;
use tonic::Code;

async fn put(client: &ndc_api::Client, key: &str, value: &[u8]) -> Result<u64, tonic::Status> {
    let req = PutRequest {
        key: key.into(),
        value: value.to_vec(),
        expected_revision: None,
    };
    client
        .call(|ch| {
            let req = req.clone();
            async move { KvClient::new(ch).put(req).await }
        })
        .await
        .map(|r| r.into_inner().revision)
}

/// Reads through a follower are linearizable by default; watches stream
/// changes in order; health and reflection answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_watches_health_and_reflection() -> Result<()> {
    let mut c = Cluster::new(&[])?;
    let a1 = c.start(1, "127.0.0.1:0", Start::Init).await?;
    c.start(2, "127.0.0.1:0", Start::Join(&a1)).await?;
    c.start(3, "127.0.0.1:0", Start::Join(&a1)).await?;
    c.wait_voters(&[1, 2, 3]).await?;
    let leader = c.leader().await?;
    let follower = *c
        .nodes
        .keys()
        .find(|id| **id != leader)
        .context("a follower")?;
    let to_leader = ndc_api::Client::new(&[c.addr(leader)])?;
    let mut at_follower = KvClient::new(ndc_api::client::channel(&c.addr(follower))?);

    // Watch from now, through the follower.
    let mut watch = at_follower
        .watch(pb::WatchRequest {
            prefix: "/w/".into(),
            start_revision: 0,
        })
        .await?
        .into_inner();
    let first = watch.next().await.context("watch closed")??;
    ensure!(
        first.events.is_empty(),
        "first message says the watch is established"
    );

    for i in 0..20 {
        let rev = put(
            &to_leader,
            &format!("/w/{i:02}"),
            format!("v{i}").as_bytes(),
        )
        .await?;
        // Linearizable read through the follower sees the write at once.
        let got = at_follower
            .get(GetRequest {
                key: format!("/w/{i:02}"),
                consistency: Consistency::Linearizable as i32,
            })
            .await?
            .into_inner();
        let obj = got
            .object
            .context("linearizable read missed an acknowledged write")?;
        ensure!(obj.mod_revision == rev && obj.value == format!("v{i}").as_bytes());
    }
    put(&to_leader, "/other/x", b"not watched").await?;
    let del = to_leader
        .call(|ch| async move {
            KvClient::new(ch)
                .delete(pb::DeleteRequest {
                    key: "/w/00".into(),
                    expected_revision: None,
                })
                .await
        })
        .await?
        .into_inner();
    ensure!(del.deleted);

    let mut seen = Vec::new();
    while seen.len() < 21 {
        let msg = watch.next().await.context("watch ended early")??;
        for e in msg.events {
            let o = e.object.context("event without object")?;
            seen.push((e.kind, o.key, e.revision));
        }
    }
    ensure!(
        seen.iter().all(|(_, k, _)| k.starts_with("/w/")),
        "only the prefix is watched"
    );
    ensure!(
        seen.windows(2).all(|w| w[0].2 < w[1].2),
        "events come in revision order"
    );
    ensure!(seen[20].0 == pb::event::Kind::Delete as i32 && seen[20].1 == "/w/00");

    // A watch from an old revision replays history.
    let mut replay = at_follower
        .watch(pb::WatchRequest {
            prefix: "/w/".into(),
            start_revision: seen[0].2,
        })
        .await?
        .into_inner();
    let _established = replay.next().await.context("replay closed")??;
    let msg = replay.next().await.context("replay closed")??;
    ensure!(msg.events[0].object.as_ref().map(|o| o.key.as_str()) == Some("/w/00"));

    // Stale reads answer from the node's own state.
    let stale = at_follower
        .get(GetRequest {
            key: "/w/01".into(),
            consistency: Consistency::Stale as i32,
        })
        .await?
        .into_inner();
    ensure!(stale.object.is_some());

    // The standard health service and server reflection.
    let ch = ndc_api::client::channel(&c.addr(follower))?;
    let health = tonic_health::pb::health_client::HealthClient::new(ch.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "ndc.kv.v1.Kv".into(),
        })
        .await?
        .into_inner();
    ensure!(
        health.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = ServerReflectionClient::new(ch)
        .server_reflection_info(futures::stream::iter([req]))
        .await?
        .into_inner();
    let msg = resp.next().await.context("reflection closed")??;
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        anyhow::bail!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        "ndc.kv.v1.Kv",
        "ndc.cluster.v1.Cluster",
        "grpc.health.v1.Health",
    ] {
        ensure!(
            names.iter().any(|n| n == want),
            "reflection lists {names:?}, not {want}"
        );
    }
    Ok(())
}

async fn revision(kv: &mut KvClient<tonic::transport::Channel>) -> Result<u64> {
    Ok(kv
        .get(GetRequest {
            key: "/probe".into(),
            consistency: 0,
        })
        .await?
        .into_inner()
        .revision)
}

/// Bad input gets a clear error and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() -> Result<()> {
    let mut c = Cluster::new(&["--history", "5"])?;
    let a1 = c.start(1, "127.0.0.1:0", Start::Init).await?;
    c.wait_voters(&[1]).await?;
    let ch = ndc_api::client::channel(&a1)?;
    let mut kv = KvClient::new(ch.clone());
    let mut cluster = ndc_api::cluster::cluster_client::ClusterClient::new(ch);
    let first = kv
        .put(PutRequest {
            key: "/ok".into(),
            value: b"1".to_vec(),
            expected_revision: None,
        })
        .await?
        .into_inner()
        .revision;
    for i in 0..20 {
        kv.put(PutRequest {
            key: format!("/fill/{i}"),
            value: b"x".to_vec(),
            expected_revision: None,
        })
        .await?;
    }
    let current = kv
        .get(GetRequest {
            key: "/ok".into(),
            consistency: 0,
        })
        .await?
        .into_inner();
    let ok_rev = current.object.context("/ok")?.mod_revision;
    ensure!(ok_rev == first);

    let put = |key: &str, value: Vec<u8>, expected: Option<u64>| PutRequest {
        key: key.into(),
        value,
        expected_revision: expected,
    };
    let cases: Vec<(&str, PutRequest, Code, &str)> = vec![
        (
            "empty key",
            put("", b"x".to_vec(), None),
            Code::InvalidArgument,
            "empty",
        ),
        (
            "control character",
            put("/a\nb", b"x".to_vec(), None),
            Code::InvalidArgument,
            "control character",
        ),
        (
            "oversized key",
            put(&"k".repeat(1025), b"x".to_vec(), None),
            Code::InvalidArgument,
            "limit",
        ),
        (
            "oversized value",
            put("/big", vec![0u8; 1024 * 1024 + 1], None),
            Code::InvalidArgument,
            "limit",
        ),
        (
            "stale revision",
            put("/ok", b"2".to_vec(), Some(first - 1)),
            Code::FailedPrecondition,
            "changed since",
        ),
        (
            "must be absent",
            put("/ok", b"2".to_vec(), Some(0)),
            Code::FailedPrecondition,
            "already exists",
        ),
        (
            "missing with revision",
            put("/nope", b"2".to_vec(), Some(5)),
            Code::FailedPrecondition,
            "does not exist",
        ),
    ];
    for (name, req, code, text) in cases {
        let before = revision(&mut kv).await?;
        let err = kv.put(req).await.expect_err(name);
        ensure!(err.code() == code, "{name}: expected {code:?}, got {err:?}");
        ensure!(
            err.message().contains(text),
            "{name}: message {:?} should mention {text:?}",
            err.message()
        );
        ensure!(
            revision(&mut kv).await? == before,
            "{name}: the store changed"
        );
    }

    let before = revision(&mut kv).await?;
    let dup = pb::TxnRequest {
        compares: vec![],
        ops: vec![
            pb::TxnOp {
                op: Some(pb::txn_op::Op::Put(pb::TxnPut {
                    key: "/d".into(),
                    value: b"1".to_vec(),
                })),
            },
            pb::TxnOp {
                op: Some(pb::txn_op::Op::Delete(pb::TxnDelete { key: "/d".into() })),
            },
        ],
    };
    let err = kv.txn(dup).await.expect_err("duplicate keys");
    ensure!(
        err.code() == Code::InvalidArgument && err.message().contains("twice"),
        "{err:?}"
    );
    // A transaction whose compare fails applies none of its ops.
    let guarded = pb::TxnRequest {
        compares: vec![pb::Compare {
            key: "/ok".into(),
            revision: first + 100,
        }],
        ops: vec![pb::TxnOp {
            op: Some(pb::txn_op::Op::Put(pb::TxnPut {
                key: "/t1".into(),
                value: b"1".to_vec(),
            })),
        }],
    };
    let err = kv.txn(guarded).await.expect_err("stale compare");
    ensure!(err.code() == Code::FailedPrecondition, "{err:?}");
    let t1 = kv
        .get(GetRequest {
            key: "/t1".into(),
            consistency: 0,
        })
        .await?
        .into_inner();
    ensure!(
        t1.object.is_none(),
        "a failed transaction must not apply its ops"
    );
    let err = kv
        .delete(pb::DeleteRequest {
            key: "/ok".into(),
            expected_revision: Some(first + 7),
        })
        .await
        .expect_err("stale delete");
    ensure!(err.code() == Code::FailedPrecondition, "{err:?}");
    ensure!(
        revision(&mut kv).await? == before,
        "refused transactions changed the store"
    );

    // Unknown members and impossible membership changes.
    let err = cluster
        .promote(ndc_api::cluster::PromoteRequest { id: 99 })
        .await
        .expect_err("promote unknown");
    ensure!(
        err.code() == Code::NotFound && err.message().contains("99"),
        "{err:?}"
    );
    let err = cluster
        .remove(ndc_api::cluster::RemoveRequest { id: 99 })
        .await
        .expect_err("remove unknown");
    ensure!(err.code() == Code::NotFound, "{err:?}");
    let err = cluster
        .remove(ndc_api::cluster::RemoveRequest { id: 1 })
        .await
        .expect_err("remove last voter");
    ensure!(
        err.code() == Code::FailedPrecondition && err.message().contains("last voter"),
        "{err:?}"
    );
    let err = cluster
        .add_learner(ndc_api::cluster::AddLearnerRequest {
            id: 7,
            addr: " ".into(),
        })
        .await
        .expect_err("empty address");
    ensure!(err.code() == Code::InvalidArgument, "{err:?}");

    // A watch from a compacted revision is told to list again.
    let err = match kv
        .watch(pb::WatchRequest {
            prefix: String::new(),
            start_revision: 1,
        })
        .await
    {
        Err(s) => s,
        Ok(stream) => {
            let mut s = stream.into_inner();
            match s.next().await {
                Some(Err(e)) => e,
                other => {
                    anyhow::bail!("watch from a compacted revision should fail, got {other:?}")
                }
            }
        }
    };
    ensure!(
        err.code() == Code::OutOfRange && err.message().contains("list again"),
        "{err:?}"
    );

    // The CLI: a refusal exits 1, usage errors exit 2.
    let (code, _, stderr) = ndc(&["--endpoints", &a1, "get", "/missing"])?;
    ensure!(
        code == 1 && stderr.starts_with("error: key \"/missing\" not found"),
        "{code} {stderr}"
    );
    let (code, _, stderr) = ndc(&[
        "--endpoints",
        &a1,
        "put",
        "/ok",
        "v",
        "--expect-revision",
        "1",
    ])?;
    ensure!(
        code == 1 && stderr.contains("caused by:"),
        "{code} {stderr}"
    );
    let (code, _, _) = ndc(&["--endpoints", &a1, "put"])?;
    ensure!(code == 2, "missing arguments is a usage error");
    ensure!(
        revision(&mut kv).await? == before,
        "CLI refusals changed the store"
    );
    Ok(())
}

/// Writes that arrive together share a log entry; compare-and-swap still has
/// exactly one winner among racing clients, and every change is watched.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_compare_and_swap_has_one_winner() -> Result<()> {
    let mut c = Cluster::new(&[])?;
    let a1 = c.start(1, "127.0.0.1:0", Start::Init).await?;
    c.wait_voters(&[1]).await?;
    let mut kv = KvClient::new(ndc_api::client::channel(&a1)?);
    let first = kv
        .put(PutRequest {
            key: "/cas/x".into(),
            value: b"0".to_vec(),
            expected_revision: None,
        })
        .await?
        .into_inner()
        .revision;
    let mut watch = kv
        .watch(pb::WatchRequest {
            prefix: "/cas/".into(),
            start_revision: first + 1,
        })
        .await?
        .into_inner();
    let _established = watch.next().await.context("watch")??;

    for round in 0..5 {
        let current = kv
            .get(GetRequest {
                key: "/cas/x".into(),
                consistency: 0,
            })
            .await?
            .into_inner()
            .object
            .context("x")?
            .mod_revision;
        let mut tasks = Vec::new();
        for i in 0..32 {
            let mut kv = kv.clone();
            tasks.push(tokio::spawn(async move {
                kv.put(PutRequest {
                    key: "/cas/x".into(),
                    value: format!("{round}-{i}").into_bytes(),
                    expected_revision: Some(current),
                })
                .await
            }));
        }
        let mut winners = 0;
        for t in tasks {
            match t.await? {
                Ok(_) => winners += 1,
                Err(s) => ensure!(s.code() == Code::FailedPrecondition, "{s:?}"),
            }
        }
        ensure!(
            winners == 1,
            "round {round}: {winners} compare-and-swaps won"
        );
    }
    // Independent writes racing: all land, each is watched once.
    let mut tasks = Vec::new();
    for i in 0..64 {
        let mut kv = kv.clone();
        tasks.push(tokio::spawn(async move {
            kv.put(PutRequest {
                key: format!("/cas/k{i:02}"),
                value: b"v".to_vec(),
                expected_revision: None,
            })
            .await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let x = kv
        .get(GetRequest {
            key: "/cas/x".into(),
            consistency: 0,
        })
        .await?
        .into_inner()
        .object
        .context("x")?;
    ensure!(x.version == 6, "x changed {} times, expected 6", x.version);
    let mut keys = std::collections::BTreeSet::new();
    let mut last_rev = 0;
    while keys.len() < 64 {
        let msg = watch.next().await.context("watch ended")??;
        ensure!(msg.revision >= last_rev, "revisions go forward");
        last_rev = msg.revision;
        for e in msg.events {
            let k = e.object.context("object")?.key;
            if k != "/cas/x" {
                ensure!(keys.insert(k.clone()), "{k} seen twice");
            }
        }
    }
    Ok(())
}

/// A write retried with the same request id (its answer was lost) is
/// applied once: the retry gets the first answer and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_is_applied_once() -> Result<()> {
    use ndc_api::client::Auth;
    let mut c = Cluster::new(&[])?;
    let a1 = c.start(1, "127.0.0.1:0", Start::Init).await?;
    c.start(2, "127.0.0.1:0", Start::Join(&a1)).await?;
    c.wait_voters(&[1, 2]).await?;
    let follower = c.addr(2);
    let with_id = |addr: &str, id: &str| -> Result<_> {
        Ok(KvClient::with_interceptor(
            ndc_api::client::channel(addr)?,
            Auth::new(None)?.with_request_id(id)?,
        ))
    };
    let put = |v: &str| PutRequest {
        key: "/once/x".into(),
        value: v.as_bytes().to_vec(),
        expected_revision: None,
    };
    let first = with_id(&a1, "retry-0001")?
        .put(put("a"))
        .await?
        .into_inner();
    // The same request again, through the other node (forwarded): same answer.
    let again = with_id(&follower, "retry-0001")?
        .put(put("a"))
        .await?
        .into_inner();
    ensure!(again.revision == first.revision, "{again:?} vs {first:?}");
    let mut kv = KvClient::new(ndc_api::client::channel(&a1)?);
    let x = kv
        .get(GetRequest {
            key: "/once/x".into(),
            consistency: 0,
        })
        .await?
        .into_inner();
    ensure!(x.object.context("x")?.version == 1, "applied once");
    // A compare-and-swap retried after it succeeded still reports success.
    let cas = |rev| PutRequest {
        key: "/once/x".into(),
        value: b"b".to_vec(),
        expected_revision: Some(rev),
    };
    let ok = with_id(&a1, "retry-0002")?
        .put(cas(first.revision))
        .await?
        .into_inner();
    let ok2 = with_id(&a1, "retry-0002")?
        .put(cas(first.revision))
        .await?
        .into_inner();
    ensure!(ok.revision == ok2.revision);
    // A new id is a new request: this compare-and-swap is now stale.
    let err = with_id(&a1, "retry-0003")?
        .put(cas(first.revision))
        .await
        .expect_err("stale");
    ensure!(err.code() == Code::FailedPrecondition, "{err:?}");
    // A malformed id is refused before anything is proposed.
    let err = with_id(&a1, "short")?
        .put(put("c"))
        .await
        .expect_err("bad id");
    ensure!(
        err.code() == Code::InvalidArgument && err.message().contains("request id"),
        "{err:?}"
    );
    Ok(())
}
