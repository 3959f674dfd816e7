//! `ndc catalog`: the shared services of the national framework, and who
//! subscribes to them.

use ndc_api::catalog::catalog_client::CatalogClient;
use ndc_api::catalog::{self as pb};
use serde_json::json;

use crate::output::{client, outln, print_data, status, CliError, Conn, Format};

#[derive(clap::Args, Debug)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "Examples:\n  ndc catalog\n  ndc catalog get cong-dich-vu-cong\n  ndc catalog subscriptions --tenant ha-noi\n  ndc catalog subscribe --tenant ha-noi --service thu-dien-tu-cong-vu"
)]
pub struct CatalogArgs {
    #[command(subcommand)]
    command: Option<CatalogCommand>,
}

#[derive(clap::Subcommand, Debug)]
enum CatalogCommand {
    /// Every service: capability, layer, scope, topology, subscribers (the default).
    List,
    /// One service.
    Get { name: String },
    /// Subscriptions, optionally for one tenant or one service.
    Subscriptions {
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long, default_value = "")]
        service: String,
    },
    /// Subscribe a tenant to a service (its scope must cover the tenant's level).
    Subscribe {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        service: String,
    },
    /// End a subscription.
    Unsubscribe {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        service: String,
    },
}

fn service_json(s: &pb::Service) -> serde_json::Value {
    let p = s.spec.clone().unwrap_or_default();
    json!({
        "name": p.name, "display_name": p.display_name, "capability": p.capability,
        "layer": p.layer, "scope": {"from": p.from, "to": p.to}, "topology": p.topology,
        "depends_on": p.depends_on, "per_tenant_database_bytes": p.per_tenant_database_bytes,
        "per_tenant_bucket_bytes": p.per_tenant_bucket_bytes, "owner": p.owner,
        "workload": p.workload, "generation": s.generation, "subscribers": s.subscribers,
        "exemption": (!s.exemption.is_empty()).then_some(&s.exemption),
    })
}

fn print_services(services: &[pb::Service], format: Format) -> Result<(), CliError> {
    if format != Format::Table {
        print_data(
            format,
            &services.iter().map(service_json).collect::<Vec<_>>(),
        )?;
        return Ok(());
    }
    outln!(
        "{:<28} {:<26} {:<15} {:<18} {:<13} {:>5}  DISPLAY NAME",
        "NAME",
        "CAPABILITY",
        "LAYER",
        "SCOPE",
        "TOPOLOGY",
        "SUBS"
    );
    for s in services {
        let p = s.spec.clone().unwrap_or_default();
        outln!(
            "{:<28} {:<26} {:<15} {:<18} {:<13} {:>5}  {}{}",
            p.name,
            p.capability,
            p.layer,
            format!("{}→{}", p.from, p.to),
            if p.workload {
                p.topology.as_str()
            } else {
                "record"
            },
            s.subscribers,
            p.display_name,
            if p.depends_on.is_empty() {
                String::new()
            } else {
                format!(" (needs {})", p.depends_on.join(", "))
            }
        );
    }
    outln!("{} service(s)", services.len());
    Ok(())
}

pub async fn run(args: CatalogArgs, conn: &Conn, format: Format) -> Result<(), CliError> {
    let c = client(conn).await?;
    match args.command.unwrap_or(CatalogCommand::List) {
        CatalogCommand::List => {
            let r = c
                .call(|ch| {
                    let a = c.auth();
                    async move {
                        CatalogClient::with_interceptor(ch, a)
                            .list(pb::ListServicesRequest {})
                            .await
                    }
                })
                .await
                .map_err(|s| status("cannot list the catalogue", s))?
                .into_inner();
            print_services(&r.services, format)?;
        }
        CatalogCommand::Get { name } => {
            let req = pb::GetServiceRequest { name: name.clone() };
            let r = c
                .call(|ch| {
                    let (a, req) = (c.auth(), req.clone());
                    async move { CatalogClient::with_interceptor(ch, a).get(req).await }
                })
                .await
                .map_err(|s| status(format!("cannot read service {name}"), s))?
                .into_inner();
            let s = r.service.unwrap_or_default();
            if format == Format::Table {
                print_data(Format::Yaml, &service_json(&s))?;
            } else {
                print_data(format, &service_json(&s))?;
            }
        }
        CatalogCommand::Subscriptions { tenant, service } => {
            let req = pb::ListSubscriptionsRequest { tenant, service };
            let r = c
                .call(|ch| {
                    let (a, req) = (c.auth(), req.clone());
                    async move {
                        CatalogClient::with_interceptor(ch, a)
                            .list_subscriptions(req)
                            .await
                    }
                })
                .await
                .map_err(|s| status("cannot list subscriptions", s))?
                .into_inner();
            if format != Format::Table {
                let v: Vec<_> = r
                    .subscriptions
                    .iter()
                    .map(|s| json!({"tenant": s.tenant, "service": s.service, "created_revision": s.created_revision, "created_by": s.created_by}))
                    .collect();
                print_data(format, &v)?;
            } else {
                outln!("{:<28} {:<28} {:>9}  BY", "TENANT", "SERVICE", "REVISION");
                for s in &r.subscriptions {
                    outln!(
                        "{:<28} {:<28} {:>9}  {}",
                        s.tenant,
                        s.service,
                        s.created_revision,
                        s.created_by
                    );
                }
                outln!("{} subscription(s)", r.subscriptions.len());
            }
        }
        CatalogCommand::Subscribe { tenant, service } => {
            let req = pb::SubscribeRequest {
                tenant: tenant.clone(),
                service: service.clone(),
            };
            let r = c
                .write(|ch, a| {
                    let req = req.clone();
                    async move { CatalogClient::with_interceptor(ch, a).subscribe(req).await }
                })
                .await
                .map_err(|s| status(format!("cannot subscribe {tenant} to {service}"), s))?
                .into_inner();
            outln!("{tenant} subscribes to {service} (revision {})", r.revision);
        }
        CatalogCommand::Unsubscribe { tenant, service } => {
            let req = pb::SubscribeRequest {
                tenant: tenant.clone(),
                service: service.clone(),
            };
            let r = c
                .write(|ch, a| {
                    let req = req.clone();
                    async move {
                        CatalogClient::with_interceptor(ch, a)
                            .unsubscribe(req)
                            .await
                    }
                })
                .await
                .map_err(|s| status(format!("cannot unsubscribe {tenant} from {service}"), s))?
                .into_inner();
            outln!(
                "{tenant} no longer subscribes to {service} (revision {})",
                r.revision
            );
        }
    }
    Ok(())
}
