//! Buckets and databases end to end: `ndc bucket|database` against real
//! `ndc server` processes that provision in a real Garage and a real
//! PostgreSQL, both started here on free ports.

mod support;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use ndc_storage::{GarageConfig, LocalGarage, LocalPostgres, PostgresConfig, S3Credentials};
use support::tenancy::*;
use support::*;

struct Backends {
    garage: LocalGarage,
    postgres: LocalPostgres,
    /// Flags for every server: the secrets key and the backends file.
    flags: Vec<String>,
    _dir: tempfile::TempDir,
}

const BACKUP_BUCKET: &str = "ndc-backups";

async fn backends() -> Result<Backends> {
    let dir = tempfile::tempdir()?;
    let garage = LocalGarage::start(&dir.path().join("garage")).await?;
    let postgres = LocalPostgres::start(&dir.path().join("postgres")).await?;
    let key = dir.path().join("secrets.key");
    ndc_server::SecretsKey::create_file(&key)?;
    let file = ndc_server::provisioner::BackendsFile {
        garage: Some(garage.config()),
        postgres: Some(postgres.config()),
        backup_bucket: Some(BACKUP_BUCKET.into()),
    };
    let path = dir.path().join("backends.yaml");
    std::fs::write(&path, serde_saphyr::to_string(&file)?)?;
    let flags = vec![
        "--secrets-key-file".into(),
        key.to_str().context("utf-8")?.into(),
        "--backends-file".into(),
        path.to_str().context("utf-8")?.into(),
    ];
    Ok(Backends {
        garage,
        postgres,
        flags,
        _dir: dir,
    })
}

/// `ndc` as a given caller; returns (exit code, stdout, stderr).
fn ndc_as(addr: &str, token: &str, args: &[&str]) -> Result<(i32, String, String)> {
    let mut all = vec!["--endpoints", addr, "--token", token];
    all.extend_from_slice(args);
    ndc(&all)
}

/// `ndc … -o json` that must succeed; its output parsed.
fn json_as(addr: &str, token: &str, args: &[&str]) -> Result<serde_json::Value> {
    let mut all = args.to_vec();
    all.extend_from_slice(&["-o", "json"]);
    let (code, out, err) = ndc_as(addr, token, &all)?;
    if code != 0 {
        bail!("ndc {args:?} exited {code}: {err}");
    }
    serde_json::from_str(&out).with_context(|| format!("parsing the output of ndc {args:?}: {out}"))
}

fn s3_creds(v: &serde_json::Value) -> Result<(S3Credentials, String, String, String)> {
    let s = |k: &str| -> Result<String> {
        Ok(v["values"][k]
            .as_str()
            .with_context(|| format!("no {k} in {v}"))?
            .to_string())
    };
    Ok((
        S3Credentials {
            access_key_id: s("access_key_id")?,
            secret_access_key: s("secret_access_key")?,
        },
        s("endpoint")?,
        s("region")?,
        s("bucket")?,
    ))
}

async fn put(c: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &str) -> Result<()> {
    c.put_object()
        .bucket(bucket)
        .key(key)
        .body(body.as_bytes().to_vec().into())
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            anyhow::anyhow!(
                "put {bucket}/{key}: {}",
                ndc_storage::s3::error_code(&e).unwrap_or("?")
            )
        })
}

async fn get(c: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<String> {
    let o = c
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "get {bucket}/{key}: {}",
                ndc_storage::s3::error_code(&e).unwrap_or("?")
            )
        })?;
    let b = o.body.collect().await?.into_bytes();
    Ok(String::from_utf8(b.to_vec())?)
}

/// The buckets ndc made, as Garage names them (the backup bucket aside).
async fn ndc_buckets(g: &GarageConfig) -> Result<Vec<String>> {
    let store = ndc_storage::GarageStore::connect(g.clone()).await?;
    Ok(store
        .bucket_names()
        .await?
        .into_iter()
        .filter(|n| n.starts_with("ndc-") && n != BACKUP_BUCKET)
        .collect())
}

