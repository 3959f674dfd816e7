//! `ndc tenant create|get|list|tree|update|delete|merge|reparent|rename`.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};

use ndc_api::convert;
use ndc_api::tenants::tenants_client::TenantsClient;
use ndc_api::tenants::{self as pb};
use ndc_core::{Branch, Level, MergeTarget, Quota, Reorg, Tenant, TenantSpec};

use crate::output::{client, out, outln, print_data, status, CliError, Conn, Format};
use crate::quantity::{bytes, cpu_millis, show_bytes, show_cpu};

/// Quota flags shared by create and update.
#[derive(clap::Args, Debug, Default)]
pub struct QuotaArgs {
    /// CPU: cores ("4", "1.5") or millicores ("500m").
    #[arg(long, value_parser = cpu_millis)]
    pub cpu: Option<u64>,
    /// Memory: bytes or with a unit ("64Gi").
    #[arg(long, value_parser = bytes)]
    pub memory: Option<u64>,
    /// Storage: bytes or with a unit ("10Ti").
    #[arg(long, value_parser = bytes)]
    pub storage: Option<u64>,
    #[arg(long)]
    pub buckets: Option<u64>,
    #[arg(long)]
    pub databases: Option<u64>,
    #[arg(long)]
    pub namespaces: Option<u64>,
}

impl QuotaArgs {
    fn any(&self) -> bool {
        self.cpu.is_some()
            || self.memory.is_some()
            || self.storage.is_some()
            || self.buckets.is_some()
            || self.databases.is_some()
            || self.namespaces.is_some()
    }

    fn over(&self, base: Quota) -> Quota {
        Quota {
            cpu_millis: self.cpu.unwrap_or(base.cpu_millis),
            memory_bytes: self.memory.unwrap_or(base.memory_bytes),
            storage_bytes: self.storage.unwrap_or(base.storage_bytes),
            buckets: self.buckets.unwrap_or(base.buckets),
            databases: self.databases.unwrap_or(base.databases),
            namespaces: self.namespaces.unwrap_or(base.namespaces),
        }
    }
}

fn label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("label {s:?} must be KEY=VALUE"))
}

