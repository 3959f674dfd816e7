//! A tiny run of `ndc-bench scale`: it completes and writes a well-formed
//! report, its figures and its charts. It asserts no timing: figures
//! belong to real benchmark runs.

use std::process::Command;

#[test]
fn scale_benchmark_smoke() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("report");
    let run = Command::new(env!("CARGO_BIN_EXE_ndc-bench"))
        .args([
            "scale",
            "--scale",
            "0.001",
            "--list-calls",
            "3",
            "--watch-writes",
            "10",
            "--out",
        ])
        .arg(&out)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .output()
        .expect("run ndc-bench");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "ndc-bench scale failed:\n{stderr}");

    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md written");
    for heading in [
        "# Scale benchmark",
        "## Building the state",
        "## Memory and disk",
        "## Snapshot",
        "## List and watch latency at this size",
        "## Goals",
    ] {
        assert!(md.contains(heading), "no {heading:?} in:\n{md}");
    }
    // Every table row has as many cells as its header.
    let mut columns = None;
    for line in md.lines() {
        if !line.starts_with('|') {
            columns = None;
            continue;
        }
        let n = line.matches('|').count();
        match columns {
            None => columns = Some(n),
            Some(c) => assert_eq!(n, c, "ragged table row: {line}"),
        }
    }
    for row in [
        "| tenants | 100 |",
        "| claims | 1,000 |",
        "| list tenants: all | 100 |",
        "| list claims: all, in pages of 10,000 | 1,0",
        "| list claims: all, in one answer | 1,0",
    ] {
        assert!(md.contains(row), "no row {row:?} in:\n{md}");
    }
    for svg in ["writes.svg", "memory.svg", "cpu.svg"] {
        assert!(md.contains(&format!("]({svg})")), "{svg} not linked");
        let s = std::fs::read_to_string(out.join(svg)).expect("chart written");
        assert!(s.starts_with("<svg"), "{svg}");
        assert!(s.trim_end().ends_with("</svg>"), "{svg}");
        assert!(s.contains("<polyline"), "{svg} draws no line");
    }

    let f: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("figures.json")).expect("figures.json"))
            .expect("valid json");
    assert_eq!(f["tenants"], 100);
    assert_eq!(f["claims"], 1000);
    let (b, i) = (&f["build"], &f["install"]);
    assert_eq!(b["creates"][0]["creates"]["ops"], 100);
    assert_eq!(b["creates"][1]["creates"]["ops"], 1000);
    assert_eq!(b["creates"][1]["creates"]["errors"], 0);
    assert_eq!(b["watch_delivery"]["ops"], 10);
    assert_eq!(b["lists"].as_array().map(Vec::len), Some(5));
    assert!(b["mem_after_build"]["rss_bytes"].as_u64().unwrap_or(0) > 0);
    assert!(!b["samples"].as_array().expect("samples").is_empty());
    assert!(i["snapshot_bytes"].as_u64().unwrap_or(0) > 0);
    assert_eq!(i["learner_tenants"], 100);
    assert!(i["idle_mem"]["rss_bytes"].as_u64().unwrap_or(0) > 0);
    assert!(!i["samples"].as_array().expect("samples").is_empty());
}