#[tokio::test]
async fn buckets_are_provisioned_per_tenant_and_isolated() -> Result<()> {
    let b = backends().await?;
    let c = national_with(1, &b.flags).await?;
    let a = c.addr(1);
    let create = |token: &str, tenant: &str, name: &str, size: &str, policy: &str| {
        json_as(
            &a,
            token,
            &[
                "bucket",
                "create",
                name,
                "--tenant",
                tenant,
                "--size",
                size,
                "--deletion-policy",
                policy,
                "--wait",
            ],
        )
    };
    let archive = create(HANOI_ADMIN, "ha-noi", "archive", "1Gi", "delete")?;
    assert_eq!(archive["status"]["phase"], "Ready", "{archive}");
    let scans = create(HUE_ADMIN, "hue", "scans", "1Gi", "retain")?;
    assert_eq!(scans["status"]["phase"], "Ready", "{scans}");

    // Each tenant's key works in its bucket and nowhere else.
    let hn = json_as(
        &a,
        HANOI_ADMIN,
        &["bucket", "credentials", "archive", "--tenant", "ha-noi"],
    )?;
    let (hn_key, endpoint, region, hn_bucket) = s3_creds(&hn)?;
    let hue = json_as(
        &a,
        HUE_ADMIN,
        &["bucket", "credentials", "scans", "--tenant", "hue"],
    )?;
    let (hue_key, _, _, hue_bucket) = s3_creds(&hue)?;
    let hn_s3 = ndc_storage::s3::client(&endpoint, &region, &hn_key);
    let hue_s3 = ndc_storage::s3::client(&endpoint, &region, &hue_key);
    put(&hn_s3, &hn_bucket, "cong-van/2026/001.pdf", "công văn số 1").await?;
    assert_eq!(
        get(&hn_s3, &hn_bucket, "cong-van/2026/001.pdf").await?,
        "công văn số 1"
    );
    let listed = hn_s3.list_objects_v2().bucket(&hn_bucket).send().await?;
    assert_eq!(listed.contents().len(), 1);
    let refused = get(&hue_s3, &hn_bucket, "cong-van/2026/001.pdf").await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("AccessDenied")),
        "{refused:?}"
    );
    assert!(put(&hue_s3, &hn_bucket, "x", "y").await.is_err());
    assert!(put(&hn_s3, &hue_bucket, "x", "y").await.is_err());

    // Only the tenant's admins (and the operator) see its credentials.
    let (code, _, err) = ndc_as(
        &a,
        HUE_ADMIN,
        &["bucket", "credentials", "archive", "--tenant", "ha-noi"],
    )?;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("may not"), "{err}");

    // Over quota: refused with the reason, nothing created.
    let before = ndc_buckets(&b.garage.config()).await?;
    assert_eq!(before.len(), 2, "{before:?}");
    let (code, _, err) = ndc_as(
        &a,
        HANOI_ADMIN,
        &[
            "bucket", "create", "huge", "--tenant", "ba-dinh", "--size", "10Ti", "--wait",
        ],
    )?;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("storage"), "{err}");
    let list = json_as(&a, OPERATOR, &["bucket", "list"])?;
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    assert_eq!(ndc_buckets(&b.garage.config()).await?, before);
    // Listed by tenant: its own claims, or its subtree's; a tenant admin
    // sees only its own tenants.
    let names = |args: &[&str], token: &str| -> Result<Vec<String>> {
        let l = json_as(&a, token, &[&["bucket", "list"], args].concat())?;
        let mut n: Vec<String> = l
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(|c| c["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        n.sort();
        Ok(n)
    };
    assert_eq!(names(&["--tenant", "hue"], OPERATOR)?, ["scans"]);
    assert_eq!(names(&["--tenant", "ha-noi"], OPERATOR)?, ["archive"]);
    assert!(names(&["--tenant", "ba-dinh"], OPERATOR)?.is_empty());
    assert_eq!(names(&["--tenant", "vn"], OPERATOR)?, Vec::<String>::new());
    assert_eq!(
        names(&["--tenant", "vn", "--subtree"], OPERATOR)?,
        ["archive", "scans"]
    );
    assert_eq!(names(&[], HUE_ADMIN)?, ["scans"]);
    let (code, _, err) = ndc_as(&a, HUE_ADMIN, &["bucket", "list", "--tenant", "ha-noi"])?;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("may not"), "{err}");
    // Page by page: one claim a page, each once, in uid order, whether
    // every claim is read or only a subtree's.
    let mut claims = ndc_api::claims::claims_client::ClaimsClient::with_interceptor(
        ndc_api::client::channel(&a)?,
        ndc_api::client::Auth::new(Some(OPERATOR))?,
    );
    for tenant in ["", "vn"] {
        let (mut seen, mut start_after, mut pages) = (Vec::new(), String::new(), 0);
        loop {
            let r = claims
                .list(ndc_api::claims::ListClaimsRequest {
                    tenant: tenant.into(),
                    subtree: !tenant.is_empty(),
                    kind: "bucket".into(),
                    limit: 1,
                    start_after,
                })
                .await?
                .into_inner();
            pages += 1;
            assert!(r.claims.len() <= 1, "{r:?}");
            seen.extend(r.claims.iter().map(|c| c.uid.clone()));
            if r.next_after.is_empty() {
                break;
            }
            start_after = r.next_after;
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(seen, sorted, "pages of {tenant:?} out of order or repeated");
        assert_eq!((seen.len(), pages), (2, 2), "pages of {tenant:?}");
    }

    // A new key works at once; the old one stops.
    let rotated = json_as(
        &a,
        HANOI_ADMIN,
        &[
            "bucket",
            "rotate-key",
            "archive",
            "--tenant",
            "ha-noi",
            "--wait",
        ],
    )?;
    assert_eq!(rotated["credentials_generation"], 2, "{rotated}");
    let hn2 = json_as(
        &a,
        HANOI_ADMIN,
        &["bucket", "credentials", "archive", "--tenant", "ha-noi"],
    )?;
    let (hn_key2, ..) = s3_creds(&hn2)?;
    assert_ne!(hn_key2.access_key_id, hn_key.access_key_id);
    let hn2_s3 = ndc_storage::s3::client(&endpoint, &region, &hn_key2);
    assert_eq!(
        get(&hn2_s3, &hn_bucket, "cong-van/2026/001.pdf").await?,
        "công văn số 1"
    );
    assert!(get(&hn_s3, &hn_bucket, "cong-van/2026/001.pdf")
        .await
        .is_err());

    // Delete policy, non-empty: refused without --purge, and the bucket stays.
    let (code, _, err) = ndc_as(
        &a,
        HANOI_ADMIN,
        &["bucket", "delete", "archive", "--tenant", "ha-noi"],
    )?;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--purge"), "{err}");
    assert_eq!(
        get(&hn2_s3, &hn_bucket, "cong-van/2026/001.pdf").await?,
        "công văn số 1"
    );
    let (code, out, err) = ndc_as(
        &a,
        HANOI_ADMIN,
        &[
            "bucket", "delete", "archive", "--tenant", "ha-noi", "--purge", "--wait",
        ],
    )?;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        ndc_buckets(&b.garage.config()).await?,
        vec![hue_bucket.clone()]
    );

    // Retain policy: the claim goes, the bucket and its data stay.
    put(&hue_s3, &hue_bucket, "ho-so/1.txt", "hồ sơ").await?;
    let (code, out, err) = ndc_as(
        &a,
        HUE_ADMIN,
        &["bucket", "delete", "scans", "--tenant", "hue", "--wait"],
    )?;
    assert_eq!(code, 0, "{out}{err}");
    let list = json_as(&a, OPERATOR, &["bucket", "list"])?;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    assert_eq!(get(&hue_s3, &hue_bucket, "ho-so/1.txt").await?, "hồ sơ");

    // Quota is released under both policies.
    for tenant in ["ha-noi", "hue"] {
        let t = json_as(&a, OPERATOR, &["tenant", "get", tenant])?;
        assert_eq!(t["used"]["buckets"], 0, "{t}");
        assert_eq!(t["used"]["storage_bytes"], 0, "{t}");
    }
    Ok(())
}

