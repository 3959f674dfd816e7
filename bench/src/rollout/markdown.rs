//! The report: `report.md`, `figures.json` and the SVG charts.

use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) fn write_report(
    out: &std::path::Path,
    args: &RolloutArgs,
    tenants: usize,
    objects: usize,
    f: &stats::Figures,
    requested: Duration,
    writes_per_sec: f64,
    peak: &BTreeMap<String, f64>,
    samples: &[Sample],
    latencies: &[Duration],
    errors: &[String],
    not_ready: &[String],
    provisioner: &ndc_server::ProvisionerStats,
    requests: &BTreeMap<String, u64>,
    reconciles: &BTreeMap<String, u64>,
    probe: &Probe,
    cpu: &CpuUse,
    proposals: &ndc_server::ProposalStats,
) -> Result<()> {
    std::fs::create_dir_all(out)?;
    // Latency histogram: tenants per 1-second bucket of latency.
    let mut hist: BTreeMap<u64, usize> = BTreeMap::new();
    for l in latencies {
        *hist.entry(l.as_secs()).or_default() += 1;
    }
    let hist_pts: Vec<(f64, f64)> = hist.iter().map(|(k, v)| (*k as f64, *v as f64)).collect();
    let series = |name: &str, points: Vec<(f64, f64)>| report::Series {
        name: name.to_string(),
        points,
    };
    std::fs::write(
        out.join("latency.svg"),
        report::line_chart(
            "Tenants by latency (request → every object Ready)",
            "seconds",
            "tenants",
            &[series("tenants", hist_pts)],
            &[],
        ),
    )?;
    let ready_pts: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (s.at_s, s.tenants_ready as f64))
        .collect();
    let rev_pts: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| (s.at_s, s.revision as f64))
        .collect();
    std::fs::write(
        out.join("throughput.svg"),
        report::line_chart(
            "Progress over time",
            "seconds",
            "count",
            &[
                series("tenants ready", ready_pts),
                series("control-plane log index", rev_pts),
            ],
            &[],
        ),
    )?;
    let names: Vec<String> = peak.keys().cloned().collect();
    let mem_series: Vec<report::Series> = names
        .iter()
        .map(|n| {
            series(
                n,
                samples
                    .iter()
                    .map(|s| (s.at_s, s.rss_mib.get(n).copied().unwrap_or(0.0)))
                    .collect(),
            )
        })
        .collect();
    std::fs::write(
        out.join("memory.svg"),
        report::line_chart("Resident memory", "seconds", "MiB", &mem_series, &[]),
    )?;
    let figures = serde_json::json!({
        "scale": args.scale, "tenants": tenants, "objects": objects, "concurrency": args.concurrency,
        "seconds": f.seconds, "requests_seconds": requested.as_secs_f64(),
        "tenants_ready": f.ops, "tenants_not_ready": f.errors,
        "tenants_per_sec": f.ops_per_sec, "p50_ms": f.p50_ms, "p99_ms": f.p99_ms, "max_ms": f.max_ms,
        "control_plane_entries_per_sec": writes_per_sec, "peak_rss_mib": peak, "errors": errors,
        "provisioner": provisioner, "kubernetes_requests": requests, "operator_reconciles": reconciles, "backend_probe": probe,
        "cpu": cpu, "control_plane_writes": proposals, "samples": samples,
    });
    std::fs::write(
        out.join("figures.json"),
        serde_json::to_string_pretty(&figures)?,
    )?;
    let mut md = format!(
        "# National rollout (scale {})\n\n{} tenants, {} objects (a bucket, a database and the subscriptions each level allows), {} at a time, against a 3-node control plane, the operator on the Kubernetes simulator, Garage and PostgreSQL, all on this machine.\n\n| figure | value |\n|---|---|\n| total time | {:.1} s |\n| tenants ready | {} of {} |\n| tenants per second | {:.2} |\n| latency p50 / p99 / max (request → every object Ready) | {:.0} / {:.0} / {:.0} ms |\n| control-plane log entries per second | {:.1} |\n",
        args.scale, tenants, objects, args.concurrency, f.seconds, f.ops, tenants, f.ops_per_sec, f.p50_ms, f.p99_ms, f.max_ms, writes_per_sec
    );
    md.push_str("\n| process | peak resident memory |\n|---|---|\n");
    md.push_str("| (processes of one name are summed; PostgreSQL's shared buffers count once per worker) | |\n");
    for (k, v) in peak {
        md.push_str(&format!("| {k} | {v:.0} MiB |\n"));
    }
    md.push_str(&cpu_section(cpu, tenants, tenants_at_full_scale()));
    let p = provisioner;
    let per = |secs: f64, n: u64| if n == 0 { 0.0 } else { secs / n as f64 };
    md.push_str(&format!(
        "\n## Where the time went\n\nThe provisioner (summed over its passes, which run {PARALLEL_PASSES} at once):\n\n| figure | value |\n|---|---|\n| passes (failed) | {} ({}) |\n| seconds in passes | {:.1} |\n| bucket passes: seconds in Garage (per pass) | {} : {:.1} ({:.2}) |\n| database passes: seconds in PostgreSQL (per pass) | {} : {:.1} ({:.2}) |\n| status writes (seconds) | {} ({:.1}) |\n| full reads of every claim | {} |\n| most claims waiting at once | {} |\n",
        p.passes, p.failed_passes, p.pass_seconds, p.bucket_passes, p.object_store_seconds, per(p.object_store_seconds, p.bucket_passes), p.database_passes, p.database_seconds, per(p.database_seconds, p.database_passes), p.status_writes, p.status_write_seconds, p.full_scans, p.max_queue
    ));
    md.push_str(&format!(
        "\nMeasured alone before the rollout: one Garage admin-API call {:.1} ms; one PostgreSQL database and its role created in {:.0} ms, taking {:.1} MiB of disk.\n",
        probe.garage_admin_call_ms, probe.postgres_database_ms, probe.postgres_database_mib
    ));
    if let (Some(accepted), Some(ns), Some(ready)) = (
        probe.alone_accepted_s,
        probe.alone_namespace_s,
        probe.alone_ready_s,
    ) {
        md.push_str(&format!(
            "\nOne more commune rolled out alone once the rollout was done and the control plane was quiet (no write for a second, {:.0} s after the last tenant was Ready): the control plane accepted it {accepted:.2} s after the request, its namespace existed and its objects were asked for after {ns:.2} s, and every object was Ready after {ready:.2} s.\n",
            probe.quiet_after_s.unwrap_or(0.0)
        ));
    }
    md.push_str(&writes_section(proposals));
    let mut by_count: Vec<(&String, &u64)> = requests.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let total: u64 = requests.values().sum();
    md.push_str(&format!(
        "\nRequests the Kubernetes API (the simulator) answered: {total} in all; the most frequent:\n\n| request | count |\n|---|---|\n"
    ));
    for (k, v) in by_count.iter().take(12) {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    md.push_str(&reconciles_section(reconciles, tenants));
    if !errors.is_empty() {
        md.push_str(&format!(
            "\n{} tenant(s) failed to roll out; the first: `{}`\n",
            errors.len(),
            errors[0]
        ));
    }
    if !not_ready.is_empty() {
        md.push_str(&format!(
            "\n{} object(s) were not Ready at the end; the first:\n\n",
            not_ready.len()
        ));
        for n in not_ready.iter().take(10) {
            md.push_str(&format!("- {n}\n"));
        }
    }
    md.push_str("\n![latency](latency.svg)\n\n![progress](throughput.svg)\n\n![memory](memory.svg)\n\nRaw figures: `figures.json`.\n");
    std::fs::write(out.join("report.md"), md)?;
    Ok(())
}

