//! `ndc bucket …` and `ndc database …`: claims of object storage and
//! PostgreSQL databases for a tenant, and their credentials.

use std::time::Duration;

use ndc_api::claims::claims_client::ClaimsClient;
use ndc_api::claims::{self as pb};
use serde_json::json;

use crate::output::{client, outln, print_data, status, CliError, Conn, Format};
use crate::quantity::show_bytes;

/// Which claim, by tenant and name (or by uid).
#[derive(clap::Args, Debug, Clone)]
pub struct Which {
    /// The claim's name in its tenant.
    #[arg(required_unless_present = "uid")]
    name: Option<String>,
    /// The tenant (or an old id of it).
    #[arg(long, required_unless_present = "uid")]
    tenant: Option<String>,
    /// The claim's uid instead of tenant and name.
    #[arg(long, conflicts_with_all = ["name", "tenant"])]
    uid: Option<String>,
}

/// Waiting for the provisioner.
#[derive(clap::Args, Debug, Clone)]
pub struct Wait {
    /// Wait until the provisioner is done (Ready, or gone after a delete).
    #[arg(long)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: use e.g. 90s, 5m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{s:?} is not a duration: use e.g. 90s, 5m")),
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum BucketCommand {
    /// Claim a bucket for a tenant (counted against its bucket and storage quota).
    #[command(
        after_help = "Examples:\n  ndc bucket create archive --tenant ha-noi --size 50Gi --wait\n  ndc bucket create scans --tenant hue --size 1Ti --deletion-policy delete"
    )]
    Create {
        name: String,
        #[arg(long)]
        tenant: String,
        /// Size quota, e.g. 500Gi, 2Ti.
        #[arg(long, value_parser = crate::quantity::bytes)]
        size: u64,
        /// Keep every version of every object (where the object store has it).
        #[arg(long)]
        versioning: bool,
        /// Keep objects at least this many days (object lock, where the store has it).
        #[arg(long)]
        retention_days: Option<u32>,
        /// What deleting the claim does: retain keeps the bucket, delete removes it.
        #[arg(long, default_value = "retain", value_parser = ["retain", "delete"])]
        deletion_policy: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// List bucket claims.
    #[command(after_help = "Example:\n  ndc bucket list --tenant ha-noi --subtree")]
    List {
        #[arg(long, default_value = "")]
        tenant: String,
        /// With --tenant: the tenants below it too.
        #[arg(long)]
        subtree: bool,
    },
    /// Show one bucket claim and its status.
    Get(Which),
    /// Delete a bucket claim; the bucket is kept or removed by its policy.
    #[command(
        after_help = "A non-empty bucket under the delete policy is refused unless --purge is given.\n\nExample:\n  ndc bucket delete archive --tenant ha-noi --purge --wait"
    )]
    Delete {
        #[command(flatten)]
        which: Which,
        /// Delete the bucket's objects too (policy delete).
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Give the bucket a new key; the old key stops working once the new one is in force.
    RotateKey {
        #[command(flatten)]
        which: Which,
        #[command(flatten)]
        wait: Wait,
    },
    /// Show the bucket's endpoint and key (tenant-admins and dc-operator only).
    Credentials(Which),
}

#[derive(clap::Subcommand, Debug)]
pub enum DatabaseCommand {
    /// Claim a PostgreSQL database for a tenant (counted against its database and storage quota).
    #[command(
        after_help = "Example:\n  ndc database create records --tenant ha-noi --size 20Gi --connection-limit 50 --wait"
    )]
    Create {
        name: String,
        #[arg(long)]
        tenant: String,
        /// Expected size, e.g. 20Gi; counted against the tenant's storage.
        #[arg(long, value_parser = crate::quantity::bytes)]
        size: u64,
        /// Most connections at once (0: the server's default).
        #[arg(long, default_value_t = 0)]
        connection_limit: u32,
        /// What deleting the claim does: retain keeps the database, delete drops it after a final dump.
        #[arg(long, default_value = "retain", value_parser = ["retain", "delete"])]
        deletion_policy: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// List database claims.
    List {
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long)]
        subtree: bool,
    },
    /// Show one database claim and its status.
    Get(Which),
    /// Delete a database claim; under the delete policy a final dump is stored first.
    Delete {
        #[command(flatten)]
        which: Which,
        #[command(flatten)]
        wait: Wait,
    },
    /// Give the database's role a new password.
    RotatePassword {
        #[command(flatten)]
        which: Which,
        #[command(flatten)]
        wait: Wait,
    },
    /// Show how to connect (tenant-admins and dc-operator only).
    Credentials(Which),
}

