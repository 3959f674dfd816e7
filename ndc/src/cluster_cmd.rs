//! `ndc cluster status|add|promote|remove`.

use ndc_api::cluster::cluster_client::ClusterClient;
use ndc_api::cluster::{
    AddLearnerRequest, MembershipResponse, PromoteRequest, RemoveRequest, StatusRequest,
    StatusResponse,
};
use serde_json::json;

use crate::output::{client, outln, print_data, status, CliError, Conn, Format};

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show every reachable member's view: role, term, indexes, replication lag.
    Status,
    /// Add a node as a learner (it must already be running); returns once it has caught up.
    #[command(after_help = "Example:\n  ndc cluster add 4 127.0.0.1:7703")]
    Add { id: u64, addr: String },
    /// Make a learner a voter.
    Promote { id: u64 },
    /// Remove a member; it stops taking part and refuses requests.
    Remove { id: u64 },
}

fn members_json(r: &MembershipResponse) -> serde_json::Value {
    json!({
        "log_index": r.log_index,
        "members": r.members.iter().map(|m| json!({"id": m.id, "addr": m.addr, "voter": m.voter})).collect::<Vec<_>>(),
    })
}

fn print_members(r: &MembershipResponse, format: Format) -> Result<(), CliError> {
    match format {
        Format::Json | Format::Yaml => print_data(format, &members_json(r))?,
        Format::Table => {
            outln!("{:<6} {:<24} ROLE", "ID", "ADDRESS");
            for m in &r.members {
                outln!(
                    "{:<6} {:<24} {}",
                    m.id,
                    m.addr,
                    if m.voter { "voter" } else { "learner" }
                );
            }
            outln!("membership changed at log index {}", r.log_index);
        }
    }
    Ok(())
}

fn status_json(s: &StatusResponse) -> serde_json::Value {
    json!({
        "id": s.id, "addr": s.addr, "state": s.state, "leader_id": s.leader_id, "leader_addr": s.leader_addr,
        "term": s.term, "last_log_index": s.last_log_index, "commit_index": s.commit_index,
        "applied_index": s.applied_index, "snapshot_index": s.snapshot_index, "purged_index": s.purged_index,
        "revision": s.revision, "compacted_revision": s.compacted_revision, "joint": s.joint,
        "members": s.members.iter().map(|m| json!({"id": m.id, "addr": m.addr, "voter": m.voter})).collect::<Vec<_>>(),
        "replication": s.replication.iter().map(|r| json!({"id": r.id, "matched_index": r.matched_index, "lag": r.lag})).collect::<Vec<_>>(),
    })
}

/// `ndc cluster status`: every member's own view, and the members as the
/// leader sees them.
async fn print_status(c: &ndc_api::Client, format: Format) -> Result<(), CliError> {
    let mut views = Vec::new();
    let mut unreachable = Vec::new();
    for ep in c.endpoints() {
        let ch = ndc_api::client::channel(ep).map_err(|e| CliError::Failed(e.into()))?;
        match ClusterClient::with_interceptor(ch, c.auth())
            .status(StatusRequest {})
            .await
        {
            Ok(r) => views.push(r.into_inner()),
            Err(s) => unreachable.push((ep.clone(), s.message().to_string())),
        }
    }
    if views.is_empty() {
        let detail = unreachable
            .iter()
            .map(|(ep, m)| format!("{ep}: {m}"))
            .collect::<Vec<_>>()
            .join("; ");
        return Err(CliError::Failed(
            anyhow::anyhow!(detail).context("no member answered"),
        ));
    }
    match format {
        Format::Json | Format::Yaml => print_data(
            format,
            &json!({
                "nodes": views.iter().map(status_json).collect::<Vec<_>>(),
                "unreachable": unreachable.iter().map(|(ep, m)| json!({"endpoint": ep, "error": m})).collect::<Vec<_>>(),
            }),
        )?,
        Format::Table => {
            outln!(
                "{:<4} {:<22} {:<9} {:<7} {:>6} {:>9} {:>9} {:>9} {:>9}",
                "ID",
                "ADDRESS",
                "STATE",
                "LEADER",
                "TERM",
                "LAST-LOG",
                "COMMIT",
                "APPLIED",
                "SNAPSHOT"
            );
            for s in &views {
                outln!(
                    "{:<4} {:<22} {:<9} {:<7} {:>6} {:>9} {:>9} {:>9} {:>9}",
                    s.id,
                    s.addr,
                    s.state,
                    s.leader_id
                        .map(|l| l.to_string())
                        .unwrap_or_else(|| "-".into()),
                    s.term,
                    s.last_log_index,
                    s.commit_index,
                    s.applied_index,
                    s.snapshot_index
                );
            }
            for (ep, m) in &unreachable {
                outln!("{:<4} {:<22} unreachable: {m}", "?", ep);
            }
            if let Some(leader) = views.iter().find(|s| s.state == "leader") {
                outln!();
                outln!("members (as the leader, node {}, sees them):", leader.id);
                for m in &leader.members {
                    let lag = leader
                        .replication
                        .iter()
                        .find(|r| r.id == m.id)
                        .map(|r| format!("lag {}", r.lag))
                        .unwrap_or_else(|| "leader".into());
                    outln!(
                        "  {:<4} {:<22} {:<8} {}",
                        m.id,
                        m.addr,
                        if m.voter { "voter" } else { "learner" },
                        lag
                    );
                }
            }
        }
    }
    Ok(())
}

pub async fn run(cmd: ClusterCommand, conn: &Conn, format: Format) -> Result<(), CliError> {
    let c = client(conn).await?;
    match cmd {
        ClusterCommand::Status => print_status(&c, format).await,
        ClusterCommand::Add { id, addr } => {
            let r = c
                .call(|ch| {
                    let addr = addr.clone();
                    let a = c.auth();
                    async move {
                        ClusterClient::with_interceptor(ch, a)
                            .add_learner(AddLearnerRequest { id, addr })
                            .await
                    }
                })
                .await
                .map_err(|s| status(format!("cannot add node {id}"), s))?;
            print_members(r.get_ref(), format)?;
            Ok(())
        }
        ClusterCommand::Promote { id } => {
            let r = c
                .call(|ch| {
                    let a = c.auth();
                    async move {
                        ClusterClient::with_interceptor(ch, a)
                            .promote(PromoteRequest { id })
                            .await
                    }
                })
                .await
                .map_err(|s| status(format!("cannot promote node {id}"), s))?;
            print_members(r.get_ref(), format)?;
            Ok(())
        }
        ClusterCommand::Remove { id } => {
            let r = c
                .call(|ch| {
                    let a = c.auth();
                    async move {
                        ClusterClient::with_interceptor(ch, a)
                            .remove(RemoveRequest { id })
                            .await
                    }
                })
                .await
                .map_err(|s| status(format!("cannot remove node {id}"), s))?;
            print_members(r.get_ref(), format)?;
            Ok(())
        }
    }
}
