//! The `ndc` CLI over tenants and the audit chain, end to end.

mod support;

use anyhow::{ensure, Context, Result};
use support::tenancy::*;
use support::*;

/// Every accepted change is an audit record; `ndc audit verify` passes on a
/// real history and finds a record altered directly in RocksDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_chain_detects_tampering() -> Result<()> {
    let mut c = national(1).await?;
    let addr = c.addr(1);
    let eps = ["--endpoints", addr.as_str(), "--token", OPERATOR];
    // A reorganisation through the CLI, with its decision.
    let (code, out, err) = ndc(&[
        &eps[..],
        &[
            "tenant",
            "rename",
            "ba-dinh",
            "phuong-ba-dinh",
            "--decision",
            "NQ 1656/NQ-UBTVQH15",
            "--yes",
        ],
    ]
    .concat())?;
    ensure!(
        code == 0 && out.contains("rename ba-dinh to phuong-ba-dinh"),
        "{code} {out} {err}"
    );
    let (code, out, _) = ndc(&[&eps[..], &["tenant", "get", "ba-dinh"]].concat())?;
    ensure!(
        code == 0 && out.contains("phuong-ba-dinh"),
        "the old id resolves: {out}"
    );

    let (code, out, err) = ndc(&[&eps[..], &["audit", "verify"]].concat())?;
    ensure!(
        code == 0 && out.contains("audit chain intact: 6 record(s)"),
        "{code} {out} {err}"
    );
    let (code, out, _) = ndc(&[
        "--endpoints",
        &addr,
        "--token",
        AUDITOR,
        "audit",
        "list",
        "--action",
        "tenant.rename",
    ])?;
    ensure!(
        code == 0 && out.contains("NQ 1656/NQ-UBTVQH15") && out.contains("operator"),
        "{out}"
    );
    let (code, _, err) = ndc(&[
        "--endpoints",
        &addr,
        "--token",
        HANOI_ADMIN,
        "audit",
        "list",
    ])?;
    ensure!(
        code == 1 && err.contains("auditor"),
        "tenant-admins do not read the audit log: {err}"
    );

    // Alter record 3 in RocksDB while the node is down.
    let data = c.data_dir(1);
    ensure!(c.terminate(1)?.success());
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(false);
        let cfs = rocksdb::DB::list_cf(&opts, data.join("db"))?;
        let db = rocksdb::DB::open_cf(&opts, data.join("db"), cfs)?;
        let kv = db.cf_handle("kv").context("kv family")?;
        let key = ndc_store::keys::audit_key(3);
        let raw = db.get_cf(kv, key.as_bytes())?.context("record 3")?;
        let mut obj: ndc_store::StoredObject = ndc_store::decode("object", &raw)?;
        let mut rec: serde_json::Value = serde_json::from_slice(&obj.value)?;
        rec["actor"] = serde_json::Value::String("someone-else".into());
        obj.value = serde_json::to_vec(&rec)?;
        db.put_cf(kv, key.as_bytes(), ndc_store::encode("object", &obj)?)?;
    }
    c.start(1, &addr, Start::Bare).await?;
    let (code, out, err) = ndc(&[&eps[..], &["audit", "verify"]].concat())?;
    ensure!(
        code == 1 && err.contains("broken at record 3") && err.contains("altered"),
        "{code} {out} {err}"
    );
    Ok(())
}

/// The CLI end to end: apply a file, list, draw the tree, merge with a new
/// target, and see old ids resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_the_hierarchy() -> Result<()> {
    let c = national(1).await?;
    let addr = c.addr(1);
    let eps = ["--endpoints", addr.as_str(), "--token", OPERATOR];
    let dir = tempfile::tempdir()?;
    let f = dir.path().join("communes.yaml");
    std::fs::write(
        &f,
        "kind: Tenant\ndecision: NQ 1656/NQ-UBTVQH15\nspec:\n  id: xa-a\n  display_name: Xã A\n  level: commune\n  branch: state\n  parent: hue\n  admin_code: \"20001\"\n  security_level: 2\n  quota: { cpu_millis: 1000, buckets: 1 }\n---\nkind: Tenant\nspec:\n  id: xa-b\n  display_name: Xã B\n  level: commune\n  branch: state\n  parent: hue\n  admin_code: \"20002\"\n  security_level: 2\n  quota: { cpu_millis: 2000, buckets: 2 }\n",
    )?;
    let (code, out, err) =
        ndc(&[&eps[..], &["apply", "-f", f.to_str().context("utf-8")?]].concat())?;
    ensure!(
        code == 0 && out.contains("tenant/xa-a created") && out.contains("tenant/xa-b created"),
        "{code} {out} {err}"
    );
    let (code, out, _) = ndc(&[&eps[..], &["apply", "-f", f.to_str().context("utf-8")?]].concat())?;
    ensure!(
        code == 0 && out.contains("tenant/xa-a unchanged"),
        "apply is idempotent: {out}"
    );

    let (code, out, _) = ndc(&[
        &eps[..],
        &[
            "tenant",
            "merge",
            "xa-a",
            "xa-b",
            "--new-id",
            "xa-ab",
            "--new-name",
            "Xã A B",
            "--new-code",
            "20003",
        ],
    ]
    .concat())?;
    ensure!(
        code == 1 && out.contains("plan: merge xa-a, xa-b into xa-ab"),
        "without --yes and a terminal it only plans: {code} {out}"
    );
    let (code, out, err) = ndc(&[
        &eps[..],
        &[
            "tenant",
            "merge",
            "xa-a",
            "xa-b",
            "--new-id",
            "xa-ab",
            "--new-name",
            "Xã A B",
            "--new-code",
            "20003",
            "--yes",
        ],
    ]
    .concat())?;
    ensure!(
        code == 0 && out.contains("applied at revision"),
        "{code} {out} {err}"
    );
    let (code, out, _) = ndc(&[&eps[..], &["-o", "json", "tenant", "get", "xa-a"]].concat())?;
    let t: serde_json::Value = serde_json::from_str(&out)?;
    ensure!(
        code == 0 && t["id"] == "xa-ab" && t["quota"]["cpu_millis"] == 3000,
        "{out}"
    );
    let (code, out, _) = ndc(&[
        &eps[..],
        &["-o", "yaml", "tenant", "list", "--parent", "hue"],
    ]
    .concat())?;
    ensure!(
        code == 0
            && out.contains("id: xa-ab")
            && out.contains("id: phu-xuan")
            && !out.contains("id: xa-a\n"),
        "{out}"
    );
    let (code, out, _) = ndc(&[&eps[..], &["tenant", "tree"]].concat())?;
    ensure!(
        code == 0
            && out.contains("vn \"Đơn vị vn\"")
            && out.contains("└── ")
            && out.contains("xa-ab"),
        "{out}"
    );
    let (code, out, _) = ndc(&[&eps[..], &["tenant", "list", "--level", "commune"]].concat())?;
    ensure!(code == 0 && out.contains("3 tenant(s)"), "{out}");
    Ok(())
}