fn claim_ref(kind: &str, w: &Which) -> pb::ClaimRef {
    pb::ClaimRef {
        uid: w.uid.clone().unwrap_or_default(),
        tenant: w.tenant.clone().unwrap_or_default(),
        kind: kind.into(),
        name: w.name.clone().unwrap_or_default(),
    }
}

fn label(kind: &str, w: &Which) -> String {
    match (&w.uid, &w.name, &w.tenant) {
        (Some(uid), _, _) => format!("{kind} {uid}"),
        (_, Some(n), Some(t)) => format!("{kind} {n} of tenant {t}"),
        _ => kind.to_string(),
    }
}

fn claim_json(c: &pb::Claim) -> serde_json::Value {
    let spec = match &c.spec {
        Some(pb::claim::Spec::Bucket(b)) => json!({
            "size_bytes": b.size_bytes, "versioning": b.versioning,
            "retention_days": (b.retention_days > 0).then_some(b.retention_days),
        }),
        Some(pb::claim::Spec::Database(d)) => json!({
            "size_bytes": d.size_bytes, "connection_limit": d.connection_limit,
        }),
        None => json!({}),
    };
    json!({
        "uid": c.uid, "tenant": c.tenant, "kind": c.kind, "name": c.name, "spec": spec,
        "deletion_policy": c.deletion_policy, "generation": c.generation,
        "created_revision": c.created_revision, "created_at_ms": c.created_at_ms,
        "created_by": c.created_by, "credentials_generation": c.credentials_generation,
        "deleting": c.deleting, "purge": c.purge, "external_name": c.external_name,
        "status": {
            "phase": c.phase, "endpoint": c.endpoint,
            "observed_generation": c.observed_generation,
            "observed_credentials": c.observed_credentials,
            "backup": (!c.backup.is_empty()).then_some(&c.backup),
            "conditions": c.conditions.iter().map(|k| json!({
                "type": k.r#type, "status": if k.status { "True" } else { "False" },
                "reason": k.reason, "message": k.message, "at_ms": k.at_ms,
            })).collect::<Vec<_>>(),
        },
        "mod_revision": c.mod_revision,
    })
}

fn size(c: &pb::Claim) -> u64 {
    match &c.spec {
        Some(pb::claim::Spec::Bucket(b)) => b.size_bytes,
        Some(pb::claim::Spec::Database(d)) => d.size_bytes,
        None => 0,
    }
}