/// How often each of the operator's controllers reconciled, in all and per tenant.
fn reconciles_section(reconciles: &BTreeMap<String, u64>, tenants: usize) -> String {
    let total: u64 = reconciles.values().sum();
    let mut md = format!(
        "\nReconciles the operator ran: {total} in all; by controller:\n\n| controller | reconciles | per tenant |\n|---|---|---|\n"
    );
    for (k, v) in reconciles {
        md.push_str(&format!(
            "| {k} | {v} | {:.1} |\n",
            *v as f64 / tenants.max(1) as f64
        ));
    }
    md
}

/// What the control plane committed, by what the requests did.
pub(super) fn writes_section(p: &ndc_server::ProposalStats) -> String {
    let total: u64 = p.requests.values().sum();
    let mut md = format!(
        "\nThe control plane committed {} log entries carrying {total} requests (requests arriving together share an entry); by what they did:\n\n| request | count |\n|---|---|\n",
        p.entries
    );
    let mut rows: Vec<(&String, &u64)> = p.requests.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (k, v) in rows {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    md
}

/// The tenants of the full rollout (`--scale 1.0`).
pub(super) fn tenants_at_full_scale() -> usize {
    tenants(1.0).len()
}

/// Where the CPU went, and what the full rollout would need at that pace.
pub(super) fn cpu_section(cpu: &CpuUse, tenants: usize, full: usize) -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let share = |s: f64| {
        if cpu.machine_total_s > 0.0 {
            100.0 * s / cpu.machine_total_s
        } else {
            0.0
        }
    };
    let mut md = format!(
        "\n## CPU\n\nFrom the first request to the last tenant Ready, the machine's {cores} cores were busy {:.0} s of {:.0} s ({:.0} %). By process (threads and workers of one name summed; read from /proc every second; a process that ended is counted in its parent, which waited for it):\n\n| process | CPU seconds | share of the machine's time |\n|---|---|---|\n",
        cpu.machine_busy_s,
        cpu.machine_total_s,
        share(cpu.machine_busy_s)
    );
    let mut rows: Vec<(&String, &f64)> =
        cpu.by_process.iter().filter(|(_, s)| **s >= 0.05).collect();
    rows.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
    for (name, secs) in &rows {
        md.push_str(&format!(
            "| {name} | {secs:.1} | {:.0} % |\n",
            share(**secs)
        ));
    }
    let ours: f64 = cpu.by_process.values().sum();
    if tenants > 0 && ours > 0.0 {
        let need = ours / tenants as f64 * full as f64;
        let budget = 300.0 * cores as f64;
        md.push_str(&format!(
            "\nThese processes used {:.2} CPU seconds per tenant. At that cost the full rollout ({full} tenants) needs about {need:.0} CPU seconds; 5 minutes on {cores} cores are {budget:.0}.\n",
            ours / tenants as f64
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reconciles_section_counts_per_tenant() {
        let md = reconciles_section(
            &BTreeMap::from([
                ("claims".to_string(), 30),
                ("subscriptions".to_string(), 45),
            ]),
            10,
        );
        assert!(md.contains("75 in all"), "{md}");
        assert!(md.contains("| subscriptions | 45 | 4.5 |"), "{md}");
        assert!(md.contains("| claims | 30 | 3.0 |"), "{md}");
    }

    #[test]
    fn the_writes_section_lists_requests_most_first() {
        let p = ndc_server::ProposalStats {
            entries: 7,
            requests: BTreeMap::from([
                ("claim.status".to_string(), 3),
                ("service.register".to_string(), 9),
            ]),
        };
        let md = writes_section(&p);
        assert!(md.contains("7 log entries carrying 12 requests"), "{md}");
        assert!(
            md.find("| service.register | 9 |").unwrap() < md.find("| claim.status | 3 |").unwrap()
        );
    }

    #[test]
    fn the_cpu_section_projects_the_full_rollout() {
        let cpu = CpuUse {
            by_process: BTreeMap::from([
                ("garage".to_string(), 30.0),
                ("postgres".to_string(), 10.0),
                ("gone".to_string(), 0.01),
            ]),
            machine_busy_s: 45.0,
            machine_total_s: 100.0,
        };
        let md = cpu_section(&cpu, 100, 1000);
        assert!(md.contains("busy 45 s of 100 s (45 %)"), "{md}");
        assert!(md.contains("| garage | 30.0 | 30 % |"), "{md}");
        assert!(!md.contains("| gone |"), "{md}");
        // 40.01 s over 100 tenants, times 1000.
        assert!(md.contains("0.40 CPU seconds per tenant"), "{md}");
        assert!(md.contains("needs about 400 CPU seconds"), "{md}");
        assert!(md.find("| garage").unwrap() < md.find("| postgres").unwrap());
    }
}
