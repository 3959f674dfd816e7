//! `ndc get|put|del|list|watch`: low-level inspection of the object store.

use std::path::PathBuf;

use futures::StreamExt;
use ndc_api::kv::kv_client::KvClient;
use ndc_api::kv::{self as pb, Consistency};
use serde_json::json;

use crate::output::{client, outln, print_data, show_value, status, CliError, Conn, Format};

#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  ndc get /demo/hello --stale")]
pub struct GetArgs {
    pub key: String,
    /// Answer from the contacted member's state without asking the leader (may lag).
    #[arg(long)]
    pub stale: bool,
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  ndc put /demo/hello world\n  ndc put /demo/hello again --expect-revision 7\n  ndc put /demo/blob --from-file ./record.json"
)]
pub struct PutArgs {
    pub key: String,
    /// The value (UTF-8 text); use --from-file for other content.
    #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
    pub value: Option<String>,
    /// Read the value from this file.
    #[arg(long)]
    pub from_file: Option<PathBuf>,
    /// Only if the object is at this revision (0: only if it does not exist).
    #[arg(long)]
    pub expect_revision: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct DelArgs {
    pub key: String,
    /// Only if the object is at this revision.
    #[arg(long)]
    pub expect_revision: Option<u64>,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  ndc list /demo/ --limit 50")]
pub struct ListArgs {
    /// Key prefix; empty lists everything.
    #[arg(default_value = "")]
    pub prefix: String,
    /// At most this many objects (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    /// Resume after this key.
    #[arg(long, default_value = "")]
    pub start_after: String,
    #[arg(long)]
    pub stale: bool,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  ndc watch /demo/ --from 1 --count 10")]
pub struct WatchArgs {
    #[arg(default_value = "")]
    pub prefix: String,
    /// First revision to show (0: from now on).
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// Stop after this many events (0: run until interrupted).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
}

fn consistency(stale: bool) -> i32 {
    if stale {
        Consistency::Stale as i32
    } else {
        Consistency::Linearizable as i32
    }
}

fn object_json(o: &pb::Object) -> serde_json::Value {
    json!({
        "key": o.key, "value": show_value(&o.value), "create_revision": o.create_revision,
        "mod_revision": o.mod_revision, "version": o.version,
    })
}

pub async fn get(args: GetArgs, conn: &Conn, format: Format) -> Result<(), CliError> {
    let c = client(conn).await?;
    let req = pb::GetRequest {
        key: args.key.clone(),
        consistency: consistency(args.stale),
    };
    let r = c
        .call(|ch| {
            let req = req.clone();
            let a = c.auth();
            async move { KvClient::with_interceptor(ch, a).get(req).await }
        })
        .await
        .map_err(|s| status(format!("cannot read {:?}", args.key), s))?
        .into_inner();
    let Some(o) = r.object else {
        return Err(CliError::Refused(anyhow::anyhow!(
            "key {:?} not found (store revision {})",
            args.key,
            r.revision
        )));
    };
    match format {
        Format::Json | Format::Yaml => print_data(format, &object_json(&o))?,
        Format::Table => outln!("{}", show_value(&o.value)),
    }
    Ok(())
}

pub async fn put(args: PutArgs, conn: &Conn, format: Format) -> Result<(), CliError> {
    let value = match (&args.value, &args.from_file) {
        (Some(v), _) => v.clone().into_bytes(),
        (None, Some(path)) => std::fs::read(path).map_err(|e| {
            CliError::Failed(anyhow::anyhow!(e).context(format!("cannot read {}", path.display())))
        })?,
        (None, None) => {
            return Err(CliError::Failed(anyhow::anyhow!(
                "give a value or --from-file"
            )))
        }
    };
    let c = client(conn).await?;
    let req = pb::PutRequest {
        key: args.key.clone(),
        value,
        expected_revision: args.expect_revision,
    };
    let r = c
        .write(|ch, a| {
            let req = req.clone();
            async move { KvClient::with_interceptor(ch, a).put(req).await }
        })
        .await
        .map_err(|s| status(format!("cannot write {:?}", args.key), s))?
        .into_inner();
    match format {
        Format::Json | Format::Yaml => print_data(
            format,
            &json!({"key": args.key, "revision": r.revision, "prev_revision": r.prev_revision}),
        )?,
        Format::Table => outln!("{} written at revision {}", args.key, r.revision),
    }
    Ok(())
}

pub async fn del(args: DelArgs, conn: &Conn, format: Format) -> Result<(), CliError> {
    let c = client(conn).await?;
    let req = pb::DeleteRequest {
        key: args.key.clone(),
        expected_revision: args.expect_revision,
    };
    let r = c
        .write(|ch, a| {
            let req = req.clone();
            async move { KvClient::with_interceptor(ch, a).delete(req).await }
        })
        .await
        .map_err(|s| status(format!("cannot delete {:?}", args.key), s))?
        .into_inner();
    match format {
        Format::Json | Format::Yaml => print_data(
            format,
            &json!({"key": args.key, "deleted": r.deleted, "revision": r.revision}),
        )?,
        Format::Table if r.deleted => outln!("{} deleted at revision {}", args.key, r.revision),
        Format::Table => outln!("{} did not exist; nothing deleted", args.key),
    }
    Ok(())
}

pub async fn list(args: ListArgs, conn: &Conn, format: Format) -> Result<(), CliError> {
    let c = client(conn).await?;
    let req = pb::ListRequest {
        prefix: args.prefix.clone(),
        start_after: args.start_after.clone(),
        limit: args.limit,
        consistency: consistency(args.stale),
    };
    let r = c
        .call(|ch| {
            let req = req.clone();
            let a = c.auth();
            async move { KvClient::with_interceptor(ch, a).list(req).await }
        })
        .await
        .map_err(|s| status(format!("cannot list {:?}", args.prefix), s))?
        .into_inner();
    match format {
        Format::Json | Format::Yaml => print_data(
            format,
            &json!({
                "revision": r.revision, "more": r.more,
                "objects": r.objects.iter().map(object_json).collect::<Vec<_>>(),
            }),
        )?,
        Format::Table => {
            outln!("{:<40} {:>9} {:>8}  VALUE", "KEY", "REVISION", "VERSION");
            for o in &r.objects {
                let mut v = show_value(&o.value);
                if v.chars().count() > 60 {
                    v = v.chars().take(57).collect::<String>() + "...";
                }
                outln!(
                    "{:<40} {:>9} {:>8}  {}",
                    o.key,
                    o.mod_revision,
                    o.version,
                    v
                );
            }
            outln!(
                "{} object(s) at revision {}{}",
                r.objects.len(),
                r.revision,
                if r.more {
                    " (more: use --start-after)"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

pub async fn watch(args: WatchArgs, conn: &Conn, format: Format) -> Result<(), CliError> {
    let c = client(conn).await?;
    let req = pb::WatchRequest {
        prefix: args.prefix.clone(),
        start_revision: args.from,
    };
    let mut stream = c
        .call(|ch| {
            let req = req.clone();
            let a = c.auth();
            async move { KvClient::with_interceptor(ch, a).watch(req).await }
        })
        .await
        .map_err(|s| status(format!("cannot watch {:?}", args.prefix), s))?
        .into_inner();
    let mut seen = 0u64;
    while let Some(msg) = stream.next().await {
        let msg = msg.map_err(|s| status("the watch ended", s))?;
        if msg.events.is_empty() {
            if format == Format::Table {
                eprintln!("watching {:?} after revision {}", args.prefix, msg.revision);
            }
            continue;
        }
        for e in &msg.events {
            let kind = if e.kind == pb::event::Kind::Delete as i32 {
                "DELETE"
            } else {
                "PUT"
            };
            let Some(o) = &e.object else { continue };
            match format {
                Format::Json | Format::Yaml => outln!(
                    "{}",
                    json!({"type": kind, "revision": e.revision, "object": object_json(o)})
                ),
                Format::Table => outln!(
                    "{:<6} {:>9} {} {}",
                    kind,
                    e.revision,
                    o.key,
                    show_value(&o.value)
                ),
            }
            seen += 1;
            if args.count > 0 && seen >= args.count {
                return Ok(());
            }
        }
    }
    Ok(())
}