fn message(c: &pb::Claim) -> String {
    c.conditions
        .iter()
        .find(|k| k.r#type == "Ready")
        .map(|k| k.message.clone())
        .unwrap_or_default()
}

fn print_claims(claims: &[pb::Claim], format: Format) -> Result<(), CliError> {
    if format != Format::Table {
        print_data(format, &claims.iter().map(claim_json).collect::<Vec<_>>())?;
        return Ok(());
    }
    outln!(
        "{:<24} {:<20} {:<10} {:>9} {:<8} {:<20}  MESSAGE",
        "TENANT",
        "NAME",
        "PHASE",
        "SIZE",
        "POLICY",
        "EXTERNAL NAME"
    );
    for c in claims {
        outln!(
            "{:<24} {:<20} {:<10} {:>9} {:<8} {:<20}  {}",
            c.tenant,
            c.name,
            c.phase,
            show_bytes(size(c)),
            c.deletion_policy,
            c.external_name,
            message(c)
        );
    }
    outln!("{} claim(s)", claims.len());
    Ok(())
}

fn print_claim(c: &pb::Claim, format: Format) -> Result<(), CliError> {
    if format != Format::Table {
        print_data(format, &claim_json(c))?;
        return Ok(());
    }
    outln!("{} {} of tenant {}", c.kind, c.name, c.tenant);
    outln!("  uid:            {}", c.uid);
    outln!("  external name:  {}", c.external_name);
    outln!("  size:           {}", show_bytes(size(c)));
    if let Some(pb::claim::Spec::Database(d)) = &c.spec {
        outln!("  connections:    {}", d.connection_limit);
    }
    if let Some(pb::claim::Spec::Bucket(b)) = &c.spec {
        outln!("  versioning:     {}", b.versioning);
        if b.retention_days > 0 {
            outln!("  retention:      {} days", b.retention_days);
        }
    }
    outln!(
        "  policy:         {}{}",
        c.deletion_policy,
        if c.deleting {
            if c.purge {
                " (deletion requested, with purge)"
            } else {
                " (deletion requested)"
            }
        } else {
            ""
        }
    );
    outln!("  phase:          {}", c.phase);
    if !c.endpoint.is_empty() {
        outln!("  endpoint:       {}", c.endpoint);
    }
    if !c.backup.is_empty() {
        outln!("  final dump:     {}", c.backup);
    }
    for k in &c.conditions {
        outln!(
            "  condition:      {}={} {}: {}",
            k.r#type,
            if k.status { "True" } else { "False" },
            k.reason,
            k.message
        );
    }
    outln!(
        "  generation:     {} (observed {}), credentials {} (in force {})",
        c.generation,
        c.observed_generation,
        c.credentials_generation,
        c.observed_credentials
    );
    Ok(())
}

async fn get(c: &ndc_api::Client, r: &pb::ClaimRef) -> Result<Option<pb::Claim>, tonic::Status> {
    match c
        .call(|ch| {
            let (a, r) = (c.auth(), r.clone());
            async move { ClaimsClient::with_interceptor(ch, a).get(r).await }
        })
        .await
    {
        Ok(resp) => Ok(resp.into_inner().claim),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(s),
    }
}

/// What `--wait` waits for.
enum Until {
    /// Ready with the current spec and credentials in force.
    Ready,
    /// Gone (its deletion handled).
    Gone,
}

/// Polls the claim until the provisioner is done with it. A failure the
/// provisioner reports is shown and ends the wait (exit 1); it keeps
/// retrying in the background.
async fn wait_for(
    c: &ndc_api::Client,
    r: &pb::ClaimRef,
    until: Until,
    timeout: Duration,
    what: &str,
) -> Result<Option<pb::Claim>, CliError> {
    let deadline = tokio::time::Instant::now() + timeout;
    eprintln!("waiting for {what} ...");
    let mut delay = Duration::from_millis(50);
    loop {
        let claim = get(c, r)
            .await
            .map_err(|s| status(format!("cannot read {what}"), s))?;
        match (&until, &claim) {
            (Until::Gone, None) => return Ok(None),
            (Until::Ready, None) => {
                return Err(CliError::Refused(anyhow::anyhow!(
                    "{what} no longer exists"
                )))
            }
            (Until::Ready, Some(k)) if k.ready => return Ok(claim),
            (_, Some(k))
                if k.phase == "Failed"
                    || (k.deleting
                        && !message(k).is_empty()
                        && k.conditions
                            .iter()
                            .any(|x| !x.status && x.reason != "Deleting")) =>
            {
                return Err(CliError::Refused(anyhow::anyhow!(
                    "{what} is not done: {} (the control plane keeps retrying)",
                    message(k)
                )));
            }
            _ => {}
        }
        if tokio::time::Instant::now() + delay > deadline {
            return Err(CliError::Failed(anyhow::anyhow!(
                "{what} was not done within {timeout:?}; it goes on in the background: see `ndc {} get`",
                r.kind
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

pub async fn bucket(cmd: BucketCommand, conn: &Conn, format: Format) -> Result<(), CliError> {
    let c = client(conn).await?;
    const KIND: &str = "bucket";
    match cmd {
        BucketCommand::Create {
            name,
            tenant,
            size,
            versioning,
            retention_days,
            deletion_policy,
            wait,
        } => {
            let req = pb::CreateClaimRequest {
                tenant,
                name,
                spec: Some(pb::create_claim_request::Spec::Bucket(pb::BucketSpec {
                    size_bytes: size,
                    versioning,
                    retention_days: retention_days.unwrap_or(0),
                })),
                deletion_policy,
            };
            create(&c, req, wait, format).await
        }
        BucketCommand::List { tenant, subtree } => list(&c, KIND, tenant, subtree, format).await,
        BucketCommand::Get(w) => show(&c, KIND, &w, format).await,
        BucketCommand::Delete { which, purge, wait } => {
            delete(&c, KIND, &which, purge, wait, format).await
        }
        BucketCommand::RotateKey { which, wait } => rotate(&c, KIND, &which, wait, format).await,
        BucketCommand::Credentials(w) => credentials(&c, KIND, &w, format).await,
    }
}

pub async fn database(cmd: DatabaseCommand, conn: &Conn, format: Format) -> Result<(), CliError> {
    let c = client(conn).await?;
    const KIND: &str = "database";
    match cmd {
        DatabaseCommand::Create {
            name,
            tenant,
            size,
            connection_limit,
            deletion_policy,
            wait,
        } => {
            let req = pb::CreateClaimRequest {
                tenant,
                name,
                spec: Some(pb::create_claim_request::Spec::Database(pb::DatabaseSpec {
                    size_bytes: size,
                    connection_limit,
                })),
                deletion_policy,
            };
            create(&c, req, wait, format).await
        }
        DatabaseCommand::List { tenant, subtree } => list(&c, KIND, tenant, subtree, format).await,
        DatabaseCommand::Get(w) => show(&c, KIND, &w, format).await,
        DatabaseCommand::Delete { which, wait } => {
            delete(&c, KIND, &which, false, wait, format).await
        }
        DatabaseCommand::RotatePassword { which, wait } => {
            rotate(&c, KIND, &which, wait, format).await
        }
        DatabaseCommand::Credentials(w) => credentials(&c, KIND, &w, format).await,
    }
}

async fn create(
    c: &ndc_api::Client,
    req: pb::CreateClaimRequest,
    wait: Wait,
    format: Format,
) -> Result<(), CliError> {
    let kind = match req.spec {
        Some(pb::create_claim_request::Spec::Database(_)) => "database",
        _ => "bucket",
    };
    let what = format!("{kind} {} of tenant {}", req.name, req.tenant);
    let r = c
        .write(|ch, a| {
            let req = req.clone();
            async move { ClaimsClient::with_interceptor(ch, a).create(req).await }
        })
        .await
        .map_err(|s| status(format!("cannot create {what}"), s))?
        .into_inner();
    let mut claim = r.claim.unwrap_or_default();
    if wait.wait {
        let cref = pb::ClaimRef {
            uid: claim.uid.clone(),
            ..Default::default()
        };
        if let Some(k) = wait_for(c, &cref, Until::Ready, wait.timeout, &what).await? {
            claim = k;
        }
    } else if format == Format::Table {
        eprintln!(
            "{what} admitted at revision {}; the control plane provisions it now (see `ndc {kind} get`, or use --wait)",
            r.revision
        );
    }
    print_claim(&claim, format)?;
    Ok(())
}

/// Claims asked for in one call of `list`.
const LIST_PAGE: u32 = 5_000;

async fn list(
    c: &ndc_api::Client,
    kind: &str,
    tenant: String,
    subtree: bool,
    format: Format,
) -> Result<(), CliError> {
    // In pages, so that no single answer (nor the server) holds them all.
    let mut claims = Vec::new();
    let mut start_after = String::new();
    loop {
        let req = pb::ListClaimsRequest {
            tenant: tenant.clone(),
            subtree,
            kind: kind.into(),
            limit: LIST_PAGE,
            start_after,
        };
        let r = c
            .call(|ch| {
                let (a, req) = (c.auth(), req.clone());
                async move { ClaimsClient::with_interceptor(ch, a).list(req).await }
            })
            .await
            .map_err(|s| status(format!("cannot list {kind}s"), s))?
            .into_inner();
        claims.extend(r.claims);
        if r.next_after.is_empty() {
            break;
        }
        start_after = r.next_after;
    }
    print_claims(&claims, format)?;
    Ok(())
}

async fn show(c: &ndc_api::Client, kind: &str, w: &Which, format: Format) -> Result<(), CliError> {
    let what = label(kind, w);
    match get(c, &claim_ref(kind, w))
        .await
        .map_err(|s| status(format!("cannot read {what}"), s))?
    {
        Some(k) => {
            print_claim(&k, format)?;
            Ok(())
        }
        None => Err(CliError::Refused(anyhow::anyhow!("{what} not found"))),
    }
}

async fn delete(
    c: &ndc_api::Client,
    kind: &str,
    w: &Which,
    purge: bool,
    wait: Wait,
    format: Format,
) -> Result<(), CliError> {
    let what = label(kind, w);
    let req = pb::DeleteClaimRequest {
        claim: Some(claim_ref(kind, w)),
        purge,
    };
    let r = c
        .write(|ch, a| {
            let req = req.clone();
            async move { ClaimsClient::with_interceptor(ch, a).delete(req).await }
        })
        .await
        .map_err(|s| status(format!("cannot delete {what}"), s))?
        .into_inner();
    let claim = r.claim.unwrap_or_default();
    if wait.wait {
        let cref = pb::ClaimRef {
            uid: claim.uid.clone(),
            ..Default::default()
        };
        wait_for(c, &cref, Until::Gone, wait.timeout, &what).await?;
        outln!("{what} deleted (policy {})", claim.deletion_policy);
    } else {
        if format == Format::Table {
            eprintln!(
                "deletion of {what} recorded at revision {}; the control plane handles it by its policy ({})",
                r.revision, claim.deletion_policy
            );
        }
        print_claim(&claim, format)?;
    }
    Ok(())
}

async fn rotate(
    c: &ndc_api::Client,
    kind: &str,
    w: &Which,
    wait: Wait,
    format: Format,
) -> Result<(), CliError> {
    let what = label(kind, w);
    let req = claim_ref(kind, w);
    let r = c
        .write(|ch, a| {
            let req = req.clone();
            async move { ClaimsClient::with_interceptor(ch, a).rotate(req).await }
        })
        .await
        .map_err(|s| status(format!("cannot rotate the credentials of {what}"), s))?
        .into_inner();
    let mut claim = r.claim.unwrap_or_default();
    if wait.wait {
        let cref = pb::ClaimRef {
            uid: claim.uid.clone(),
            ..Default::default()
        };
        if let Some(k) = wait_for(c, &cref, Until::Ready, wait.timeout, &what).await? {
            claim = k;
        }
    }
    print_claim(&claim, format)?;
    Ok(())
}

async fn credentials(
    c: &ndc_api::Client,
    kind: &str,
    w: &Which,
    format: Format,
) -> Result<(), CliError> {
    let what = label(kind, w);
    let req = claim_ref(kind, w);
    let r = c
        .call(|ch| {
            let (a, req) = (c.auth(), req.clone());
            async move { ClaimsClient::with_interceptor(ch, a).credentials(req).await }
        })
        .await
        .map_err(|s| status(format!("cannot read the credentials of {what}"), s))?
        .into_inner();
    let values: std::collections::BTreeMap<_, _> = r.values.into_iter().collect();
    if format != Format::Table {
        print_data(
            format,
            &json!({"uid": r.uid, "kind": r.kind, "generation": r.generation, "in_force": r.in_force, "values": values}),
        )?;
        return Ok(());
    }
    for (k, v) in &values {
        outln!("{k}: {v}");
    }
    if !r.in_force {
        eprintln!(
            "note: generation {} is not in force yet; the control plane is provisioning it",
            r.generation
        );
    }
    Ok(())
}
