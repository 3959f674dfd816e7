//! Cluster tests: real `ndc server` processes on 127.0.0.1 with ports from the
//! OS and temp data dirs, driven through the gRPC API and the `ndc` CLI.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// Three nodes; the leader is killed with SIGKILL in the middle of a stream
/// of writes from several clients. Every acknowledged write must be on every
/// survivor, and on the killed node once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_a_leader_kill() -> Result<()> {
    let mut c = Cluster::new(&[])?;
    let a1 = c.start(1, "127.0.0.1:0", Start::Init).await?;
    c.start(2, "127.0.0.1:0", Start::Join(&a1)).await?;
    c.start(3, "127.0.0.1:0", Start::Join(&a1)).await?;
    c.wait_voters(&[1, 2, 3]).await?;

    // Writes go through every node, not only the leader.
    for (i, ep) in c.endpoints().iter().enumerate() {
        let one = ndc_api::Client::new(std::slice::from_ref(ep))?;
        put(&one, &format!("/via/{i}"), b"x")
            .await
            .with_context(|| format!("write via {ep}"))?;
    }

    let endpoints = c.endpoints();
    let acked = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let max_rev = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (acked, max_rev, total, stop) =
            (acked.clone(), max_rev.clone(), total.clone(), stop.clone());
        let client = ndc_api::Client::new(&endpoints)?;
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("/stream/{w}/{i:06}");
                match put(&client, &key, key.as_bytes()).await {
                    Ok(rev) => {
                        acked.lock().map(|mut s| s.insert(key)).ok();
                        max_rev.fetch_max(rev, Ordering::Relaxed);
                        total.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => errors += 1,
                }
                i += 1;
            }
            errors
        }));
    }

    wait_for("200 acknowledged writes", || {
        let t = total.clone();
        async move { (t.load(Ordering::Relaxed) >= 200).then_some(()) }
    })
    .await?;
    let old_leader = c.leader().await?;
    let old_addr = c.kill9(old_leader)?;
    let at_kill = total.load(Ordering::Relaxed);

    // A new leader is elected among the survivors and writes resume.
    let new_leader = c.leader_other_than(Some(old_leader)).await?;
    eprintln!("node {old_leader} was killed; node {new_leader} leads now");
    wait_for("200 more acknowledged writes after the kill", || {
        let t = total.clone();
        async move { (t.load(Ordering::Relaxed) >= at_kill + 200).then_some(()) }
    })
    .await?;
    stop.store(true, Ordering::Relaxed);
    let mut errors = 0;
    for w in writers {
        errors += w.await?;
    }
    let acked: BTreeSet<String> = acked.lock().map(|s| s.clone()).unwrap_or_default();
    let max_rev = max_rev.load(Ordering::Relaxed);
    eprintln!(
        "acknowledged {} writes ({errors} failed or unacknowledged), up to revision {max_rev}",
        acked.len()
    );

    let survivors: Vec<u64> = c.nodes.keys().copied().collect();
    for id in &survivors {
        c.wait_applied(*id, max_rev).await?;
        let keys: BTreeSet<String> = keys_on(&c.addr(*id), "/stream/")
            .await?
            .into_iter()
            .collect();
        let missing: Vec<&String> = acked.difference(&keys).collect();
        ensure!(
            missing.is_empty(),
            "node {id} lost {} acknowledged writes, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }

    // The killed node comes back from its data dir and catches up.
    c.start(old_leader, &old_addr, Start::Bare).await?;
    c.wait_applied(old_leader, max_rev).await?;
    let keys: BTreeSet<String> = keys_on(&c.addr(old_leader), "/stream/")
        .await?
        .into_iter()
        .collect();
    ensure!(
        acked.is_subset(&keys),
        "the restarted node is missing acknowledged writes"
    );
    Ok(())
}

/// A node that was down while the log was snapshotted and purged catches up
/// by receiving a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_node_catches_up_by_snapshot() -> Result<()> {
    let mut c = Cluster::new(&["--snapshot-every", "50", "--keep-logs", "5"])?;
    let a1 = c.start(1, "127.0.0.1:0", Start::Init).await?;
    c.start(2, "127.0.0.1:0", Start::Join(&a1)).await?;
    c.start(3, "127.0.0.1:0", Start::Join(&a1)).await?;
    c.wait_voters(&[1, 2, 3]).await?;
    let client = ndc_api::Client::new(&c.endpoints())?;
    let mut target = 3;
    if c.leader().await? == 3 {
        target = 2;
    }
    let down_at = status(&c.addr(target))
        .await
        .context("status")?
        .last_log_index;
    let addr = c.addr(target);
    let exit = c.terminate(target)?;
    ensure!(
        exit.success(),
        "SIGTERM should stop a node cleanly, got {exit}"
    );

    let client_live = ndc_api::Client::new(&c.endpoints())?;
    drop(client);
    let mut last = 0;
    for i in 0..300 {
        last = put(&client_live, &format!("/snap/{i:04}"), b"v").await?;
    }
    let leader = c.leader().await?;
    let s = status(&c.addr(leader)).await.context("leader status")?;
    ensure!(
        s.purged_index > down_at,
        "the leader should have purged past {down_at}, purged {}",
        s.purged_index
    );

    c.start(target, &addr, Start::Bare).await?;
    c.wait_applied(target, last).await?;
    let keys = keys_on(&c.addr(target), "/snap/").await?;
    ensure!(
        keys.len() == 300,
        "caught-up node has {} of 300 keys",
        keys.len()
    );
    let s = status(&c.addr(target)).await.context("status")?;
    ensure!(
        s.snapshot_index > down_at,
        "node should hold a snapshot past {down_at}, has {}",
        s.snapshot_index
    );
    Ok(())
}

