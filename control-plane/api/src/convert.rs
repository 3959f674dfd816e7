//! Conversions between the tenancy domain types and their protobuf form.
//! Strings that name an enum (level, branch, state) are parsed here, so a
//! bad one is refused with the list of allowed values.

use ndc_core as d;

use crate::tenants as pb;

pub fn quota_to_pb(q: &d::Quota) -> pb::Quota {
    pb::Quota {
        cpu_millis: q.cpu_millis,
        memory_bytes: q.memory_bytes,
        storage_bytes: q.storage_bytes,
        buckets: q.buckets,
        databases: q.databases,
        namespaces: q.namespaces,
    }
}

pub fn quota_from_pb(q: Option<&pb::Quota>) -> d::Quota {
    q.map(|q| d::Quota {
        cpu_millis: q.cpu_millis,
        memory_bytes: q.memory_bytes,
        storage_bytes: q.storage_bytes,
        buckets: q.buckets,
        databases: q.databases,
        namespaces: q.namespaces,
    })
    .unwrap_or_default()
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn security_level(n: u32) -> Result<u8, String> {
    u8::try_from(n)
        .map_err(|_| format!("security level {n} is out of range: use 1 to 5 (Decree 85/2016)"))
}

pub fn spec_to_pb(s: &d::TenantSpec) -> pb::TenantSpec {
    pb::TenantSpec {
        id: s.id.clone(),
        display_name: s.display_name.clone(),
        level: s.level.to_string(),
        branch: s.branch.to_string(),
        parent: s.parent.clone().unwrap_or_default(),
        admin_code: s.admin_code.clone().unwrap_or_default(),
        security_level: u32::from(s.security_level),
        labels: s.labels.clone().into_iter().collect(),
        quota: Some(quota_to_pb(&s.quota)),
        deletion_protection: s.deletion_protection,
    }
}

pub fn spec_from_pb(s: pb::TenantSpec) -> Result<d::TenantSpec, String> {
    Ok(d::TenantSpec {
        level: s.level.parse()?,
        branch: s.branch.parse()?,
        parent: opt(&s.parent),
        admin_code: opt(&s.admin_code),
        security_level: security_level(s.security_level)?,
        labels: s.labels.into_iter().collect(),
        quota: quota_from_pb(s.quota.as_ref()),
        deletion_protection: s.deletion_protection,
        id: s.id,
        display_name: s.display_name,
    })
}

pub fn tenant_to_pb(t: &d::Tenant) -> pb::Tenant {
    pb::Tenant {
        spec: Some(spec_to_pb(&t.spec())),
        state: t.state.to_string(),
        allocated: Some(quota_to_pb(&t.allocated)),
        used: Some(quota_to_pb(&t.used)),
        aliases: t.aliases.iter().cloned().collect(),
        claims: t.claims.iter().cloned().collect(),
        subscriptions: t.subscriptions.iter().cloned().collect(),
    }
}

pub fn tenant_from_pb(t: pb::Tenant) -> Result<d::Tenant, String> {
    let spec = spec_from_pb(t.spec.ok_or("tenant without spec")?)?;
    Ok(d::Tenant {
        id: spec.id,
        display_name: spec.display_name,
        level: spec.level,
        branch: spec.branch,
        parent: spec.parent,
        admin_code: spec.admin_code,
        security_level: spec.security_level,
        labels: spec.labels,
        quota: spec.quota,
        state: t.state.parse()?,
        deletion_protection: spec.deletion_protection,
        allocated: quota_from_pb(t.allocated.as_ref()),
        used: quota_from_pb(t.used.as_ref()),
        aliases: t.aliases.into_iter().collect(),
        claims: t.claims.into_iter().collect(),
        subscriptions: t.subscriptions.into_iter().collect(),
    })
}

pub fn patch_from_pb(r: &pb::UpdateTenantRequest) -> Result<d::TenantPatch, String> {
    Ok(d::TenantPatch {
        display_name: r.display_name.clone(),
        quota: r.quota.as_ref().map(|q| quota_from_pb(Some(q))),
        labels: r.set_labels.then(|| r.labels.clone().into_iter().collect()),
        state: r.state.as_deref().map(str::parse).transpose()?,
        deletion_protection: r.deletion_protection,
        security_level: r.security_level.map(security_level).transpose()?,
    })
}

pub fn reorg_from_pb(r: pb::ReorgRequest) -> Result<d::Reorg, String> {
    match r.op {
        Some(pb::reorg_request::Op::Merge(m)) => {
            let into = match (m.into.is_empty(), m.new_target) {
                (false, None) => d::MergeTarget::Existing(m.into),
                (true, Some(spec)) => d::MergeTarget::New(spec_from_pb(spec)?),
                (false, Some(_)) => {
                    return Err(
                        "a merge goes into an existing tenant or a new one, not both".into(),
                    )
                }
                (true, None) => {
                    return Err("a merge needs a target: an existing tenant or a new one".into())
                }
            };
            Ok(d::Reorg::Merge {
                sources: m.sources,
                into,
            })
        }
        Some(pb::reorg_request::Op::Reparent(p)) => Ok(d::Reorg::Reparent {
            tenant: p.tenant,
            parent: p.parent,
        }),
        Some(pb::reorg_request::Op::Rename(r)) => Ok(d::Reorg::Rename {
            from: r.from,
            to: r.to,
        }),
        None => Err("the reorganisation is empty: give a merge, reparent or rename".into()),
    }
}

pub fn reorg_to_pb(r: &d::Reorg, decision: Option<&str>) -> pb::ReorgRequest {
    let op = match r {
        d::Reorg::Merge { sources, into } => {
            let (into, new_target) = match into {
                d::MergeTarget::Existing(id) => (id.clone(), None),
                d::MergeTarget::New(spec) => (String::new(), Some(spec_to_pb(spec))),
            };
            pb::reorg_request::Op::Merge(pb::Merge {
                sources: sources.clone(),
                into,
                new_target,
            })
        }
        d::Reorg::Reparent { tenant, parent } => pb::reorg_request::Op::Reparent(pb::Reparent {
            tenant: tenant.clone(),
            parent: parent.clone(),
        }),
        d::Reorg::Rename { from, to } => pb::reorg_request::Op::Rename(pb::Rename {
            from: from.clone(),
            to: to.clone(),
        }),
    };
    pb::ReorgRequest {
        op: Some(op),
        decision: decision.unwrap_or_default().to_string(),
        expected_digest: String::new(),
    }
}

pub fn plan_to_pb(p: &d::Plan, applied: bool, revision: u64, digest: String) -> pb::PlanResponse {
    pb::PlanResponse {
        digest,
        summary: p.summary.clone(),
        moves: p
            .moves
            .iter()
            .map(|m| pb::Move {
                kind: match m.kind {
                    d::MoveKind::Child => "child",
                    d::MoveKind::Claim => "claim",
                    d::MoveKind::Subscription => "subscription",
                    d::MoveKind::Alias => "alias",
                    d::MoveKind::Tenant => "tenant",
                }
                .into(),
                id: m.id.clone(),
                from: m.from.clone(),
                to: m.to.clone(),
            })
            .collect(),
        quotas: p
            .quotas
            .iter()
            .map(|q| pb::QuotaChange {
                tenant: q.tenant.clone(),
                quota_before: q.quota_before.as_ref().map(quota_to_pb),
                quota_after: q.quota_after.as_ref().map(quota_to_pb),
                allocated_before: q.allocated_before.as_ref().map(quota_to_pb),
                allocated_after: q.allocated_after.as_ref().map(quota_to_pb),
            })
            .collect(),
        applied,
        revision,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_round_trip() {
        let spec = d::TenantSpec {
            id: "ha-noi".into(),
            display_name: "Hà Nội".into(),
            level: d::Level::Province,
            branch: d::Branch::State,
            parent: Some("vn".into()),
            admin_code: Some("01".into()),
            security_level: 3,
            labels: [("region".to_string(), "north".to_string())].into(),
            quota: d::Quota {
                cpu_millis: 1,
                memory_bytes: 2,
                storage_bytes: 3,
                buckets: 4,
                databases: 5,
                namespaces: 6,
            },
            deletion_protection: true,
        };
        assert_eq!(spec_from_pb(spec_to_pb(&spec)), Ok(spec));
        let mut bad = spec_to_pb(
            &spec_from_pb(spec_to_pb(
                &spec_from_pb(pb::TenantSpec {
                    level: "province".into(),
                    branch: "state".into(),
                    ..Default::default()
                })
                .unwrap(),
            ))
            .unwrap(),
        );
        bad.level = "district".into();
        assert!(spec_from_pb(bad.clone())
            .unwrap_err()
            .contains("unknown level"));
        bad.level = "province".into();
        bad.security_level = 300;
        assert!(spec_from_pb(bad).unwrap_err().contains("out of range"));
    }
}
