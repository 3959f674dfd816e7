//! `ndc node list|get|cordon|uncordon|remove`: the data centre's hosts.

use ndc_api::inventory::inventory_client::InventoryClient;
use ndc_api::inventory::{self as pb};
use serde_json::json;

use crate::output::{client, outln, print_data, status, CliError, Conn, Format};
use crate::quantity::{show_bytes, show_cpu};

#[derive(clap::Subcommand, Debug)]
pub enum NodeCommand {
    /// List hosts with their state and capacity.
    #[command(after_help = "Example:\n  ndc node list --zone hn-1")]
    List {
        #[arg(long, default_value = "")]
        zone: String,
    },
    /// Show one host.
    Get { name: String },
    /// Take a host out of service: its capacity no longer counts.
    Cordon { name: String },
    /// Put a cordoned host back into service.
    Uncordon { name: String },
    /// Forget a host (its agent registers it again if it is still running).
    Remove { name: String },
}

fn host_json(h: &pb::Host) -> serde_json::Value {
    let s = h.spec.clone().unwrap_or_default();
    let c = s.capacity.unwrap_or_default();
    json!({
        "name": s.name, "zone": s.zone, "rack": s.rack, "labels": s.labels, "simulated": s.simulated,
        "state": h.state, "cordoned": h.cordoned,
        "capacity": {"cpu_millis": c.cpu_millis, "memory_bytes": c.memory_bytes, "storage_bytes": c.storage_bytes},
        "registered_ms": h.registered_ms, "last_heartbeat_ms": h.last_heartbeat_ms,
    })
}

fn print_hosts(hosts: &[pb::Host], format: Format) -> Result<(), CliError> {
    if format != Format::Table {
        print_data(format, &hosts.iter().map(host_json).collect::<Vec<_>>())?;
        return Ok(());
    }
    outln!(
        "{:<24} {:<10} {:<8} {:<10} {:>8} {:>10} {:>10}  NOTE",
        "NAME",
        "ZONE",
        "RACK",
        "STATE",
        "CPU",
        "MEMORY",
        "STORAGE"
    );
    for h in hosts {
        let s = h.spec.clone().unwrap_or_default();
        let c = s.capacity.unwrap_or_default();
        let mut note = Vec::new();
        if h.cordoned {
            note.push("cordoned");
        }
        if s.simulated {
            note.push("simulated");
        }
        outln!(
            "{:<24} {:<10} {:<8} {:<10} {:>8} {:>10} {:>10}  {}",
            s.name,
            s.zone,
            s.rack,
            h.state,
            show_cpu(c.cpu_millis),
            show_bytes(c.memory_bytes),
            show_bytes(c.storage_bytes),
            note.join(", ")
        );
    }
    outln!("{} host(s)", hosts.len());
    Ok(())
}

pub async fn run(cmd: NodeCommand, conn: &Conn, format: Format) -> Result<(), CliError> {
    let c = client(conn).await?;
    match cmd {
        NodeCommand::List { zone } => {
            let req = pb::ListHostsRequest { zone, stale: false };
            let r = c
                .call(|ch| {
                    let (a, req) = (c.auth(), req.clone());
                    async move { InventoryClient::with_interceptor(ch, a).list(req).await }
                })
                .await
                .map_err(|s| status("cannot list hosts", s))?
                .into_inner();
            print_hosts(&r.hosts, format)?;
        }
        NodeCommand::Get { name } => {
            let req = pb::GetHostRequest { name: name.clone() };
            let r = c
                .call(|ch| {
                    let (a, req) = (c.auth(), req.clone());
                    async move { InventoryClient::with_interceptor(ch, a).get(req).await }
                })
                .await
                .map_err(|s| status(format!("cannot read host {name}"), s))?
                .into_inner();
            print_hosts(&r.host.into_iter().collect::<Vec<_>>(), format)?;
        }
        NodeCommand::Cordon { name } => cordon(&c, name, true, format).await?,
        NodeCommand::Uncordon { name } => cordon(&c, name, false, format).await?,
        NodeCommand::Remove { name } => {
            let req = pb::RemoveHostRequest { name: name.clone() };
            let r = c
                .write(|ch, a| {
                    let req = req.clone();
                    async move { InventoryClient::with_interceptor(ch, a).remove(req).await }
                })
                .await
                .map_err(|s| status(format!("cannot remove host {name}"), s))?
                .into_inner();
            outln!("host {name} removed at revision {}", r.revision);
        }
    }
    Ok(())
}

async fn cordon(
    c: &ndc_api::Client,
    name: String,
    cordoned: bool,
    format: Format,
) -> Result<(), CliError> {
    let req = pb::CordonRequest {
        name: name.clone(),
        cordoned,
    };
    let r = c
        .write(|ch, a| {
            let req = req.clone();
            async move { InventoryClient::with_interceptor(ch, a).cordon(req).await }
        })
        .await
        .map_err(|s| status(format!("cannot change host {name}"), s))?
        .into_inner();
    print_hosts(&r.host.into_iter().collect::<Vec<_>>(), format)?;
    Ok(())
}
