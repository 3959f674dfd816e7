//! `ndc apply -f FILE`: create or update what YAML documents describe.
//!
//! ```yaml
//! kind: Tenant
//! decision: "QĐ 19/2025/QĐ-TTg"   # optional, recorded in the audit log
//! spec:
//!   id: ha-noi
//!   display_name: Thành phố Hà Nội
//!   level: province
//!   branch: state
//!   parent: vn
//!   admin_code: "01"
//!   security_level: 3
//!   quota: { cpu_millis: 400000, memory_bytes: 2199023255552 }
//! ```

use std::path::PathBuf;

use ndc_api::convert;
use ndc_api::tenants::tenants_client::TenantsClient;
use ndc_api::tenants::{self as pb};
use ndc_core::TenantSpec;
use serde::Deserialize;

use crate::output::{client, outln, status, CliError, Conn, Format};
use crate::tenant_cmd;

#[derive(clap::Args, Debug)]
#[command(after_help = "Example:\n  ndc apply -f samples/national/tenants.yaml")]
pub struct ApplyArgs {
    /// A YAML file with one or more documents separated by ---; '-' reads standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct Document {
    kind: String,
    #[serde(default)]
    decision: Option<String>,
    spec: TenantSpec,
}

fn parse(text: &str) -> Result<Vec<Document>, String> {
    let docs: Vec<Document> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    if docs.is_empty() {
        return Err("the file has no documents".into());
    }
    for (i, d) in docs.iter().enumerate() {
        if d.kind != "Tenant" {
            return Err(format!(
                "document {}: unknown kind {:?}; this version applies kind: Tenant",
                i + 1,
                d.kind
            ));
        }
        ndc_core::validate_spec(d.spec.clone())
            .map_err(|e| format!("document {} ({}): {e}", i + 1, d.spec.id))?;
    }
    Ok(docs)
}

pub async fn run(args: ApplyArgs, conn: &Conn, _format: Format) -> Result<(), CliError> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| {
            CliError::Failed(anyhow::anyhow!(e).context("cannot read standard input"))
        })?
    } else {
        std::fs::read_to_string(&args.file).map_err(|e| {
            CliError::Failed(
                anyhow::anyhow!(e).context(format!("cannot read {}", args.file.display())),
            )
        })?
    };
    let c = client(conn).await?;
    apply_text(&c, &text, &args.file.display().to_string(), true).await?;
    Ok(())
}

/// What applying a file did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
}

/// Creates or updates the tenants `text` describes; every document is
/// checked before anything is sent. `verbose` prints a line per tenant.
pub async fn apply_text(
    c: &ndc_api::Client,
    text: &str,
    source: &str,
    verbose: bool,
) -> Result<Applied, CliError> {
    let docs = parse(text).map_err(|e| {
        CliError::Refused(anyhow::anyhow!(e).context(format!("{source} was not applied")))
    })?;
    let mut done = Applied::default();
    let say = |line: String| -> Result<(), CliError> {
        if verbose {
            outln!("{line}");
        }
        Ok(())
    };
    for d in docs {
        let id = d.spec.id.clone();
        match tenant_cmd::get(c, &id).await? {
            None => {
                tenant_cmd::create(c, d.spec, d.decision).await?;
                done.created += 1;
                say(format!("tenant/{id} created"))?;
            }
            Some(current) => {
                let spec = ndc_core::validate_spec(d.spec)
                    .map_err(|e| CliError::Refused(anyhow::anyhow!("{id}: {e}")))?;
                if current.parent != spec.parent && !current.aliases.contains(&id) {
                    return Err(CliError::Refused(anyhow::anyhow!(
                        "tenant/{id}: its parent is {:?}, the file says {:?}; use ndc tenant reparent to move it",
                        current.parent,
                        spec.parent
                    )));
                }
                let same = current.display_name == spec.display_name
                    && current.quota == spec.quota
                    && current.labels == spec.labels
                    && current.deletion_protection == spec.deletion_protection
                    && current.security_level == spec.security_level;
                if same {
                    done.unchanged += 1;
                    say(format!("tenant/{id} unchanged"))?;
                    continue;
                }
                let req = pb::UpdateTenantRequest {
                    id: id.clone(),
                    display_name: Some(spec.display_name.clone()),
                    quota: Some(convert::quota_to_pb(&spec.quota)),
                    set_labels: true,
                    labels: spec.labels.clone().into_iter().collect(),
                    state: None,
                    deletion_protection: Some(spec.deletion_protection),
                    security_level: Some(u32::from(spec.security_level)),
                    decision: d.decision.clone().unwrap_or_default(),
                };
                c.write(|ch, a| {
                    let req = req.clone();
                    async move { TenantsClient::with_interceptor(ch, a).update(req).await }
                })
                .await
                .map_err(|s| status(format!("cannot update tenant {id}"), s))?;
                done.updated += 1;
                say(format!("tenant/{id} updated"))?;
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_checked_before_anything_is_sent() {
        let ok = "kind: Tenant\nspec:\n  id: vn\n  display_name: Việt Nam\n  level: central\n  branch: state\n  security_level: 4\n---\nkind: Tenant\nspec:\n  id: ha-noi\n  display_name: Hà Nội\n  level: province\n  branch: state\n  parent: vn\n  admin_code: \"01\"\n  security_level: 3\n";
        assert_eq!(parse(ok).map(|d| d.len()), Ok(2));
        for (bad, why) in [
            ("kind: Tenant\nspec: [", ""),
            ("kind: Namespace\nspec:\n  id: x\n  display_name: X\n  level: central\n  branch: state\n  security_level: 1\n", "unknown kind"),
            ("kind: Tenant\nspec:\n  id: x\n  display_name: X\n  level: central\n  branch: state\n  security_level: 1\n  colour: red\n", "colour"),
            ("kind: Tenant\nspec:\n  id: X\n  display_name: X\n  level: central\n  branch: state\n  security_level: 1\n", "position 0"),
            ("kind: Tenant\nspec:\n  id: x\n  display_name: X\n  level: district\n  branch: state\n  security_level: 1\n", "district"),
            ("", "no documents"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