#[derive(clap::Subcommand, Debug)]
pub enum TenantCommand {
    /// Create a tenant (an agency).
    #[command(
        after_help = "Example:\n  ndc tenant create --id ha-noi-long-bien --name 'Phường Long Biên' --level commune --branch state \\\n    --parent ha-noi --code 99009 --security-level 2 --cpu 4 --memory 8Gi --storage 500Gi \\\n    --buckets 5 --databases 5 --namespaces 2 --decision 'QĐ 19/2025/QĐ-TTg'"
    )]
    Create {
        #[arg(long)]
        id: String,
        /// Display name in Vietnamese.
        #[arg(long)]
        name: String,
        #[arg(long)]
        level: Level,
        #[arg(long, default_value = "state")]
        branch: ndc_core::Branch,
        #[arg(long)]
        parent: Option<String>,
        /// Administrative code: 2 digits for a province, 5 for a commune.
        #[arg(long)]
        code: Option<String>,
        /// 1 to 5 (Decree 85/2016).
        #[arg(long, default_value_t = 3)]
        security_level: u8,
        /// KEY=VALUE, repeatable.
        #[arg(long = "label", value_parser = label)]
        labels: Vec<(String, String)>,
        #[command(flatten)]
        quota: QuotaArgs,
        #[arg(long)]
        deletion_protection: bool,
        /// The decision that authorises the change (recorded in the audit log).
        #[arg(long)]
        decision: Option<String>,
    },
    /// Show one tenant (an old id after a rename or merge also works).
    Get { id: String },
    /// List tenants.
    #[command(after_help = "Example:\n  ndc tenant list --level commune --parent ha-noi")]
    List {
        #[arg(long)]
        level: Option<Level>,
        #[arg(long)]
        branch: Option<ndc_core::Branch>,
        /// Direct children of this tenant.
        #[arg(long)]
        parent: Option<String>,
        /// This tenant and everything below it.
        #[arg(long)]
        subtree: Option<String>,
    },
    /// Draw the hierarchy with quotas and what is handed out and used.
    Tree {
        /// Start here (default: every top-level tenant).
        root: Option<String>,
    },
    /// Change a tenant's name, quota, labels, state, protection or security level.
    #[command(
        after_help = "Example:\n  ndc tenant update ha-noi --cpu 500 --label region=north --decision 'QĐ 45/QĐ-UBND'"
    )]
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        quota: QuotaArgs,
        /// KEY=VALUE; replaces all labels. Repeatable.
        #[arg(long = "label", value_parser = label)]
        labels: Vec<(String, String)>,
        /// Remove every label.
        #[arg(long, conflicts_with = "labels")]
        clear_labels: bool,
        #[arg(long, value_parser = ["active", "suspended", "retired"])]
        state: Option<String>,
        #[arg(long)]
        deletion_protection: Option<bool>,
        #[arg(long)]
        security_level: Option<u8>,
        #[arg(long)]
        decision: Option<String>,
    },
    /// Delete a tenant that has no children, claims or protection.
    Delete {
        id: String,
        #[arg(long)]
        decision: Option<String>,
    },
    /// Merge tenants into an existing one or a new one; shows the plan and asks.
    #[command(
        after_help = "Examples:\n  ndc tenant merge ha-noi-cua-nam --into ha-noi-hoan-kiem --decision 'NQ 1656/NQ-UBTVQH15'\n  ndc tenant merge hue-vy-da hue-kim-long --new-id hue-kim-long-vy-da --new-name 'Phường Kim Long Vỹ Dạ' \\\n    --new-code 99105 --decision 'NQ 1674/NQ-UBTVQH15' --yes"
    )]
    Merge {
        #[arg(required = true)]
        sources: Vec<String>,
        #[arg(long, required_unless_present = "new_id", conflicts_with = "new_id")]
        into: Option<String>,
        #[arg(long, requires = "new_name")]
        new_id: Option<String>,
        #[arg(long)]
        new_name: Option<String>,
        #[arg(long)]
        new_code: Option<String>,
        /// Parent of the new tenant (default: the first source's parent).
        #[arg(long)]
        new_parent: Option<String>,
        #[arg(long)]
        decision: Option<String>,
        /// Apply without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Move a tenant under another parent; shows the plan and asks.
    Reparent {
        id: String,
        #[arg(long)]
        parent: String,
        #[arg(long)]
        decision: Option<String>,
        #[arg(long)]
        yes: bool,
    },
    /// Give a tenant a new id; the old one keeps resolving. Shows the plan and asks.
    Rename {
        from: String,
        to: String,
        #[arg(long)]
        decision: Option<String>,
        #[arg(long)]
        yes: bool,
    },
}

fn to_domain(t: pb::Tenant) -> Result<Tenant, CliError> {
    convert::tenant_from_pb(t).map_err(|e| {
        CliError::Failed(anyhow::anyhow!(
            "the server sent a tenant this CLI cannot read: {e}"
        ))
    })
}

