//! The two stages of a run, each in a process of its own: build the state
//! and time lists and watches; build a snapshot and install it on a new node.

use super::*;

pub(super) async fn stage_build(
    args: &ScaleArgs,
    plan: &Plan,
    m: &Arc<Monitor>,
    key: &ndc_server::SecretsKey,
    dir: &Path,
) -> Result<BuildStage> {
    let dir1 = dir.join("node-1");
    let cfg1 = node_config(1, &dir1, key, true)?;
    let hwm_reset = reset_peak();

    // 1. Build the state.
    m.phase("start node 1", 0);
    let node1 = start_leader(cfg1.clone()).await?;
    m.set_leader(Some(node1.addr.clone()));
    let chans = channels(&node1.addr).await?;
    let build_started = Instant::now();
    let cpu0 = cpu_seconds();
    let applied0 = status(&node1.addr).await?.applied_index;
    let mut build = Vec::new();
    let mut tenant_lat = Vec::new();
    let mut tenant_time = Duration::ZERO;
    for (name, range) in plan.waves() {
        if range.is_empty() {
            continue;
        }
        m.phase(&format!("tenants: {name}"), range.end - range.start);
        let (lat, took) = drive(m, range.end - range.start, args.concurrency, |i| {
            let mut c = TenantsClient::new(chans[i as usize % CONNECTIONS].clone());
            let spec = ndc_api::convert::spec_to_pb(&plan.spec(range.start + i));
            async move {
                c.create(CreateTenantRequest {
                    spec: Some(spec),
                    decision: String::new(),
                })
                .await
                .context("creating a tenant")?;
                Ok(())
            }
        })
        .await?;
        tenant_lat.extend(lat);
        tenant_time += took;
    }
    build.push(BuildFigures {
        what: "tenants".into(),
        creates: figures(tenant_lat, 0, tenant_time),
    });

    let ids: Vec<String> = (0..plan.tenants).map(|i| plan.spec(i).id).collect();
    m.phase("claims", plan.claims);
    let (lat, took) = drive(m, plan.claims, args.concurrency, |j| {
        let mut c = ClaimsClient::new(chans[j as usize % CONNECTIONS].clone());
        let req = plan.claim(j, &ids);
        async move {
            c.create(req).await.context("creating a claim")?;
            Ok(())
        }
    })
    .await?;
    build.push(BuildFigures {
        what: "claims".into(),
        creates: figures(lat, 0, took),
    });
    drop(ids);
    let build_seconds = build_started.elapsed().as_secs_f64();
    let build_cpu_seconds = cpu_seconds() - cpu0;
    let st = status(&node1.addr).await?;
    let mem_after_build = mem();
    let data_dir_bytes_after_build = dir_size(&dir1);
    let writes = plan.tenants + plan.claims;
    eprintln!(
        "built: {} writes in {build_seconds:.1} s ({:.0}/s), RSS {} (peak {}), {} on disk",
        thousands(writes),
        writes as f64 / build_seconds,
        bytes(mem_after_build.rss_bytes),
        bytes(mem_after_build.hwm_bytes),
        bytes(data_dir_bytes_after_build)
    );
    let policy_snapshots = {
        let s = m.samples.lock().map(|s| s.clone()).unwrap_or_default();
        let mut n = 0;
        let mut last = 0;
        for x in s {
            if x.snapshot_index > last {
                if last > 0 || x.snapshot_index > 0 {
                    n += 1;
                }
                last = x.snapshot_index;
            }
        }
        n
    };

    // 2. Lists at this size.
    reset_peak();
    m.phase("lists", 0);
    let big = |ch: &Channel| {
        (
            TenantsClient::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE),
            ClaimsClient::new(ch.clone()).max_decoding_message_size(MAX_MESSAGE),
        )
    };
    let (tc, cc) = big(&chans[0]);
    let one_province = plan
        .provinces
        .first()
        .map(|p| p.id.clone())
        .unwrap_or_else(|| "vn".into());
    let one_tenant = plan.spec(plan.tenants - 1).id;
    let mut lists = Vec::new();
    let phases = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    type Call<'a> = Box<
        dyn FnMut() -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<(u64, u64)>> + Send + 'a>,
            > + 'a,
    >;
    let cases: Vec<(String, Call<'_>)> = vec![
        (
            "tenants: all".into(),
            Box::new(|| {
                let mut c = tc.clone();
                Box::pin(async move {
                    let r = c.list(ListTenantsRequest::default()).await?.into_inner();
                    Ok((
                        r.tenants.len() as u64,
                        prost::Message::encoded_len(&r) as u64,
                    ))
                })
            }),
        ),
        (
            format!("tenants: children of {one_province}"),
            Box::new(|| {
                let mut c = tc.clone();
                let parent = one_province.clone();
                Box::pin(async move {
                    let r = c
                        .list(ListTenantsRequest {
                            parent,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    Ok((
                        r.tenants.len() as u64,
                        prost::Message::encoded_len(&r) as u64,
                    ))
                })
            }),
        ),
        (
            format!("claims: one tenant ({one_tenant})"),
            Box::new(|| {
                let mut c = cc.clone();
                let tenant = one_tenant.clone();
                Box::pin(async move {
                    let r = c
                        .list(ListClaimsRequest {
                            tenant,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    Ok((
                        r.claims.len() as u64,
                        prost::Message::encoded_len(&r) as u64,
                    ))
                })
            }),
        ),
        (
            format!("claims: all, in pages of {}", thousands(CLAIMS_PAGE as u64)),
            Box::new(|| {
                let mut c = cc.clone();
                Box::pin(async move {
                    let (mut items, mut size) = (0u64, 0u64);
                    let mut start_after = String::new();
                    loop {
                        let r = c
                            .list(ListClaimsRequest {
                                limit: CLAIMS_PAGE,
                                start_after,
                                ..Default::default()
                            })
                            .await?
                            .into_inner();
                        items += r.claims.len() as u64;
                        size += prost::Message::encoded_len(&r) as u64;
                        if r.next_after.is_empty() {
                            break;
                        }
                        start_after = r.next_after;
                    }
                    Ok((items, size))
                })
            }),
        ),
        (
            "claims: all, in one answer".into(),
            Box::new(|| {
                let mut c = cc.clone();
                let phases = phases.clone();
                Box::pin(async move {
                    let r = c.list(ListClaimsRequest::default()).await?.into_inner();
                    let mut count = std::collections::BTreeMap::new();
                    for claim in &r.claims {
                        *count.entry(claim.phase.clone()).or_insert(0u64) += 1;
                    }
                    if let Ok(mut p) = phases.lock() {
                        *p = count;
                    }
                    Ok((
                        r.claims.len() as u64,
                        prost::Message::encoded_len(&r) as u64,
                    ))
                })
            }),
        ),
    ];
    for (what, mut call) in cases {
        let started = Instant::now();
        let mut lat = Vec::new();
        let (mut items, mut size) = (0, 0);
        // Slow cases stop after LIST_BUDGET, with at least 3 calls.
        while (lat.len() as u64) < args.list_calls
            && (lat.len() < 3 || started.elapsed() < LIST_BUDGET)
        {
            let t = Instant::now();
            (items, size) = call().await.with_context(|| format!("list {what}"))?;
            lat.push(t.elapsed());
        }
        let f = figures(lat, 0, started.elapsed());
        eprintln!(
            "  {what}: {} items, {}, p50 {:.1} ms, p99 {:.1} ms",
            thousands(items),
            bytes(size),
            f.p50_ms,
            f.p99_ms
        );
        lists.push(ListFigures {
            what,
            items,
            response_bytes: size,
            latency: f,
        });
    }
    let list_peak_bytes = mem().hwm_bytes;
    let claim_phases = phases.lock().map(|p| p.clone()).unwrap_or_default();
    let mut cc = ClaimsClient::new(chans[0].clone());

    // 3. Watch latency: from a claim's create to a watcher on the claims.
    m.phase("watch", args.watch_writes);
    let mut kv = KvClient::new(chans[1].clone());
    let mut stream = kv
        .watch(WatchRequest {
            prefix: ndc_store::keys::CLAIMS_PREFIX.into(),
            start_revision: 0,
        })
        .await?
        .into_inner();
    // The first message says the watch is established.
    stream.message().await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watcher = tokio::spawn(async move {
        while let Ok(Some(msg)) = stream.message().await {
            let at = Instant::now();
            for e in msg.events {
                if let Some(o) = e.object {
                    if tx.send((o.key, at)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let (mut delivery, mut ack) = (Vec::new(), Vec::new());
    let watch_started = Instant::now();
    for i in 0..args.watch_writes {
        let t = Instant::now();
        let r = cc
            .create(CreateClaimRequest {
                tenant: "vn".into(),
                name: format!("watch-{}", i + 1),
                spec: Some(create_claim_request::Spec::Bucket(
                    ndc_api::claims::BucketSpec {
                        size_bytes: GIB,
                        versioning: false,
                        retention_days: 0,
                    },
                )),
                deletion_policy: String::new(),
            })
            .await
            .context("a watched write")?
            .into_inner();
        ack.push(t.elapsed());
        m.writes.fetch_add(1, Ordering::Relaxed);
        let uid = r.claim.map(|c| c.uid).unwrap_or_default();
        let want = ndc_store::keys::claim_key(&uid);
        let seen = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some((k, at)) = rx.recv().await {
                if k == want {
                    return Some(at);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .context("the watcher did not see a write within 30 s")?;
        delivery.push(seen.saturating_duration_since(t));
    }
    let watch_took = watch_started.elapsed();
    watcher.abort();
    let watch_delivery = figures(delivery, 0, watch_took);
    let watch_write_ack = figures(ack, 0, watch_took);
    eprintln!(
        "  watch: delivery p50 {:.2} ms, p99 {:.2} ms (write acknowledged p50 {:.2} ms)",
        watch_delivery.p50_ms, watch_delivery.p99_ms, watch_write_ack.p50_ms
    );
    drop(cc);
    drop(chans);

    m.phase("stop node 1", 0);
    m.set_leader(None);
    node1.shutdown().await?;
    let build_writes_per_sec = (plan.tenants + plan.claims) as f64 / build_seconds;
    Ok(BuildStage {
        creates: build,
        seconds: build_seconds,
        writes_per_sec: build_writes_per_sec,
        cpu_seconds: build_cpu_seconds,
        log_entries_applied: st.applied_index.saturating_sub(applied0),
        policy_snapshots,
        mem_after_build,
        hwm_reset_supported: hwm_reset,
        data_dir_bytes: data_dir_bytes_after_build,
        lists,
        list_peak_bytes,
        claim_phases,
        watch_delivery,
        watch_write_ack,
        samples: Vec::new(),
        markers: Vec::new(),
    })
}

pub(super) async fn stage_install(
    m: &Arc<Monitor>,
    key: &ndc_server::SecretsKey,
    dir: &Path,
) -> Result<InstallStage> {
    let dir1 = dir.join("node-1");
    let cfg1 = node_config(1, &dir1, key, true)?;

    // A snapshot, built through the store API on node 1's data.
    m.phase("snapshot", 0);
    reset_peak();
    let t = Instant::now();
    let mut store = ndc_store::open(&dir1, cfg1.history).context("opening node 1's store")?;
    let open_store_seconds = t.elapsed().as_secs_f64();
    let rss_store_open_bytes = mem().rss_bytes;
    let t = Instant::now();
    let mut builder = store.state_machine.get_snapshot_builder().await;
    let snap = builder
        .build_snapshot()
        .await
        .map_err(|e| anyhow::anyhow!("building a snapshot: {e}"))?;
    let snapshot_build_seconds = t.elapsed().as_secs_f64();
    let snapshot_bytes = snap
        .snapshot
        .metadata()
        .await
        .context("reading the snapshot's size")?
        .len();
    let snapshot_last_log_index = snap.meta.last_log_id.map(|l| l.index).unwrap_or(0);
    let snapshot_peak_bytes = mem().hwm_bytes;
    // The meta file and the bodies on disk (the current one, normally).
    let snapshot_file_bytes = std::fs::metadata(dir1.join("snapshot.meta"))
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::read_dir(dir1.join("snapshots"))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum::<u64>()
            })
            .unwrap_or(0);
    eprintln!(
        "  snapshot: {} built in {snapshot_build_seconds:.1} s (store opened in {open_store_seconds:.1} s), up to index {}",
        bytes(snapshot_bytes),
        thousands(snapshot_last_log_index)
    );
    drop(snap);
    drop(builder);
    drop(store);

    // Node 1 again, on that state; left alone for a while.
    m.phase("restart node 1", 0);
    let t = Instant::now();
    let node1 = loop {
        match start_leader(cfg1.clone()).await {
            Ok(n) => break n,
            // The store's last handles may still be closing.
            Err(_) if t.elapsed() < Duration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context("restarting node 1"),
        }
    };
    let leader_restart_seconds = t.elapsed().as_secs_f64();
    m.set_leader(Some(node1.addr.clone()));
    reset_peak();
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    tokio::time::sleep(IDLE).await;
    let idle_seconds = t.elapsed().as_secs_f64();
    let idle_cpu_percent = (cpu_seconds() - cpu0) / idle_seconds * 100.0;
    let idle_mem = mem();
    eprintln!(
        "  restarted in {leader_restart_seconds:.1} s; alone for {idle_seconds:.0} s: RSS {} (peak {}), CPU {idle_cpu_percent:.0} % of a core",
        bytes(idle_mem.rss_bytes),
        bytes(idle_mem.hwm_bytes)
    );

    // The restarted leader may write by itself (its provisioner reports on
    // claims); a learner cannot catch up with a leader that snapshots and
    // purges faster than it installs. Wait until it is quiet.
    m.phase("wait for the leader to be quiet", 0);
    let t = Instant::now();
    let restart_index = status(&node1.addr).await?.applied_index;
    let (mut last, mut still) = (restart_index, 0);
    while still < QUIET_FOR && t.elapsed() < QUIET_WAIT {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = status(&node1.addr).await?.applied_index;
        if now == last {
            still += 1;
        } else {
            (last, still) = (now, 0);
        }
    }
    let quiet_wait_seconds = t.elapsed().as_secs_f64();
    let quiet = still >= QUIET_FOR;
    let entries_written_after_restart = last.saturating_sub(restart_index);
    let quiet_mem = mem();
    eprintln!(
        "  leader {} after {quiet_wait_seconds:.0} s, having written {} entries by itself; RSS {} (peak {})",
        if quiet { "quiet" } else { "still writing" },
        thousands(entries_written_after_restart),
        bytes(quiet_mem.rss_bytes),
        bytes(quiet_mem.hwm_bytes)
    );

    // Node 2, empty, added as a learner: time until it has caught up.
    m.phase("install on a new node", 0);
    reset_peak();
    let node2 = ndc_server::start(node_config(2, &dir.join("node-2"), key, false)?).await?;
    let t = Instant::now();
    ClusterClient::new(ndc_api::client::channel(&node1.addr)?)
        .add_learner(AddLearnerRequest {
            id: 2,
            addr: node2.addr.clone(),
        })
        .await
        .context("adding node 2 as a learner")?;
    let add_learner_seconds = t.elapsed().as_secs_f64();
    let leader_applied_index = status(&node1.addr).await?.applied_index;
    let learner = loop {
        let s = status(&node2.addr).await?;
        if s.applied_index >= leader_applied_index {
            break s;
        }
        if t.elapsed() > Duration::from_secs(1800) {
            bail!("node 2 did not catch up in 30 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let caught_up_seconds = t.elapsed().as_secs_f64();
    let learner_tenants = TenantsClient::new(ndc_api::client::channel(&node2.addr)?)
        .max_decoding_message_size(MAX_MESSAGE)
        .list(ListTenantsRequest {
            stale: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .tenants
        .len() as u64;
    let mem_after_install = mem();
    eprintln!(
        "  install: learner caught up in {caught_up_seconds:.1} s (snapshot index {}, {} tenants)",
        thousands(learner.snapshot_index),
        thousands(learner_tenants)
    );
    m.phase("done", 0);
    m.set_leader(None);
    node2.shutdown().await?;
    node1.shutdown().await?;
    Ok(InstallStage {
        snapshot_method: "store API on node 1's data while it is stopped: ndc_store::open, then the state machine's snapshot builder (RunningNode does not expose openraft's trigger)".into(),
        open_store_seconds,
        snapshot_build_seconds,
        snapshot_bytes,
        snapshot_file_bytes,
        snapshot_last_log_index,
        rss_store_open_bytes,
        snapshot_peak_bytes,
        leader_restart_seconds,
        idle_seconds,
        idle_mem,
        idle_cpu_percent,
        quiet,
        quiet_wait_seconds,
        entries_written_after_restart,
        quiet_mem,
        add_learner_seconds,
        caught_up_seconds,
        learner_snapshot_index: learner.snapshot_index,
        learner_applied_index: learner.applied_index,
        leader_applied_index,
        learner_tenants,
        mem_after_install,
        samples: Vec::new(),
        markers: Vec::new(),
    })
}
