//! Cluster tests: real `ndc server` processes on 127.0.0.1 with ports from the
//! OS and temp data dirs: failures, snapshots, membership.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{ensure, Context, Result};
use ndc_api::kv::kv_client::KvClient;
use ndc_api::kv::PutRequest;
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