fn print_tenant(t: &Tenant, format: Format) -> Result<(), CliError> {
    match format {
        Format::Table => {
            outln!("id:                  {}", t.id);
            outln!("name:                {}", t.display_name);
            outln!("level:               {}", t.level);
            outln!("branch:              {}", t.branch);
            outln!(
                "parent:              {}",
                t.parent.as_deref().unwrap_or("-")
            );
            outln!(
                "admin code:          {}",
                t.admin_code.as_deref().unwrap_or("-")
            );
            outln!("security level:      {}", t.security_level);
            outln!("state:               {}", t.state);
            outln!("deletion protection: {}", t.deletion_protection);
            outln!(
                "labels:              {}",
                t.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            outln!("quota:               {}", quota_line(&t.quota));
            outln!("handed to children:  {}", quota_line(&t.allocated));
            outln!("used:                {}", quota_line(&t.used));
            if !t.aliases.is_empty() {
                outln!(
                    "old ids:             {}",
                    t.aliases.iter().cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
        _ => print_data(format, t)?,
    }
    Ok(())
}

fn quota_line(q: &Quota) -> String {
    format!(
        "cpu {}, memory {}, storage {}, buckets {}, databases {}, namespaces {}",
        show_cpu(q.cpu_millis),
        show_bytes(q.memory_bytes),
        show_bytes(q.storage_bytes),
        q.buckets,
        q.databases,
        q.namespaces
    )
}

fn print_plan(p: &pb::PlanResponse, format: Format) -> Result<(), CliError> {
    if format != Format::Table {
        let moves: Vec<_> = p
            .moves
            .iter()
            .map(|m| serde_json::json!({"kind": m.kind, "id": m.id, "from": m.from, "to": m.to}))
            .collect();
        let quotas: Vec<_> = p
            .quotas
            .iter()
            .map(|q| {
                let f = |x: &Option<pb::Quota>| x.as_ref().map(|x| convert::quota_from_pb(Some(x)));
                serde_json::json!({"tenant": q.tenant, "quota_before": f(&q.quota_before), "quota_after": f(&q.quota_after),
                    "allocated_before": f(&q.allocated_before), "allocated_after": f(&q.allocated_after)})
            })
            .collect();
        print_data(
            format,
            &serde_json::json!({"summary": p.summary, "applied": p.applied, "revision": p.revision, "moves": moves, "quotas": quotas}),
        )?;
        return Ok(());
    }
    outln!("plan: {}", p.summary);
    if p.moves.is_empty() {
        outln!("  moves: none");
    }
    for m in &p.moves {
        outln!("  move {:<12} {:<24} {} -> {}", m.kind, m.id, m.from, m.to);
    }
    for q in &p.quotas {
        let show = |x: &Option<pb::Quota>| match x {
            Some(x) => quota_line(&convert::quota_from_pb(Some(x))),
            None => "(gone)".into(),
        };
        if q.quota_before != q.quota_after {
            outln!(
                "  quota of {}: {} -> {}",
                q.tenant,
                show(&q.quota_before),
                show(&q.quota_after)
            );
        }
        if q.allocated_before != q.allocated_after {
            outln!(
                "  handed out by {}: {} -> {}",
                q.tenant,
                show(&q.allocated_before),
                show(&q.allocated_after)
            );
        }
    }
    if p.applied {
        outln!("applied at revision {}", p.revision);
    }
    Ok(())
}

/// Asks before a reorganisation; without a terminal, --yes is required.
fn confirm(yes: bool) -> Result<bool, CliError> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Refused(anyhow::anyhow!(
            "not applied: this is a plan only; pass --yes to apply it without a terminal"
        )));
    }
    out!("apply this plan? [y/N] ");
    std::io::stdout().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).ok();
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

async fn reorganise(
    c: &ndc_api::Client,
    reorg: Reorg,
    decision: Option<String>,
    yes: bool,
    format: Format,
) -> Result<(), CliError> {
    let req = convert::reorg_to_pb(&reorg, decision.as_deref());
    let plan = c
        .call(|ch| {
            let (a, req) = (c.auth(), req.clone());
            async move { TenantsClient::with_interceptor(ch, a).plan(req).await }
        })
        .await
        .map_err(|s| status("cannot plan the reorganisation", s))?
        .into_inner();
    print_plan(&plan, format)?;
    if !confirm(yes)? {
        outln!("not applied");
        return Ok(());
    }
    // Apply exactly the plan shown: if the tenants changed meanwhile, the
    // server refuses and nothing happens.
    let mut req = req;
    req.expected_digest = plan.digest.clone();
    let done = c
        .write(|ch, a| {
            let req = req.clone();
            async move { TenantsClient::with_interceptor(ch, a).reorganise(req).await }
        })
        .await
        .map_err(|s| status("the reorganisation was refused", s))?
        .into_inner();
    if format == Format::Table {
        outln!("applied at revision {}", done.revision);
    } else {
        print_plan(&done, format)?;
    }
    Ok(())
}

pub async fn list_all(
    c: &ndc_api::Client,
    req: pb::ListTenantsRequest,
) -> Result<Vec<Tenant>, CliError> {
    let r = c
        .call(|ch| {
            let (a, req) = (c.auth(), req.clone());
            async move { TenantsClient::with_interceptor(ch, a).list(req).await }
        })
        .await
        .map_err(|s| status("cannot list tenants", s))?
        .into_inner();
    r.tenants.into_iter().map(to_domain).collect()
}

/// `ndc tenant list`: a table, or the data in `format`.
async fn print_list(
    c: &ndc_api::Client,
    level: Option<Level>,
    branch: Option<Branch>,
    parent: Option<String>,
    subtree: Option<String>,
    format: Format,
) -> Result<(), CliError> {
    let req = pb::ListTenantsRequest {
        level: level.map(|l| l.to_string()).unwrap_or_default(),
        branch: branch.map(|b| b.to_string()).unwrap_or_default(),
        parent: parent.unwrap_or_default(),
        subtree: subtree.unwrap_or_default(),
        stale: false,
    };
    let tenants = list_all(c, req).await?;
    match format {
        Format::Table => {
            outln!(
                "{:<24} {:<9} {:<18} {:<16} {:<6} {:<10} NAME",
                "ID",
                "LEVEL",
                "BRANCH",
                "PARENT",
                "CODE",
                "STATE"
            );
            for t in &tenants {
                outln!(
                    "{:<24} {:<9} {:<18} {:<16} {:<6} {:<10} {}",
                    t.id,
                    t.level,
                    t.branch,
                    t.parent.as_deref().unwrap_or("-"),
                    t.admin_code.as_deref().unwrap_or("-"),
                    t.state,
                    t.display_name
                );
            }
            outln!("{} tenant(s)", tenants.len());
        }
        _ => print_data(format, &tenants)?,
    }
    Ok(())
}

/// `ndc tenant tree`: the hierarchy drawn with what each tenant committed
/// out of its quota, or the data in `format`.
async fn print_tree(
    c: &ndc_api::Client,
    root: Option<String>,
    format: Format,
) -> Result<(), CliError> {
    let req = pb::ListTenantsRequest {
        subtree: root.clone().unwrap_or_default(),
        ..Default::default()
    };
    let tenants = list_all(c, req).await?;
    if format != Format::Table {
        print_data(format, &tenants)?;
        return Ok(());
    }
    let ids: std::collections::BTreeSet<&str> = tenants.iter().map(|t| t.id.as_str()).collect();
    let mut children: BTreeMap<Option<&str>, Vec<&Tenant>> = BTreeMap::new();
    for t in &tenants {
        // A tenant whose parent is not in the listing is a root here.
        let p = t.parent.as_deref().filter(|p| ids.contains(p));
        children.entry(p).or_default().push(t);
    }
    fn draw(
        t: &Tenant,
        prefix: &str,
        last: bool,
        top: bool,
        children: &BTreeMap<Option<&str>, Vec<&Tenant>>,
    ) -> Result<(), CliError> {
        let branch = if top {
            ""
        } else if last {
            "└── "
        } else {
            "├── "
        };
        outln!(
            "{prefix}{branch}{} \"{}\" [{}{}]  cpu {}/{}  mem {}/{}  storage {}/{}",
            t.id,
            t.display_name,
            t.level,
            t.admin_code
                .as_deref()
                .map(|c| format!(" {c}"))
                .unwrap_or_default(),
            show_cpu(t.allocated.cpu_millis + t.used.cpu_millis),
            show_cpu(t.quota.cpu_millis),
            show_bytes(t.allocated.memory_bytes + t.used.memory_bytes),
            show_bytes(t.quota.memory_bytes),
            show_bytes(t.allocated.storage_bytes + t.used.storage_bytes),
            show_bytes(t.quota.storage_bytes),
        );
        let next = if top {
            String::new()
        } else {
            format!("{prefix}{}", if last { "    " } else { "│   " })
        };
        if let Some(kids) = children.get(&Some(t.id.as_str())) {
            for (i, k) in kids.iter().enumerate() {
                draw(k, &next, i + 1 == kids.len(), false, children)?;
            }
        }
        Ok(())
    }
    outln!("(committed/quota: what is handed to children plus used, out of the quota)");
    for t in children.get(&None).into_iter().flatten() {
        draw(t, "", true, true, &children)?;
    }
    Ok(())
}

/// The tenant `id`; refused when there is none.
async fn existing(c: &ndc_api::Client, id: &str) -> Result<Tenant, CliError> {
    get(c, id)
        .await?
        .ok_or_else(|| CliError::Refused(anyhow::anyhow!("tenant {id} not found")))
}

/// Sends a tenant update; the tenant as it is after it.
async fn update(c: &ndc_api::Client, req: pb::UpdateTenantRequest) -> Result<Tenant, CliError> {
    let id = req.id.clone();
    let r = c
        .write(|ch, a| {
            let req = req.clone();
            async move { TenantsClient::with_interceptor(ch, a).update(req).await }
        })
        .await
        .map_err(|s| status(format!("cannot update tenant {id}"), s))?
        .into_inner();
    to_domain(
        r.tenant
            .ok_or_else(|| CliError::Failed(anyhow::anyhow!("no tenant in the answer")))?,
    )
}

/// Deletes a tenant; the revision of the deletion.
async fn delete(c: &ndc_api::Client, id: &str, decision: Option<String>) -> Result<u64, CliError> {
    let req = pb::DeleteTenantRequest {
        id: id.to_string(),
        decision: decision.unwrap_or_default(),
    };
    let r = c
        .write(|ch, a| {
            let req = req.clone();
            async move { TenantsClient::with_interceptor(ch, a).delete(req).await }
        })
        .await
        .map_err(|s| status(format!("cannot delete tenant {id}"), s))?
        .into_inner();
    Ok(r.revision)
}

/// What a merge goes into: an existing tenant, or a new one that takes the
/// first source's level, branch, parent and security level.
async fn merge_target(
    c: &ndc_api::Client,
    sources: &[String],
    into: Option<String>,
    new_id: Option<String>,
    new_name: Option<String>,
    new_code: Option<String>,
    new_parent: Option<String>,
) -> Result<MergeTarget, CliError> {
    Ok(match (into, new_id) {
        (Some(id), _) => MergeTarget::Existing(id),
        (None, Some(id)) => {
            let first = get(c, &sources[0]).await?.ok_or_else(|| {
                CliError::Refused(anyhow::anyhow!("tenant {} not found", sources[0]))
            })?;
            MergeTarget::New(TenantSpec {
                id,
                display_name: new_name.unwrap_or_default(),
                level: first.level,
                branch: first.branch,
                parent: new_parent.or(first.parent.clone()),
                admin_code: new_code,
                security_level: first.security_level,
                labels: BTreeMap::new(),
                quota: Quota::default(),
                deletion_protection: false,
            })
        }
        (None, None) => {
            return Err(CliError::Failed(anyhow::anyhow!(
                "give --into ID or --new-id ID"
            )))
        }
    })
}

pub async fn run(cmd: TenantCommand, conn: &Conn, format: Format) -> Result<(), CliError> {
    let c = client(conn).await?;
    match cmd {
        TenantCommand::Create {
            id,
            name,
            level,
            branch,
            parent,
            code,
            security_level,
            labels,
            quota,
            deletion_protection,
            decision,
        } => {
            let spec = TenantSpec {
                id,
                display_name: name,
                level,
                branch,
                parent,
                admin_code: code,
                security_level,
                labels: labels.into_iter().collect(),
                quota: quota.over(Quota::default()),
                deletion_protection,
            };
            let t = create(&c, spec, decision).await?;
            print_tenant(&t, format)?;
            Ok(())
        }
        TenantCommand::Get { id } => {
            print_tenant(&existing(&c, &id).await?, format)?;
            Ok(())
        }
        TenantCommand::List {
            level,
            branch,
            parent,
            subtree,
        } => print_list(&c, level, branch, parent, subtree, format).await,
        TenantCommand::Tree { root } => print_tree(&c, root, format).await,
        TenantCommand::Update {
            id,
            name,
            quota,
            labels,
            clear_labels,
            state,
            deletion_protection,
            security_level,
            decision,
        } => {
            let quota_pb = match quota.any() {
                true => Some(convert::quota_to_pb(
                    &quota.over(existing(&c, &id).await?.quota),
                )),
                false => None,
            };
            let req = pb::UpdateTenantRequest {
                id: id.clone(),
                display_name: name,
                quota: quota_pb,
                set_labels: clear_labels || !labels.is_empty(),
                labels: labels.into_iter().collect(),
                state,
                deletion_protection,
                security_level: security_level.map(u32::from),
                decision: decision.unwrap_or_default(),
            };
            let t = update(&c, req).await?;
            print_tenant(&t, format)?;
            Ok(())
        }
        TenantCommand::Delete { id, decision } => {
            let revision = delete(&c, &id, decision).await?;
            outln!("tenant {id} deleted at revision {revision}");
            Ok(())
        }
        TenantCommand::Merge {
            sources,
            into,
            new_id,
            new_name,
            new_code,
            new_parent,
            decision,
            yes,
        } => {
            let into =
                merge_target(&c, &sources, into, new_id, new_name, new_code, new_parent).await?;
            reorganise(&c, Reorg::Merge { sources, into }, decision, yes, format).await
        }
        TenantCommand::Reparent {
            id,
            parent,
            decision,
            yes,
        } => {
            reorganise(
                &c,
                Reorg::Reparent { tenant: id, parent },
                decision,
                yes,
                format,
            )
            .await
        }
        TenantCommand::Rename {
            from,
            to,
            decision,
            yes,
        } => reorganise(&c, Reorg::Rename { from, to }, decision, yes, format).await,
    }
}

pub async fn create(
    c: &ndc_api::Client,
    spec: TenantSpec,
    decision: Option<String>,
) -> Result<Tenant, CliError> {
    let id = spec.id.clone();
    let req = pb::CreateTenantRequest {
        spec: Some(convert::spec_to_pb(&spec)),
        decision: decision.unwrap_or_default(),
    };
    let r = c
        .write(|ch, a| {
            let req = req.clone();
            async move { TenantsClient::with_interceptor(ch, a).create(req).await }
        })
        .await
        .map_err(|s| status(format!("cannot create tenant {id}"), s))?
        .into_inner();
    to_domain(
        r.tenant
            .ok_or_else(|| CliError::Failed(anyhow::anyhow!("no tenant in the answer")))?,
    )
}

/// The tenant, or None if there is none with that id.
pub async fn get(c: &ndc_api::Client, id: &str) -> Result<Option<Tenant>, CliError> {
    let req = pb::GetTenantRequest {
        id: id.to_string(),
        stale: false,
    };
    match c
        .call(|ch| {
            let (a, req) = (c.auth(), req.clone());
            async move { TenantsClient::with_interceptor(ch, a).get(req).await }
        })
        .await
    {
        Ok(r) => r.into_inner().tenant.map(to_domain).transpose(),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(status(format!("cannot read tenant {id}"), s)),
    }
}
