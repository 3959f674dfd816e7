//! Conformance suites: what every driver must do, checked against a real
//! server with real clients (aws-sdk-s3 with tenants' keys, tokio-postgres
//! with tenants' roles). Each suite makes its own names from a random
//! prefix, cleans up after itself when it passes, and returns the first
//! broken expectation as an error message.

use aws_sdk_s3::primitives::ByteStream;
use tokio_postgres::error::SqlState;

use ndc_storage::{
    generate_password, generate_s3_credentials, postgres, random_hex, s3, BucketRequest,
    DatabaseRequest, DatabaseStore, Error, ObjectStore, S3Credentials,
};

type Outcome = Result<(), String>;

macro_rules! expect {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// `r`, or an error message saying what failed.
fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn bucket(name: &str, size_quota_bytes: u64) -> BucketRequest {
    BucketRequest {
        name: name.to_string(),
        size_quota_bytes,
        versioning: false,
        retention_days: None,
    }
}

/// Runs the object-store suite against `store`.
pub async fn object_store(store: &dyn ObjectStore) -> Outcome {
    let prefix = format!("ndc-conf-{}", ok("random", random_hex(4))?);
    let a = format!("{prefix}-a");
    let b = format!("{prefix}-b");
    let q = format!("{prefix}-q");
    let features = store.features();
    let endpoint = store.endpoint();
    let region = store.region();
    let tenant = |creds: &S3Credentials| s3::client(&endpoint, &region, creds);

    // What the store cannot do is refused up front, and nothing is left behind.
    if !features.versioning {
        let req = BucketRequest {
            versioning: true,
            ..bucket(&a, 0)
        };
        let r = store.ensure_bucket(&req).await;
        expect!(
            matches!(r, Err(Error::Unsupported { .. })),
            "ensure_bucket with versioning on {} (no versioning) gave {r:?}, not Unsupported",
            store.product()
        );
    }
    if !features.object_lock {
        let req = BucketRequest {
            retention_days: Some(7),
            ..bucket(&a, 0)
        };
        let r = store.ensure_bucket(&req).await;
        expect!(
            matches!(r, Err(Error::Unsupported { .. })),
            "ensure_bucket with retention on {} (no object lock) gave {r:?}, not Unsupported",
            store.product()
        );
    }
    expect!(
        !ok("bucket_exists", store.bucket_exists(&a).await)?,
        "a refused ensure_bucket left bucket {a} behind"
    );

    // Buckets and keys; doing it twice changes nothing.
    ok("ensure_bucket a", store.ensure_bucket(&bucket(&a, 0)).await)?;
    ok("ensure_bucket b", store.ensure_bucket(&bucket(&b, 0)).await)?;
    expect!(
        ok("bucket_exists a", store.bucket_exists(&a).await)?,
        "bucket {a} missing after ensure_bucket"
    );
    let creds_a = ok("credentials", generate_s3_credentials())?;
    let creds_b = ok("credentials", generate_s3_credentials())?;
    ok(
        "ensure_key a",
        store.ensure_key(&a, "tenant-a", &creds_a).await,
    )?;
    ok(
        "ensure_key a again",
        store.ensure_key(&a, "tenant-a", &creds_a).await,
    )?;
    ok(
        "ensure_key b",
        store.ensure_key(&b, "tenant-b", &creds_b).await,
    )?;
    let client_a = tenant(&creds_a);
    let client_b = tenant(&creds_b);

    // The tenant's key reads, writes and lists its bucket.
    let body = b"hello from tenant a".to_vec();
    let put = client_a
        .put_object()
        .bucket(&a)
        .key("docs/hello.txt")
        .body(ByteStream::from(body.clone()))
        .send()
        .await;
    ok(
        "tenant a puts into its bucket",
        put.map_err(aws_sdk_s3::error::DisplayErrorContext),
    )?;
    expect!(
        read(&client_a, &a, "docs/hello.txt").await? == body,
        "tenant a read back other bytes than it wrote"
    );
    let keys = list(&client_a, &a).await?;
    expect!(
        keys == ["docs/hello.txt"],
        "tenant a lists {keys:?} in its bucket"
    );
    // ensure_bucket again keeps the bucket and what is in it.
    ok(
        "ensure_bucket a again",
        store.ensure_bucket(&bucket(&a, 0)).await,
    )?;
    expect!(
        read(&client_a, &a, "docs/hello.txt").await? == body,
        "a second ensure_bucket lost the bucket's objects"
    );

    // Another tenant's key is refused, both ways; no key creates buckets.
    refused(&client_b, &a, "tenant b on bucket a").await?;
    refused(&client_a, &b, "tenant a on bucket b").await?;
    let rogue = format!("{prefix}-rogue");
    let created = client_a.create_bucket().bucket(&rogue).send().await;
    expect!(created.is_err(), "tenant a could create bucket {rogue}");
    expect!(
        !ok("bucket_exists", store.bucket_exists(&rogue).await)?,
        "bucket {rogue} exists after a refused CreateBucket"
    );

    // Tenants do not own their buckets: deleting one goes through the
    // control plane (tried on the empty bucket b).
    let deleted = client_b.delete_bucket().bucket(&b).send().await;
    expect!(
        deleted.is_err(),
        "tenant b could delete its bucket {b} itself"
    );
    expect!(
        ok("bucket_exists b", store.bucket_exists(&b).await)?,
        "bucket {b} gone after the tenant's refused DeleteBucket"
    );

    // Emptiness, and delete refused while not empty.
    expect!(
        !ok("is_empty a", store.is_empty(&a).await)?,
        "is_empty({a}) is true after a put"
    );
    expect!(
        ok("is_empty b", store.is_empty(&b).await)?,
        "is_empty({b}) is false, nothing was put"
    );
    let r = store.delete_bucket(&a, false).await;
    expect!(
        matches!(r, Err(Error::NotEmpty { .. })),
        "delete_bucket({a}, purge=false) on a non-empty bucket gave {r:?}, not NotEmpty"
    );
    expect!(
        ok("bucket_exists a", store.bucket_exists(&a).await)?,
        "bucket {a} gone after a refused delete"
    );
    expect!(
        read(&client_a, &a, "docs/hello.txt").await? == body,
        "a refused delete lost objects"
    );

    // The store's own writes (final backups).
    ok(
        "put_object",
        store
            .put_object(&a, "backups/final.sql", b"-- dump".to_vec())
            .await,
    )?;
    expect!(
        ok(
            "object_exists",
            store.object_exists(&a, "backups/final.sql").await
        )?,
        "object_exists is false for an object just written"
    );
    expect!(
        !ok(
            "object_exists",
            store.object_exists(&a, "backups/none.sql").await
        )?,
        "object_exists is true for an object never written"
    );

    // A key moved to another bucket loses the first one.
    ok(
        "ensure_key a on b",
        store.ensure_key(&b, "tenant-a", &creds_a).await,
    )?;
    refused(
        &client_a,
        &a,
        "tenant a on bucket a after its key moved to b",
    )
    .await?;
    let listed = client_a.list_objects_v2().bucket(&b).send().await;
    expect!(
        listed.is_ok(),
        "tenant a cannot list bucket b after ensure_key on b: {listed:?}"
    );
    ok(
        "ensure_key a back on a",
        store.ensure_key(&a, "tenant-a", &creds_a).await,
    )?;
    refused(
        &client_a,
        &b,
        "tenant a on bucket b after its key moved back",
    )
    .await?;
    expect!(
        read(&client_a, &a, "docs/hello.txt").await? == body,
        "tenant a cannot read its bucket after its key moved back"
    );

    // Quotas: a write over the quota is refused, one under it is not, and a
    // raised quota lets it through.
    if features.quotas {
        ok(
            "ensure_bucket q",
            store.ensure_bucket(&bucket(&q, 1000)).await,
        )?;
        let creds_q = ok("credentials", generate_s3_credentials())?;
        ok(
            "ensure_key q",
            store.ensure_key(&q, "tenant-q", &creds_q).await,
        )?;
        let client_q = tenant(&creds_q);
        let put = |key: &'static str, len: usize| {
            client_q
                .put_object()
                .bucket(&q)
                .key(key)
                .body(ByteStream::from(vec![7u8; len]))
                .send()
        };
        let small = put("small", 600).await;
        expect!(
            small.is_ok(),
            "a 600-byte put into a 1000-byte quota was refused: {small:?}"
        );
        let big = put("big", 600).await;
        expect!(
            big.is_err(),
            "a put taking the bucket to 1200 bytes passed its 1000-byte quota"
        );
        ok(
            "raise quota",
            store.ensure_bucket(&bucket(&q, 1 << 20)).await,
        )?;
        let big = put("big", 600).await;
        expect!(
            big.is_ok(),
            "a put under a raised quota was refused: {big:?}"
        );
        ok("remove quota", store.ensure_bucket(&bucket(&q, 0)).await)?;
        ok("delete_bucket q", store.delete_bucket(&q, true).await)?;
        ok(
            "remove_key q",
            store.remove_key(&creds_q.access_key_id).await,
        )?;
    }

    // A removed key is refused; removing it again is fine.
    ok(
        "remove_key a",
        store.remove_key(&creds_a.access_key_id).await,
    )?;
    refused(&client_a, &a, "tenant a after remove_key").await?;
    ok(
        "remove_key a again",
        store.remove_key(&creds_a.access_key_id).await,
    )?;

    // Purge deletes objects and bucket; deleting again is fine.
    ok(
        "delete_bucket a with purge",
        store.delete_bucket(&a, true).await,
    )?;
    expect!(
        !ok("bucket_exists a", store.bucket_exists(&a).await)?,
        "bucket {a} exists after delete_bucket"
    );
    ok("delete_bucket a again", store.delete_bucket(&a, true).await)?;
    ok(
        "delete_bucket b (empty)",
        store.delete_bucket(&b, false).await,
    )?;
    expect!(
        !ok("bucket_exists b", store.bucket_exists(&b).await)?,
        "bucket {b} exists after delete_bucket"
    );
    ok(
        "remove_key b",
        store.remove_key(&creds_b.access_key_id).await,
    )?;

    // A claim's whole pass in one call: twice changes nothing, and after a
    // rotation only the new key is left.
    let c = format!("{prefix}-c");
    let creds_c1 = ok("credentials", generate_s3_credentials())?;
    let creds_c2 = ok("credentials", generate_s3_credentials())?;
    let removed = ok(
        "ensure_bucket_with_key c",
        store
            .ensure_bucket_with_key(&bucket(&c, 1 << 20), "tenant-c", &creds_c1)
            .await,
    )?;
    expect!(
        removed.is_empty(),
        "a new bucket had keys to remove: {removed:?}"
    );
    let removed = ok(
        "ensure_bucket_with_key c again",
        store
            .ensure_bucket_with_key(&bucket(&c, 1 << 20), "tenant-c", &creds_c1)
            .await,
    )?;
    expect!(removed.is_empty(), "a repeated pass removed {removed:?}");
    let client_c1 = tenant(&creds_c1);
    let put = client_c1
        .put_object()
        .bucket(&c)
        .key("k")
        .body(ByteStream::from(b"c".to_vec()))
        .send()
        .await;
    ok(
        "tenant c puts into its bucket",
        put.map_err(aws_sdk_s3::error::DisplayErrorContext),
    )?;
    // Its key sees its bucket once, and nothing else.
    let listed = ok(
        "tenant c lists its buckets",
        client_c1
            .list_buckets()
            .send()
            .await
            .map_err(aws_sdk_s3::error::DisplayErrorContext),
    )?;
    let names: Vec<&str> = listed.buckets().iter().filter_map(|b| b.name()).collect();
    expect!(names == [c.as_str()], "tenant c's key lists {names:?}");
    // The driver holds no standing access to a tenant's bucket, yet can
    // still tell whether it is empty.
    expect!(
        !ok("object_exists c/k", store.object_exists(&c, "k").await).unwrap_or(false),
        "the driver's key reads c/k before anything asked it to"
    );
    expect!(
        !ok("is_empty c", store.is_empty(&c).await)?,
        "bucket {c} holds k but is reported empty"
    );
    expect!(
        !ok("object_exists c/k", store.object_exists(&c, "k").await).unwrap_or(false),
        "the driver's key still reads c/k after checking that it is not empty"
    );
    let removed = ok(
        "ensure_bucket_with_key c rotated",
        store
            .ensure_bucket_with_key(&bucket(&c, 1 << 20), "tenant-c", &creds_c2)
            .await,
    )?;
    expect!(
        removed == [creds_c1.access_key_id.clone()],
        "a rotation removed {removed:?}, not the earlier key"
    );
    refused(&client_c1, &c, "tenant c's earlier key after rotation").await?;
    let keys = list(&tenant(&creds_c2), &c).await?;
    expect!(
        keys == ["k"],
        "the rotated key lists {keys:?} in bucket {c}"
    );
    ok("delete_bucket c", store.delete_bucket(&c, true).await)?;
    ok(
        "remove_key c",
        store.remove_key(&creds_c2.access_key_id).await,
    )?;
    Ok(())
}

