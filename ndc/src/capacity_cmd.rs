//! `ndc capacity`: what the data centre holds, what is promised, what is left.

use ndc_api::inventory::inventory_client::InventoryClient;
use ndc_api::inventory::{self as pb};
use serde_json::json;

use crate::output::{client, outln, print_data, status, CliError, Conn, Format};
use crate::quantity::{show_bytes, show_cpu};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  ndc capacity\n  ndc capacity -o json\n  ndc capacity overcommit --cpu 4 --memory 1.5 --storage 1"
)]
pub struct CapacityArgs {
    #[command(subcommand)]
    pub command: Option<CapacityCommand>,
}

#[derive(clap::Subcommand, Debug)]
pub enum CapacityCommand {
    /// Set how far quotas may exceed capacity, per resource (times capacity).
    Overcommit {
        #[arg(long)]
        cpu: f64,
        #[arg(long)]
        memory: f64,
        #[arg(long)]
        storage: f64,
    },
}

fn cap_json(c: &Option<pb::Capacity>) -> serde_json::Value {
    let c = c.unwrap_or_default();
    json!({"cpu_millis": c.cpu_millis, "memory_bytes": c.memory_bytes, "storage_bytes": c.storage_bytes})
}

fn cap_cells(c: &Option<pb::Capacity>) -> String {
    let c = c.unwrap_or_default();
    format!(
        "{:>10} {:>10} {:>10}",
        show_cpu(c.cpu_millis),
        show_bytes(c.memory_bytes),
        show_bytes(c.storage_bytes)
    )
}

pub async fn run(args: CapacityArgs, conn: &Conn, format: Format) -> Result<(), CliError> {
    let c = client(conn).await?;
    if let Some(CapacityCommand::Overcommit {
        cpu,
        memory,
        storage,
    }) = args.command
    {
        let req = pb::SetOvercommitRequest {
            cpu,
            memory,
            storage,
        };
        let r = c
            .write(|ch, a| async move {
                InventoryClient::with_interceptor(ch, a)
                    .set_overcommit(req)
                    .await
            })
            .await
            .map_err(|s| status("cannot set the overcommit", s))?
            .into_inner();
        outln!(
            "overcommit set at revision {}: cpu {cpu}x, memory {memory}x, storage {storage}x",
            r.revision
        );
        return Ok(());
    }
    let r = c
        .call(|ch| {
            let a = c.auth();
            async move {
                InventoryClient::with_interceptor(ch, a)
                    .capacity(pb::CapacityRequest {})
                    .await
            }
        })
        .await
        .map_err(|s| status("cannot read the capacity", s))?
        .into_inner();
    let zone_json = |z: &pb::ZoneCapacity| {
        json!({"zone": z.zone, "hosts": z.hosts, "ready": z.ready, "cordoned": z.cordoned,
               "capacity": cap_json(&z.capacity), "grantable": cap_json(&z.grantable)})
    };
    let share_json = |s: &pb::Share| json!({"name": s.name, "display_name": s.display_name, "quota": cap_json(&s.quota)});
    if format != Format::Table {
        print_data(
            format,
            &json!({
                "zones": r.zones.iter().map(zone_json).collect::<Vec<_>>(),
                "total": r.total.as_ref().map(zone_json),
                "granted": cap_json(&r.granted),
                "headroom": cap_json(&r.headroom),
                "by_level": r.by_level.iter().map(share_json).collect::<Vec<_>>(),
                "by_branch": r.by_branch.iter().map(share_json).collect::<Vec<_>>(),
                "largest": r.largest.iter().map(share_json).collect::<Vec<_>>(),
                "overcommit": r.overcommit,
            }),
        )?;
        return Ok(());
    }
    outln!(
        "{:<14} {:>5} {:>5} {:>8}  {:>10} {:>10} {:>10}  {:>10} {:>10} {:>10}",
        "ZONE",
        "HOSTS",
        "READY",
        "CORDONED",
        "CPU",
        "MEMORY",
        "STORAGE",
        "GRANTABLE",
        "",
        ""
    );
    for z in r.zones.iter().chain(r.total.iter()) {
        outln!(
            "{:<14} {:>5} {:>5} {:>8}  {}  {}",
            z.zone,
            z.hosts,
            z.ready,
            z.cordoned,
            cap_cells(&z.capacity),
            cap_cells(&z.grantable)
        );
    }
    outln!("\novercommit: {}", r.overcommit);
    outln!(
        "{:<32} {}",
        "granted (top-level tenants)",
        cap_cells(&r.granted)
    );
    outln!("{:<32} {}", "headroom", cap_cells(&r.headroom));
    outln!("\nquota held by level:");
    for s in &r.by_level {
        outln!("  {:<30} {}", s.name, cap_cells(&s.quota));
    }
    outln!("quota held by branch:");
    for s in &r.by_branch {
        outln!("  {:<30} {}", s.name, cap_cells(&s.quota));
    }
    outln!("largest tenants:");
    for s in &r.largest {
        outln!(
            "  {:<30} {}  {}",
            s.name,
            cap_cells(&s.quota),
            s.display_name
        );
    }
    Ok(())
}