async fn pg_connect(
    cfg: &PostgresConfig,
    db: &str,
    user: &str,
    password: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host(&cfg.host)
        .port(cfg.port)
        .dbname(db)
        .user(user)
        .password(password)
        .connect_timeout(Duration::from_secs(10))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

fn pg_creds(v: &serde_json::Value) -> Result<(String, String, String)> {
    let s = |k: &str| -> Result<String> {
        Ok(v["values"][k]
            .as_str()
            .with_context(|| format!("no {k} in {v}"))?
            .to_string())
    };
    Ok((s("database")?, s("user")?, s("password")?))
}

async fn database_exists(cfg: &PostgresConfig, name: &str) -> Result<bool> {
    let admin = pg_connect(
        cfg,
        "postgres",
        &cfg.admin_user,
        cfg.admin_password.as_deref().unwrap_or_default(),
    )
    .await?;
    let rows = admin
        .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?;
    Ok(!rows.is_empty())
}

#[tokio::test]
async fn databases_admit_only_their_own_role_and_are_dumped_before_they_go() -> Result<()> {
    let b = backends().await?;
    let c = national_with(1, &b.flags).await?;
    let a = c.addr(1);
    let pg = b.postgres.config();
    for (token, tenant, policy) in [
        (HANOI_ADMIN, "ha-noi", "delete"),
        (HUE_ADMIN, "hue", "retain"),
    ] {
        let d = json_as(
            &a,
            token,
            &[
                "database",
                "create",
                "records",
                "--tenant",
                tenant,
                "--size",
                "2Gi",
                "--connection-limit",
                "20",
                "--deletion-policy",
                policy,
                "--wait",
            ],
        )?;
        assert_eq!(d["status"]["phase"], "Ready", "{d}");
    }
    let (hn_db, hn_user, hn_pw) = pg_creds(&json_as(
        &a,
        HANOI_ADMIN,
        &["database", "credentials", "records", "--tenant", "ha-noi"],
    )?)?;
    let (hue_db, hue_user, hue_pw) = pg_creds(&json_as(
        &a,
        HUE_ADMIN,
        &["database", "credentials", "records", "--tenant", "hue"],
    )?)?;

    // The role connects and creates a table in its database.
    let hn = pg_connect(&pg, &hn_db, &hn_user, &hn_pw).await?;
    hn.batch_execute(
        "CREATE TABLE ho_so (id int PRIMARY KEY, tieu_de text); INSERT INTO ho_so VALUES (1, 'Hồ sơ đất đai');",
    )
    .await?;
    // Another tenant's role cannot connect to it.
    let err = pg_connect(&pg, &hn_db, &hue_user, &hue_pw)
        .await
        .err()
        .context("hue's role connected to ha-noi's database")?;
    let why = err.as_db_error().map(|d| d.message().to_string());
    assert!(
        why.as_deref()
            .is_some_and(|m| m.contains("permission denied")),
        "{err:?}"
    );
    assert!(pg_connect(&pg, &hue_db, &hue_user, &hue_pw).await.is_ok());

    // A new password works; the old one no longer does.
    json_as(
        &a,
        HANOI_ADMIN,
        &[
            "database",
            "rotate-password",
            "records",
            "--tenant",
            "ha-noi",
            "--wait",
        ],
    )?;
    let (_, _, hn_pw2) = pg_creds(&json_as(
        &a,
        HANOI_ADMIN,
        &["database", "credentials", "records", "--tenant", "ha-noi"],
    )?)?;
    assert_ne!(hn_pw2, hn_pw);
    assert!(pg_connect(&pg, &hn_db, &hn_user, &hn_pw).await.is_err());
    drop(hn);
    let hn = pg_connect(&pg, &hn_db, &hn_user, &hn_pw2).await?;
    let n: i64 = hn
        .query_one("SELECT count(*) FROM ho_so", &[])
        .await?
        .get(0);
    assert_eq!(n, 1);
    drop(hn);

    // Delete policy: a final dump is stored, then the database goes.
    let (code, out, err) = ndc_as(
        &a,
        HANOI_ADMIN,
        &[
            "database", "delete", "records", "--tenant", "ha-noi", "--wait",
        ],
    )?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(!database_exists(&pg, &hn_db).await?);
    let audit = json_as(&a, OPERATOR, &["audit", "list"])?;
    let outcome = audit
        .as_array()
        .and_then(|r| r.iter().rev().find(|r| r["action"] == "database.deleted"))
        .with_context(|| format!("no database.deleted record in {audit}"))?;
    let target = outcome["target"].as_str().unwrap_or_default();
    let location = target
        .split("final dump at s3://")
        .nth(1)
        .with_context(|| format!("no dump location in {target}"))?;
    let (bucket, key) = location.split_once('/').context("bucket/key")?;
    let store = ndc_storage::GarageStore::connect(b.garage.config()).await?;
    let dump = get(store.system_s3_client(), bucket, key).await?;
    assert!(
        dump.contains("ho_so") && dump.contains("Hồ sơ đất đai"),
        "{dump}"
    );

    // Retain policy: the claim goes, the database stays.
    let (code, out, err) = ndc_as(
        &a,
        HUE_ADMIN,
        &["database", "delete", "records", "--tenant", "hue", "--wait"],
    )?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(database_exists(&pg, &hue_db).await?);
    assert!(pg_connect(&pg, &hue_db, &hue_user, &hue_pw).await.is_ok());
    Ok(())
}

#[tokio::test]
async fn a_leader_killed_while_provisioning_leaves_exactly_one_resource_per_claim() -> Result<()> {
    let b = backends().await?;
    let mut c = national_with(3, &b.flags).await?;
    let leader = c.leader().await?;
    let a = c.addr(leader);
    let mut claims = Vec::new();
    for (tenant, token) in [
        ("ha-noi", HANOI_ADMIN),
        ("hue", HUE_ADMIN),
        ("ba-dinh", HANOI_ADMIN),
    ] {
        for i in 0..3 {
            let name = format!("kho-{i}");
            let (code, _, err) = ndc_as(
                &a,
                token,
                &[
                    "bucket", "create", &name, "--tenant", tenant, "--size", "1Gi",
                ],
            )?;
            assert_eq!(code, 0, "{err}");
            claims.push(("bucket", tenant, name));
        }
        let (code, _, err) = ndc_as(
            &a,
            token,
            &[
                "database", "create", "so-lieu", "--tenant", tenant, "--size", "1Gi",
            ],
        )?;
        assert_eq!(code, 0, "{err}");
        claims.push(("database", tenant, "so-lieu".to_string()));
    }
    // The leader dies in the middle of provisioning them.
    let mut pending = 0;
    for kind in ["bucket", "database"] {
        let l = json_as(&a, OPERATOR, &[kind, "list"])?;
        pending += l
            .as_array()
            .map(|l| l.iter().filter(|c| c["status"]["phase"] != "Ready").count())
            .unwrap_or(0);
    }
    c.kill9(leader)?;
    eprintln!(
        "killed the leader with {pending} of {} claims not ready",
        claims.len()
    );
    // Otherwise this tested nothing about failover.
    assert!(
        pending > 0,
        "every claim was ready before the leader was killed"
    );
    let new_leader = c.leader_other_than(Some(leader)).await?;
    let a = c.addr(new_leader);
    let endpoints = c.endpoints().join(",");
    // Every claim converges on the survivors.
    for (kind, tenant, name) in &claims {
        let v = json_as(
            &endpoints,
            OPERATOR,
            &[kind, "get", name, "--tenant", tenant],
        )?;
        let uid = v["uid"].as_str().context("uid")?.to_string();
        let (code, out, err) = ndc_as(&a, OPERATOR, &[kind, "get", "--uid", &uid])?;
        assert_eq!(code, 0, "{out}{err}");
        let done = wait_for(&format!("{kind} {name} of {tenant} to be ready"), || {
            let a = a.clone();
            let uid = uid.clone();
            async move {
                let v = json_as(&a, OPERATOR, &[kind, "get", "--uid", &uid]).ok()?;
                (v["status"]["phase"] == "Ready").then_some(v)
            }
        })
        .await?;
        assert_eq!(done["status"]["observed_generation"], 1);
    }
    // Exactly one bucket per bucket claim, one database per database claim.
    let buckets = ndc_buckets(&b.garage.config()).await?;
    assert_eq!(buckets.len(), 9, "{buckets:?}");
    let pg = b.postgres.config();
    let admin = pg_connect(
        &pg,
        "postgres",
        &pg.admin_user,
        pg.admin_password.as_deref().unwrap_or_default(),
    )
    .await?;
    let dbs: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'ndc\\_%'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(dbs, 3);
    Ok(())
}
