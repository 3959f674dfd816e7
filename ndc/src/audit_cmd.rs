//! `ndc audit list|verify`.

use ndc_api::tenants::audit_client::AuditClient;
use ndc_api::tenants::{ListAuditRequest, VerifyAuditRequest};
use serde_json::json;

use crate::output::{client, outln, print_data, status, CliError, Conn, Format};

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Show accepted changes, oldest first.
    #[command(after_help = "Example:\n  ndc audit list --target ha-noi --limit 20")]
    List {
        #[arg(long, default_value = "")]
        actor: String,
        /// e.g. tenant.create, tenant.merge
        #[arg(long, default_value = "")]
        action: String,
        /// A tenant id the change concerns.
        #[arg(long, default_value = "")]
        target: String,
        /// First record number.
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Recompute the hash chain; exit 1 and name the first bad record if it was altered.
    Verify,
}

pub async fn run(cmd: AuditCommand, conn: &Conn, format: Format) -> Result<(), CliError> {
    let c = client(conn).await?;
    match cmd {
        AuditCommand::List {
            actor,
            action,
            target,
            from,
            limit,
        } => {
            let req = ListAuditRequest {
                from_seq: from,
                limit,
                actor,
                action,
                target,
            };
            let r = c
                .call(|ch| {
                    let (a, req) = (c.auth(), req.clone());
                    async move { AuditClient::with_interceptor(ch, a).list(req).await }
                })
                .await
                .map_err(|s| status("cannot list the audit log", s))?
                .into_inner();
            match format {
                Format::Table => {
                    outln!(
                        "{:>5} {:>9} {:<24} {:<16} {:<18} {:<30} DECISION",
                        "SEQ",
                        "REVISION",
                        "WHEN (UTC)",
                        "ACTOR",
                        "ACTION",
                        "TARGET"
                    );
                    for a in &r.records {
                        outln!(
                            "{:>5} {:>9} {:<24} {:<16} {:<18} {:<30} {}",
                            a.seq,
                            a.revision,
                            utc(a.at_ms),
                            a.actor,
                            a.action,
                            a.target,
                            a.decision
                        );
                    }
                }
                _ => {
                    let v: Vec<_> = r
                        .records
                        .iter()
                        .map(|a| {
                            json!({"seq": a.seq, "revision": a.revision, "at_ms": a.at_ms, "actor": a.actor,
                                   "action": a.action, "target": a.target, "decision": a.decision,
                                   "prev_hash": a.prev_hash, "hash": a.hash})
                        })
                        .collect();
                    print_data(format, &v)?;
                }
            }
            Ok(())
        }
        AuditCommand::Verify => {
            let r = c
                .call(|ch| {
                    let a = c.auth();
                    async move {
                        AuditClient::with_interceptor(ch, a)
                            .verify(VerifyAuditRequest {})
                            .await
                    }
                })
                .await
                .map_err(|s| status("cannot verify the audit log", s))?
                .into_inner();
            if format != Format::Table {
                print_data(
                    format,
                    &json!({"ok": r.ok, "checked": r.checked, "first_bad_seq": r.first_bad_seq, "problem": r.problem}),
                )?;
            }
            if r.ok {
                if format == Format::Table {
                    outln!("audit chain intact: {} record(s) verified", r.checked);
                }
                Ok(())
            } else {
                Err(CliError::Refused(anyhow::anyhow!(
                    "audit chain broken at record {}: {} ({} record(s) before it verified)",
                    r.first_bad_seq,
                    r.problem,
                    r.checked
                )))
            }
        }
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from a day count (proleptic Gregorian calendar).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn timestamps() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_751_328_000_000), "2025-07-01T00:00:00Z");
    }
}