/// Grow 1 → 3 (by --join and by `ndc cluster add/promote`), shrink 3 → 2;
/// the removed node refuses writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_grows_and_shrinks() -> Result<()> {
    let mut c = Cluster::new(&[])?;
    let a1 = c.start(1, "127.0.0.1:0", Start::Init).await?;
    c.wait_voters(&[1]).await?;
    c.start(2, "127.0.0.1:0", Start::Join(&a1)).await?;
    c.wait_voters(&[1, 2]).await?;

    // Node 3 starts bare and is added by an operator with the CLI.
    let a3 = c.start(3, "127.0.0.1:0", Start::Bare).await?;
    let eps = c.endpoints().join(",");
    let (code, out, err) = ndc(&["--endpoints", &eps, "cluster", "add", "3", &a3])?;
    ensure!(code == 0, "cluster add failed ({code}): {out}{err}");
    ensure!(
        out.contains("learner"),
        "add should show node 3 as a learner: {out}"
    );
    let (code, out, err) = ndc(&["--endpoints", &eps, "cluster", "promote", "3"])?;
    ensure!(code == 0, "cluster promote failed ({code}): {out}{err}");
    c.wait_voters(&[1, 2, 3]).await?;
    let (code, out, _) = ndc(&["--endpoints", &eps, "cluster", "status"])?;
    ensure!(
        code == 0 && out.contains("leader") && out.matches("voter").count() >= 3,
        "status: {out}"
    );

    let client = ndc_api::Client::new(&c.endpoints())?;
    put(&client, "/m/before", b"1").await?;

    // Shrink to two by removing node 3 through node 1.
    let (code, out, err) = ndc(&["--endpoints", &a1, "cluster", "remove", "3"])?;
    ensure!(code == 0, "cluster remove failed ({code}): {out}{err}");
    let removed = c.nodes.remove(&3).context("node 3")?;
    c.wait_voters(&[1, 2]).await?;
    c.nodes.insert(3, removed);

    let only3 = ndc_api::Client::new(std::slice::from_ref(&a3))?;
    let err = put(&only3, "/m/after", b"x")
        .await
        .expect_err("a removed node must refuse writes");
    ensure!(
        err.code() == Code::FailedPrecondition && err.message().contains("not a member"),
        "removed node said: {err:?}"
    );
    let (code, _, stderr) = ndc(&["--endpoints", &a3, "put", "/m/after", "x"])?;
    ensure!(
        code == 1 && stderr.contains("not a member"),
        "CLI against a removed node: {code} {stderr}"
    );

    // The leader told node 3 it was removed: it says so, and still refuses after a restart.
    wait_for("node 3 to know it was removed", || {
        let a3 = a3.clone();
        async move {
            status(&a3)
                .await
                .filter(|s| s.state == "removed")
                .map(|_| ())
        }
    })
    .await?;
    let exit = c.terminate(3)?;
    ensure!(exit.success(), "a removed node still stops cleanly: {exit}");
    c.start(3, &a3, Start::Bare).await?;
    let err = put(&only3, "/m/after", b"x")
        .await
        .expect_err("still removed after restart");
    ensure!(
        err.code() == Code::FailedPrecondition && err.message().contains("removed"),
        "{err:?}"
    );

    let two = ndc_api::Client::new(&[c.addr(1), c.addr(2)])?;
    put(&two, "/m/after", b"2").await?;
    let (code, out, _) = ndc(&["--endpoints", &c.addr(2), "get", "/m/after"])?;
    ensure!(
        code == 0 && out.trim() == "2",
        "read after shrink: {code} {out}"
    );
    Ok(())
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

/// `ndc up --check`: the README's main command, on a free port.
#[tokio::test]
async fn ndc_up_runs_and_stops_cleanly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let (code, out, err) = ndc(&[
        "up",
        "--data-dir",
        data.to_str().context("utf-8 path")?,
        "--listen",
        "127.0.0.1:0",
        "--check",
    ])?;
    ensure!(code == 0, "ndc up --check failed ({code}): {out}{err}");
    ensure!(out.contains("checked and stopped cleanly"), "{out}");
    ensure!(err.contains("[3/3]"), "progress is shown: {err}");
    // A second run finds the existing data and starts again.
    let (code, out, err) = ndc(&[
        "up",
        "--data-dir",
        data.to_str().context("utf-8 path")?,
        "--listen",
        "127.0.0.1:0",
        "--check",
    ])?;
    ensure!(code == 0, "second ndc up failed ({code}): {out}{err}");
    // It started on another port: it says so and records the new address.
    ensure!(err.contains("last served on another address"), "{err}");
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
