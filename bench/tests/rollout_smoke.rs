//! A tiny national rollout: it completes and writes a well-formed report.
//! It asserts no timing: figures belong to real benchmark runs.

use std::process::Command;

#[test]
fn rollout_benchmark_smoke() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("report");
    let run = Command::new(env!("CARGO_BIN_EXE_ndc-bench"))
        .args([
            "rollout",
            "--scale",
            "0.001",
            "--timeout-secs",
            "300",
            "--out",
        ])
        .arg(&out)
        .env("NDC_LOG", "warn")
        .output()
        .expect("run ndc-bench");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "ndc-bench rollout failed:\n{stderr}");
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    for row in [
        "| total time |",
        "| tenants ready |",
        "| tenants per second |",
        "| latency p50 / p99 / max",
        "| control-plane log entries per second |",
        "| process | peak resident memory |",
        "| process | CPU seconds | share of the machine's time |",
        "CPU seconds per tenant",
        "log entries carrying",
        "| tenant.create |",
        "One more commune rolled out alone",
        "Reconciles the operator ran",
        "| subscriptions |",
    ] {
        assert!(md.contains(row), "no {row:?} in:\n{md}");
    }
    let figures: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("figures.json")).expect("figures.json"))
            .expect("valid json");
    assert_eq!(figures["tenants_not_ready"], 0, "{figures}");
    assert!(figures["tenants"].as_u64().unwrap_or(0) >= 3, "{figures}");
    // The benchmark's own process did the control plane's work: it used CPU.
    let own = figures["cpu"]["by_process"]["ndc (3 nodes, operator, simulator)"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        own > 0.0,
        "no CPU time for the benchmark's process: {figures}"
    );
    // The operator's reconciles were counted.
    let reconciles = figures["operator_reconciles"]["tenants"]
        .as_u64()
        .unwrap_or(0);
    assert!(reconciles > 0, "no tenant reconciles counted: {figures}");
    for svg in ["latency.svg", "throughput.svg", "memory.svg"] {
        let text = std::fs::read_to_string(out.join(svg)).expect(svg);
        assert!(
            text.starts_with("<svg") && text.trim_end().ends_with("</svg>"),
            "{svg}"
        );
    }
}
