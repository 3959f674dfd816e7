//! The report: `report.md`, `figures.json` and the SVG charts.

use super::*;

pub(super) fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

pub(super) type Points = Vec<(f64, f64)>;

pub(super) fn rates(s: &[Sample]) -> (Points, Points, Points) {
    // Per second over a 5-sample window: creates, log entries, CPU %.
    let (mut creates, mut entries, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
    for i in 1..s.len() {
        let j = i.saturating_sub(5);
        let dt = s[i].t - s[j].t;
        if dt <= 0.0 {
            continue;
        }
        creates.push((s[i].t, s[i].writes.saturating_sub(s[j].writes) as f64 / dt));
        if s[i].applied_index > 0 && s[j].applied_index > 0 {
            entries.push((
                s[i].t,
                s[i].applied_index.saturating_sub(s[j].applied_index) as f64 / dt,
            ));
        }
        cpu.push((s[i].t, (s[i].cpu_seconds - s[j].cpu_seconds) / dt * 100.0));
    }
    (creates, entries, cpu)
}

pub(super) fn write_outputs(dir: &Path, o: &Output) -> Result<()> {
    std::fs::write(dir.join("figures.json"), serde_json::to_vec_pretty(o)?)?;
    let (b, i) = (&o.build, &o.install);
    let (creates, entries, build_cpu) = rates(&b.samples);
    let (_, _, install_cpu) = rates(&i.samples);
    let mut markers: Vec<(f64, String)> = Vec::new();
    for (t, n) in b.markers.iter().chain(&i.markers) {
        let n = if n.starts_with("tenants") {
            "tenants"
        } else {
            n.as_str()
        };
        let skip = ["done", "start node 1", "stop node 1"].contains(&n);
        if !skip && markers.last().is_none_or(|(_, l)| l != n) {
            markers.push((*t, n.to_string()));
        }
    }
    std::fs::write(
        dir.join("writes.svg"),
        line_chart(
            &format!(
                "Creates and log entries per second ({} tenants, {} claims)",
                thousands(o.tenants),
                thousands(o.claims)
            ),
            "seconds since start",
            "per second (5 s window)",
            &[
                Series {
                    name: "creates acknowledged".into(),
                    points: creates,
                },
                Series {
                    name: "log entries applied".into(),
                    points: entries,
                },
            ],
            &markers,
        ),
    )?;
    let mib = |s: &[Sample]| -> Vec<(f64, f64)> {
        s.iter()
            .map(|x| (x.t, x.rss_bytes as f64 / (1024.0 * 1024.0)))
            .collect()
    };
    std::fs::write(
        dir.join("memory.svg"),
        line_chart(
            "Resident memory (VmRSS, sampled every second)",
            "seconds since start",
            "MiB",
            &[
                Series {
                    name: "build process (node 1)".into(),
                    points: mib(&b.samples),
                },
                Series {
                    name: "install process (nodes 1, 2)".into(),
                    points: mib(&i.samples),
                },
            ],
            &markers,
        ),
    )?;
    std::fs::write(
        dir.join("cpu.svg"),
        line_chart(
            "CPU used (user + system; 2 cores = 200 %)",
            "seconds since start",
            "% of one core (5 s window)",
            &[
                Series {
                    name: "build process".into(),
                    points: build_cpu,
                },
                Series {
                    name: "install process".into(),
                    points: install_cpu,
                },
            ],
            &markers,
        ),
    )?;
    std::fs::write(dir.join("report.md"), markdown(o))?;
    Ok(())
}

pub(super) fn markdown(o: &Output) -> String {
    use std::fmt::Write as _;
    let (b, i) = (&o.build, &o.install);
    let mut r = String::new();
    let gib = |x: u64| x as f64 / GIB as f64;
    let _ = writeln!(r, "# Scale benchmark, {}\n", o.date);
    let _ = writeln!(
        r,
        "`ndc-bench scale --scale {}` ({} build) on this machine. Two stages, each in a process \
         of its own: **build** starts one control-plane node in process (`ndc_server::start`, \
         open auth, a secrets key, no provisioning backends), fills it over gRPC on 127.0.0.1 with \
         {} requests in flight over {} connections, then times lists and a watch; **install** \
         builds a snapshot of that node's data, restarts the node on it and adds an empty second \
         node as a learner. Node settings as shipped: snapshot after at least {} entries and a tenth \
         as many entries as objects, {} entries kept \
         behind it, {} revisions of watch history. Raw figures: `figures.json`.\n",
        o.scale,
        o.profile,
        o.concurrency,
        CONNECTIONS,
        o.node_config["snapshot_every"],
        o.node_config["keep_logs"],
        o.node_config["history"],
    );
    let _ = writeln!(
        r,
        "State: {} tenants ({} central bodies with the root `vn`, {} provinces, {} communes with \
         unique 5-digit codes, {} central-level agencies), {} claims (buckets and databases, {} \
         per tenant at most).\n",
        thousands(o.tenants),
        o.central_bodies,
        o.provinces,
        thousands(o.communes),
        thousands(o.agencies),
        thousands(o.claims),
        o.claims.div_ceil(o.tenants.max(1)),
    );

    let _ = writeln!(r, "## Building the state\n");
    let _ = writeln!(
        r,
        "| creates | count | seconds | creates/s | p50 ms | p99 ms | max ms |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|");
    for c in &b.creates {
        let f = &c.creates;
        let _ = writeln!(
            r,
            "| {} | {} | {:.1} | {:.0} | {} | {} | {} |",
            c.what,
            thousands(f.ops as u64),
            f.seconds,
            f.ops_per_sec,
            ms(f.p50_ms),
            ms(f.p99_ms),
            ms(f.max_ms)
        );
    }
    let _ = writeln!(
        r,
        "| **all** | {} | {:.1} | {:.0} | | | |\n",
        thousands(o.tenants + o.claims),
        b.seconds,
        b.writes_per_sec
    );
    let _ = writeln!(
        r,
        "The node applied {} log entries meanwhile and built {} snapshots by its policy; the \
         process used {:.0} CPU seconds ({:.0} % of the 2 cores).\n",
        thousands(b.log_entries_applied),
        b.policy_snapshots,
        b.cpu_seconds,
        b.cpu_seconds / b.seconds.max(1e-9) * 50.0
    );
    let _ = writeln!(r, "![creates per second](writes.svg)\n");

    let _ = writeln!(r, "## Memory and disk\n");
    let _ = writeln!(r, "| process, when | resident (VmRSS) | peak (VmHWM) |");
    let _ = writeln!(r, "|---|---:|---:|");
    let _ = writeln!(
        r,
        "| build: node 1 and the clients, after the build | {} | {} |",
        bytes(b.mem_after_build.rss_bytes),
        bytes(b.mem_after_build.hwm_bytes)
    );
    let _ = writeln!(
        r,
        "| build: during the lists | | {} |",
        bytes(b.list_peak_bytes)
    );
    let _ = writeln!(
        r,
        "| install: store opened, then a snapshot built | {} | {} |",
        bytes(i.rss_store_open_bytes),
        bytes(i.snapshot_peak_bytes)
    );
    let _ = writeln!(
        r,
        "| install: node 1 restarted on the state, left alone {:.0} s ({:.0} % of a core meanwhile) | {} | {} |",
        i.idle_seconds,
        i.idle_cpu_percent,
        bytes(i.idle_mem.rss_bytes),
        bytes(i.idle_mem.hwm_bytes)
    );
    let _ = writeln!(
        r,
        "| install: node 1 {} after {:.0} s more, having written {} entries by itself | {} | {} |",
        if i.quiet { "quiet" } else { "still writing" },
        i.quiet_wait_seconds,
        thousands(i.entries_written_after_restart),
        bytes(i.quiet_mem.rss_bytes),
        bytes(i.quiet_mem.hwm_bytes)
    );
    let _ = writeln!(
        r,
        "| install: nodes 1 and 2 after the install | {} | {} |\n",
        bytes(i.mem_after_install.rss_bytes),
        bytes(i.mem_after_install.hwm_bytes)
    );
    let _ = writeln!(
        r,
        "Peaks are per row{}. Node 1's data directory after the build: {}.\n",
        if b.hwm_reset_supported {
            " (VmHWM reset through /proc/self/clear_refs as each phase starts)"
        } else {
            " (VmHWM could not be reset: each is the peak since the process started)"
        },
        bytes(b.data_dir_bytes)
    );
    let _ = writeln!(r, "![resident memory](memory.svg)\n");
    let _ = writeln!(r, "![CPU](cpu.svg)\n");

    let _ = writeln!(r, "## Snapshot\n");
    let _ = writeln!(r, "| figure | value |");
    let _ = writeln!(r, "|---|---:|");
    let _ = writeln!(r, "| snapshot size | {} |", bytes(i.snapshot_bytes));
    let _ = writeln!(
        r,
        "| snapshot file on disk | {} |",
        bytes(i.snapshot_file_bytes)
    );
    let _ = writeln!(
        r,
        "| up to log index | {} |",
        thousands(i.snapshot_last_log_index)
    );
    let _ = writeln!(
        r,
        "| time to build it | {:.1} s |",
        i.snapshot_build_seconds
    );
    let _ = writeln!(
        r,
        "| time to open the store before (RocksDB with WAL replay, tenants loaded) | {:.1} s |",
        i.open_store_seconds
    );
    let _ = writeln!(
        r,
        "| restart of node 1 on this state, until leader | {:.1} s |",
        i.leader_restart_seconds
    );
    let _ = writeln!(
        r,
        "| restarted leader: entries it wrote by itself before it was quiet{} | {} in {:.0} s |",
        if i.quiet { "" } else { " (it was not)" },
        thousands(i.entries_written_after_restart),
        i.quiet_wait_seconds
    );
    let _ = writeln!(
        r,
        "| **install on a new node**: AddLearner until caught up | **{:.1} s** |",
        i.caught_up_seconds
    );
    let _ = writeln!(
        r,
        "| of which the AddLearner call | {:.1} s |",
        i.add_learner_seconds
    );
    let _ = writeln!(
        r,
        "| new node: snapshot index, applied index (leader's) | {}, {} ({}) |",
        thousands(i.learner_snapshot_index),
        thousands(i.learner_applied_index),
        thousands(i.leader_applied_index)
    );
    let _ = writeln!(
        r,
        "| tenants the new node lists from its own state | {} |\n",
        thousands(i.learner_tenants)
    );
    let _ = writeln!(r, "How it was built: {}.\n", i.snapshot_method);

    let _ = writeln!(r, "## List and watch latency at this size\n");
    let _ = writeln!(
        r,
        "| call | items | response | calls | p50 ms | p99 ms | max ms |"
    );
    let _ = writeln!(r, "|---|---:|---:|---:|---:|---:|---:|");
    for l in &b.lists {
        let _ = writeln!(
            r,
            "| list {} | {} | {} | {} | {} | {} | {} |",
            l.what,
            thousands(l.items),
            bytes(l.response_bytes),
            l.latency.ops,
            ms(l.latency.p50_ms),
            ms(l.latency.p99_ms),
            ms(l.latency.max_ms)
        );
    }
    let (w, a) = (&b.watch_delivery, &b.watch_write_ack);
    let _ = writeln!(
        r,
        "| watch /ndc/claims/: create to event, one write at a time | | | {} | {} | {} | {} |",
        w.ops,
        ms(w.p50_ms),
        ms(w.p99_ms),
        ms(w.max_ms)
    );
    let _ = writeln!(
        r,
        "| (the same creates, until acknowledged) | | | {} | {} | {} | {} |\n",
        a.ops,
        ms(a.p50_ms),
        ms(a.p99_ms),
        ms(a.max_ms)
    );
    let _ = writeln!(
        r,
        "Calls are made one at a time; a case stops repeating after {} s once it has 3 calls. \
         Claims by phase in the last full list: {}.\n",
        LIST_BUDGET.as_secs(),
        b.claim_phases
            .iter()
            .map(|(k, v)| format!("{} {k}", thousands(*v)))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let _ = writeln!(r, "## Goals\n");
    let full = o.tenants >= FULL_TENANTS as u64 && o.claims >= FULL_CLAIMS as u64;
    let worst = b.mem_after_build.rss_bytes.max(i.idle_mem.rss_bytes);
    let _ = writeln!(r, "| goal | measured | met |");
    let _ = writeln!(r, "|---|---:|---|");
    let _ = writeln!(
        r,
        "| 100k tenants / 1M claims in under 2 GiB resident | {} after the build ({} peak during it); {} for the node restarted on the state (at {} tenants, {} claims) | {} |",
        bytes(b.mem_after_build.rss_bytes),
        bytes(b.mem_after_build.hwm_bytes),
        bytes(i.idle_mem.rss_bytes),
        thousands(o.tenants),
        thousands(o.claims),
        match (full, gib(worst) < 2.0) {
            (false, _) => "not measured at this scale",
            (true, true) => "yes",
            (true, false) => "no",
        }
    );
    let _ = writeln!(
        r,
        "| a snapshot installed on a new node in under 30 s | {:.1} s | {} |",
        i.caught_up_seconds,
        if i.learner_snapshot_index == 0 {
            "not measured: no snapshot was needed (the log was replayed)"
        } else if !full {
            if i.caught_up_seconds < 30.0 {
                "yes at this scale; not measured at full scale"
            } else {
                "no, already at this scale"
            }
        } else if i.caught_up_seconds < 30.0 {
            "yes"
        } else {
            "no"
        }
    );
    r
}