async fn read(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Vec<u8>, String> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| {
            format!(
                "GetObject {bucket}/{key}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
    let body = out
        .body
        .collect()
        .await
        .map_err(|e| format!("reading {bucket}/{key}: {e}"))?;
    Ok(body.into_bytes().to_vec())
}

async fn list(client: &aws_sdk_s3::Client, bucket: &str) -> Result<Vec<String>, String> {
    let out = client
        .list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .map_err(|e| {
            format!(
                "ListObjectsV2 {bucket}: {}",
                aws_sdk_s3::error::DisplayErrorContext(e)
            )
        })?;
    Ok(out
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect())
}

/// Checks that `client` can neither list, read nor write `bucket`, and is
/// told `AccessDenied` (or `InvalidAccessKeyId` for a key that is gone).
async fn refused(client: &aws_sdk_s3::Client, bucket: &str, who: &str) -> Outcome {
    const CODES: [&str; 2] = ["AccessDenied", "InvalidAccessKeyId"];
    let listed = client.list_objects_v2().bucket(bucket).send().await;
    match &listed {
        Ok(_) => return Err(format!("{who}: ListObjectsV2 was allowed")),
        Err(e) => expect!(
            s3::error_code(e).is_some_and(|c| CODES.contains(&c)),
            "{who}: ListObjectsV2 failed with {:?}, not AccessDenied: {}",
            s3::error_code(e),
            aws_sdk_s3::error::DisplayErrorContext(e)
        ),
    }
    let got = client
        .get_object()
        .bucket(bucket)
        .key("docs/hello.txt")
        .send()
        .await;
    match &got {
        Ok(_) => return Err(format!("{who}: GetObject was allowed")),
        Err(e) => expect!(
            s3::error_code(e).is_some_and(|c| CODES.contains(&c)),
            "{who}: GetObject failed with {:?}, not AccessDenied",
            s3::error_code(e)
        ),
    }
    let put = client
        .put_object()
        .bucket(bucket)
        .key("intruder.txt")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    match &put {
        Ok(_) => Err(format!("{who}: PutObject was allowed")),
        Err(e) => {
            expect!(
                s3::error_code(e).is_some_and(|c| CODES.contains(&c)),
                "{who}: PutObject failed with {:?}, not AccessDenied",
                s3::error_code(e)
            );
            Ok(())
        }
    }
}

// ---- Databases ----

/// Connects as a tenant would.
async fn tenant_connect(
    store: &dyn DatabaseStore,
    role: &str,
    password: &str,
    db: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    postgres::connect(&store.host(), store.port(), role, Some(password), db).await
}

/// Checks that a login fails with one of `codes`.
async fn login_refused(
    store: &dyn DatabaseStore,
    role: &str,
    password: &str,
    db: &str,
    codes: &[SqlState],
    what: &str,
) -> Outcome {
    match tenant_connect(store, role, password, db).await {
        Ok(_) => Err(format!("{what}: the login was accepted")),
        Err(e) => {
            expect!(
                e.code().is_some_and(|c| codes.contains(c)),
                "{what}: the login failed with {:?}, not {:?}: {e}",
                e.code().map(SqlState::code),
                codes.iter().map(SqlState::code).collect::<Vec<_>>()
            );
            Ok(())
        }
    }
}

/// Runs the database suite against `store`.
pub async fn database_store(store: &dyn DatabaseStore) -> Outcome {
    let prefix = format!("ndc_conf_{}", ok("random", random_hex(4))?);
    let req_a = DatabaseRequest {
        name: format!("{prefix}_a"),
        role: format!("{prefix}_a_owner"),
        password: ok("password", generate_password())?,
        connection_limit: 5,
    };
    let req_b = DatabaseRequest {
        name: format!("{prefix}_b"),
        role: format!("{prefix}_b_owner"),
        password: ok("password", generate_password())?,
        connection_limit: 0,
    };
    let (db_a, role_a) = (req_a.name.as_str(), req_a.role.as_str());

    // Names that are not plain [a-z0-9_]{1,63} never reach the server.
    for bad in ["Bad", "a-b", "a\"; DROP ROLE postgres; --", ""] {
        let req = DatabaseRequest {
            name: bad.to_string(),
            ..req_a.clone()
        };
        let r = store.ensure_database(&req).await;
        expect!(
            matches!(r, Err(Error::Config(_))),
            "database name {bad:?} gave {r:?}, not Config"
        );
    }
    let long = DatabaseRequest {
        role: "r".repeat(64),
        ..req_a.clone()
    };
    let r = store.ensure_database(&long).await;
    expect!(
        matches!(r, Err(Error::Config(_))),
        "a 64-character role name gave {r:?}, not Config"
    );

    // Twice is fine; the role logs in and owns its database.
    ok("ensure_database a", store.ensure_database(&req_a).await)?;
    ok(
        "ensure_database a again",
        store.ensure_database(&req_a).await,
    )?;
    expect!(
        ok("database_exists", store.database_exists(db_a).await)?,
        "database {db_a} missing"
    );
    expect!(
        ok("role_exists", store.role_exists(role_a).await)?,
        "role {role_a} missing"
    );
    let client = ok(
        "the owner role logs in",
        tenant_connect(store, role_a, &req_a.password, db_a).await,
    )?;
    ok(
        "the owner creates a table",
        client
            .batch_execute(
                "CREATE TABLE widgets (id integer PRIMARY KEY, name text NOT NULL);
                 INSERT INTO widgets VALUES (1, 'sprocket');",
            )
            .await,
    )?;
    let limits = ok(
        "reading connection limits",
        client
            .query_one(
                "SELECT d.datconnlimit, r.rolconnlimit FROM pg_database d, pg_roles r
                 WHERE d.datname = current_database() AND r.rolname = current_user",
                &[],
            )
            .await,
    )?;
    let (dat, rol): (i32, i32) = (limits.get(0), limits.get(1));
    expect!(
        dat == 5 && rol == 5,
        "connection limits are {dat} (database) and {rol} (role), not 5"
    );
    drop(client);

    // Another tenant's role cannot connect; a wrong password is refused.
    ok("ensure_database b", store.ensure_database(&req_b).await)?;
    login_refused(
        store,
        &req_b.role,
        &req_b.password,
        db_a,
        &[SqlState::INSUFFICIENT_PRIVILEGE],
        "role b into database a",
    )
    .await?;
    let b_home = tenant_connect(store, &req_b.role, &req_b.password, &req_b.name).await;
    expect!(
        b_home.is_ok(),
        "role b cannot connect to its own database: {b_home:?}"
    );
    login_refused(
        store,
        role_a,
        "not-the-password",
        db_a,
        &[SqlState::INVALID_PASSWORD],
        "role a with a wrong password",
    )
    .await?;

    // A new password: the old one is refused, the new one works, data stays.
    let req_a2 = DatabaseRequest {
        password: ok("password", generate_password())?,
        connection_limit: 0,
        ..req_a.clone()
    };
    ok(
        "ensure_database a with a new password",
        store.ensure_database(&req_a2).await,
    )?;
    login_refused(
        store,
        role_a,
        &req_a.password,
        db_a,
        &[SqlState::INVALID_PASSWORD],
        "role a with its old password",
    )
    .await?;
    let client = ok(
        "role a with its new password",
        tenant_connect(store, role_a, &req_a2.password, db_a).await,
    )?;
    let row = ok(
        "reading the table back",
        client
            .query_one("SELECT name FROM widgets WHERE id = 1", &[])
            .await,
    )?;
    let name: String = row.get(0);
    expect!(
        name == "sprocket",
        "the table holds {name:?} after the password change"
    );
    let limits = ok(
        "reading connection limits",
        client
            .query_one(
                "SELECT d.datconnlimit, r.rolconnlimit FROM pg_database d, pg_roles r
                 WHERE d.datname = current_database() AND r.rolname = current_user",
                &[],
            )
            .await,
    )?;
    let (dat, rol): (i32, i32) = (limits.get(0), limits.get(1));
    expect!(
        dat == -1 && rol == -1,
        "connection limit 0 left {dat} (database) and {rol} (role), not -1"
    );
    drop(client);

    // The dump is plain SQL with the table and its row.
    let dump = ok("dump", store.dump(db_a).await)?;
    let sql = String::from_utf8_lossy(&dump);
    expect!(
        sql.contains("CREATE TABLE public.widgets") && sql.contains("sprocket"),
        "the dump lacks the table or its row ({} bytes)",
        dump.len()
    );

    // Drop: database and role gone; dropping again is fine.
    ok("drop_database a", store.drop_database(db_a, role_a).await)?;
    expect!(
        !ok("database_exists", store.database_exists(db_a).await)?,
        "database {db_a} exists after drop"
    );
    expect!(
        !ok("role_exists", store.role_exists(role_a).await)?,
        "role {role_a} exists after drop"
    );
    let gone = tenant_connect(store, role_a, &req_a2.password, db_a).await;
    expect!(gone.is_err(), "role a still logs in after drop_database");
    ok(
        "drop_database a again",
        store.drop_database(db_a, role_a).await,
    )?;
    ok(
        "drop_database b",
        store.drop_database(&req_b.name, &req_b.role).await,
    )?;
    expect!(
        !ok("database_exists", store.database_exists(&req_b.name).await)?,
        "database b exists after drop"
    );
    Ok(())
}
