//! The tenants of the rollout: the samples' central bodies and provinces,
//! generated communes, their quotas, and the services each level may use.

use super::*;

pub(super) fn quota(cores: u64, stores: u64) -> Quota {
    Quota {
        cpu_millis: cores * 1000,
        memory_bytes: cores << 31,
        storage_bytes: stores * (64 << 30),
        buckets: stores,
        databases: stores,
        namespaces: stores,
    }
}

pub(super) fn spec(
    id: String,
    name: String,
    level: Level,
    parent: &str,
    code: Option<String>,
    q: Quota,
) -> TenantSpec {
    TenantSpec {
        id,
        display_name: name,
        level,
        branch: Branch::State,
        parent: Some(parent.into()),
        admin_code: code,
        security_level: 2,
        labels: BTreeMap::new(),
        quota: q,
        deletion_protection: false,
    }
}

/// The tenants of the rollout, parents first.
pub(super) fn tenants(scale: f64) -> Vec<TenantSpec> {
    let communes = ((COMMUNES as f64 * scale).round() as usize).max(1);
    let provinces = PROVINCES.min(communes.max(1)).max(1);
    let central = ((CENTRAL as f64 * scale.max(0.1)).round() as usize).clamp(1, CENTRAL);
    let commune_q = quota(4, 8);
    let mut out = Vec::new();
    for i in 0..central {
        out.push(spec(
            format!("bo-{i:02}"),
            format!("Bộ số {}", i + 1),
            Level::Central,
            "vn",
            None,
            quota(64, 16),
        ));
    }
    let per = communes.div_ceil(provinces);
    for p in 0..provinces {
        let here = per.min(communes.saturating_sub(p * per));
        let q = quota(64 + 4 * here as u64, 16 + 8 * here as u64);
        out.push(spec(
            format!("tinh-{p:02}"),
            format!("Tỉnh số {}", p + 1),
            Level::Province,
            "vn",
            Some(format!("{:02}", p + 1)),
            q,
        ));
    }
    for c in 0..communes {
        let p = c / per;
        out.push(spec(
            format!("xa-{c:04}"),
            format!("Xã số {}", c + 1),
            Level::Commune,
            &format!("tinh-{p:02}"),
            Some(format!("{:05}", 10_000 + c)),
            commune_q,
        ));
    }
    out
}

pub(super) fn level_rank(l: &str) -> u8 {
    match l {
        "central" => 0,
        "province" => 1,
        _ => 2,
    }
}

/// The workload services a tenant at `level` may subscribe to: its level in
/// scope, every dependency offered at its level, one instance reachable.
pub(super) fn allowed(services: &[SharedService], level: Level) -> Vec<String> {
    let rank = level_rank(level.as_str());
    let covers = |s: &SharedService| {
        level_rank(&s.spec.scope.from) <= rank && rank <= level_rank(&s.spec.scope.to)
    };
    services
        .iter()
        .filter(|s| s.spec.workload.is_some() && covers(s))
        .filter(|s| !(level == Level::Central && s.spec.topology == "per-province"))
        .filter(|s| {
            s.spec.depends_on.iter().all(|d| {
                services
                    .iter()
                    .any(|o| o.spec.capability == *d && covers(o))
            })
        })
        .map(|s| s.name_any())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rollout_has_every_level_and_valid_tenants() {
        let t = tenants(0.01);
        assert!(t.iter().any(|t| t.level == Level::Central));
        assert_eq!(t.iter().filter(|t| t.level == Level::Province).count(), 33);
        assert_eq!(t.iter().filter(|t| t.level == Level::Commune).count(), 33);
        for s in &t {
            ndc_core::validate_spec(s.clone()).expect("valid");
        }
        let full = tenants(1.0);
        assert_eq!(
            full.iter().filter(|t| t.level == Level::Commune).count(),
            COMMUNES
        );
        assert_eq!(
            full.iter().filter(|t| t.level == Level::Province).count(),
            PROVINCES
        );
    }
}
