//! A tiny run of `ndc-bench store`: it completes and prints a well-formed
//! table. It asserts no timing: figures belong to real benchmark runs.

use std::process::Command;

#[test]
fn store_benchmark_smoke() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("store.json");
    let out = Command::new(env!("CARGO_BIN_EXE_ndc-bench"))
        .args(["store", "--puts", "128", "--gets", "128", "--json"])
        .arg(&json)
        .output()
        .expect("run ndc-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ndc-bench failed:\n{stdout}\n{stderr}"
    );
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 5, "a header and four cases:\n{stdout}");
    for case in [
        "put, 1 client",
        "put, 16 clients",
        "put, 64 clients",
        "linearizable get, 64 clients",
    ] {
        let row = rows
            .iter()
            .find(|r| r.contains(case))
            .unwrap_or_else(|| panic!("no row for {case}:\n{stdout}"));
        assert_eq!(row.matches('|').count(), 9, "{row}");
        assert!(!row.contains("| - |"), "etcd figures missing: {row}");
    }
    let parsed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("valid json");
    let rows = parsed.as_array().expect("array of rows");
    assert_eq!(rows.len(), 4);
    for r in rows {
        assert_eq!(r["ndc"]["ops"], 128, "{r}");
        assert_eq!(r["etcd"]["ops"], 128, "{r}");
        assert_eq!(r["ndc"]["errors"], 0);
    }
}
