//! The shared-service catalogue of the national framework, and tenants'
//! subscriptions to it. One platform, not duplicates: a second service
//! offering a capability already shared at an overlapping scope is refused
//! (naming the one there is), unless an exemption decision is recorded.
//!
//! The store keeps services and subscriptions as JSON (where:
//! `ndc_store::keys`). These types also travel in log entries (postcard):
//! no tagged enums, no skipped fields.

use serde::{Deserialize, Serialize};

use crate::{Level, Registry, Tenant};

use crate::claims::Refusal;
use crate::domain::{Actor, RejectKind, Role};

/// How a service is deployed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// One instance for the whole country.
    #[default]
    Central,
    /// One instance per province tenant.
    PerProvince,
}

impl Topology {
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Central => "central",
            Topology::PerProvince => "per-province",
        }
    }

    pub fn parse(s: &str) -> Option<Topology> {
        match s {
            "central" | "" => Some(Topology::Central),
            "per-province" => Some(Topology::PerProvince),
            _ => None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// A DNS label: the service's `svc-<name>` namespace comes from it.
    pub name: String,
    pub display_name: String,
    pub capability: String,
    /// application, platform, infrastructure or data.
    pub layer: String,
    /// The highest and lowest levels served.
    pub from: Level,
    pub to: Level,
    pub topology: Topology,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Bytes of database per subscriber (0: none).
    #[serde(default)]
    pub per_tenant_database_bytes: u64,
    /// Bytes of bucket per subscriber (0: none).
    #[serde(default)]
    pub per_tenant_bucket_bytes: u64,
    /// The tenant that runs it.
    #[serde(default)]
    pub owner: Option<String>,
    /// Whether it runs as a workload (infrastructure may be a record only).
    #[serde(default)]
    pub workload: bool,
}

impl ServiceSpec {
    pub fn covers(&self, level: Level) -> bool {
        self.from <= level && level <= self.to
    }

    fn overlaps(&self, other: &ServiceSpec) -> bool {
        self.from <= other.to && other.from <= self.to
    }

    pub fn scope(&self) -> String {
        format!("{}→{}", self.from.as_str(), self.to.as_str())
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub spec: ServiceSpec,
    pub generation: u64,
    pub created_revision: u64,
    /// The decision that allowed a second service with the same
    /// capability at an overlapping scope.
    #[serde(default)]
    pub exemption: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub tenant: String,
    pub service: String,
    pub created_revision: u64,
    pub created_at_ms: u64,
    pub created_by: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CatalogRequest {
    pub actor: Actor,
    pub at_ms: u64,
    /// The decision behind the change (an exemption, for a duplicate).
    pub decision: Option<String>,
    pub op: CatalogOp,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum CatalogOp {
    /// Adds a service, or replaces the spec of one with this name.
    Register(ServiceSpec),
    Remove {
        name: String,
    },
    Subscribe {
        tenant: String,
        service: String,
    },
    Unsubscribe {
        tenant: String,
        service: String,
    },
}

impl CatalogOp {
    pub fn action(&self) -> &'static str {
        match self {
            CatalogOp::Register(_) => "service.register",
            CatalogOp::Remove { .. } => "service.remove",
            CatalogOp::Subscribe { .. } => "service.subscribe",
            CatalogOp::Unsubscribe { .. } => "service.unsubscribe",
        }
    }
}

fn dns_label(what: &str, s: &str) -> Result<(), Refusal> {
    let ok = !s.is_empty()
        && s.len() <= 50
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err((
            RejectKind::Invalid,
            format!("{what} {s:?} is not valid: use 1 to 50 lowercase letters, digits and '-'"),
        ))
    }
}

pub fn validate_spec(s: &ServiceSpec) -> Result<(), Refusal> {
    dns_label("service name", &s.name)?;
    dns_label("capability", &s.capability)?;
    for d in &s.depends_on {
        dns_label("dependency", d)?;
        if *d == s.capability {
            return Err((
                RejectKind::Invalid,
                format!("service {} depends on its own capability {d}", s.name),
            ));
        }
    }
    if s.from > s.to {
        return Err((
            RejectKind::Invalid,
            format!(
                "scope {} is upside down: from is the highest level served (central), to the lowest (commune)",
                s.scope()
            ),
        ));
    }
    if !["application", "platform", "infrastructure", "data"].contains(&s.layer.as_str()) {
        return Err((
            RejectKind::Invalid,
            format!(
                "unknown layer {:?}: use application, platform, infrastructure or data",
                s.layer
            ),
        ));
    }
    if s.display_name.trim().is_empty() {
        return Err((RejectKind::Invalid, "a service needs a display name".into()));
    }
    Ok(())
}

fn who(actor: &Actor) -> String {
    format!(
        "{} ({})",
        actor.name,
        actor
            .roles
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Refuses what the actor may not do. `tenant` is resolved.
pub fn authorize(reg: &Registry, actor: &Actor, op: &CatalogOp) -> Result<(), Refusal> {
    if actor.is_operator() {
        return Ok(());
    }
    match op {
        CatalogOp::Register(_) | CatalogOp::Remove { .. } => {
            if actor.roles.contains(&Role::ServiceOwner) {
                Ok(())
            } else {
                Err((
                    RejectKind::PermissionDenied,
                    format!(
                        "{} may not change the catalogue: that needs service-owner or dc-operator",
                        who(actor)
                    ),
                ))
            }
        }
        CatalogOp::Subscribe { tenant, .. } | CatalogOp::Unsubscribe { tenant, .. } => {
            let id = reg
                .resolve(tenant)
                .map(|t| t.id.clone())
                .unwrap_or_default();
            if actor.administers_or_above(reg, &id) {
                Ok(())
            } else {
                Err((
                    RejectKind::PermissionDenied,
                    format!(
                        "{} may not subscribe tenant {tenant}: that needs its tenant-admin (or one above) or dc-operator",
                        who(actor)
                    ),
                ))
            }
        }
    }
}

/// Checks a registration against the services there are.
pub fn check_register(
    spec: &ServiceSpec,
    services: &[Service],
    decision: Option<&str>,
) -> Result<Option<String>, Refusal> {
    validate_spec(spec)?;
    // A service registered again for the same capability and scope keeps
    // its place, even where a later one was admitted beside it with an
    // exemption decision: only a new place (a new service, another
    // capability, another scope) is checked against the others.
    let keeps_its_place = services.iter().any(|s| {
        s.spec.name == spec.name
            && s.spec.capability == spec.capability
            && (s.spec.from, s.spec.to) == (spec.from, spec.to)
    });
    if keeps_its_place {
        return Ok(None);
    }
    let rival = services.iter().find(|s| {
        s.spec.name != spec.name && s.spec.capability == spec.capability && s.spec.overlaps(spec)
    });
    match (rival, decision) {
        (None, _) => Ok(None),
        (Some(_), Some(d)) if !d.trim().is_empty() => Ok(Some(d.trim().to_string())),
        (Some(r), _) => Err((
            RejectKind::AlreadyExists,
            format!(
                "capability {} is already shared at {} by service {} ({}): subscribe to it instead of building another, or record an exemption decision",
                spec.capability,
                r.spec.scope(),
                r.spec.name,
                r.spec.display_name
            ),
        )),
    }
}

/// Checks a subscription: the tenant is active, the service's scope covers
/// its level, and every capability the service depends on is offered to
/// that level by some service.
pub fn check_subscribe(
    tenant: &Tenant,
    service: &Service,
    services: &[Service],
) -> Result<(), Refusal> {
    if tenant.state != crate::TenantState::Active {
        return Err((
            RejectKind::Precondition,
            format!(
                "tenant {} is {}: only an active tenant subscribes",
                tenant.id,
                tenant.state.as_str()
            ),
        ));
    }
    let s = &service.spec;
    if !s.covers(tenant.level) {
        return Err((
            RejectKind::Precondition,
            format!(
                "service {} serves {} only; tenant {} is at {} level: use the service your level is given, or ask the service owner to widen its scope",
                s.name,
                s.scope(),
                tenant.id,
                tenant.level.as_str()
            ),
        ));
    }
    for d in &s.depends_on {
        let offered = services
            .iter()
            .any(|o| o.spec.capability == *d && o.spec.covers(tenant.level));
        if !offered {
            return Err((
                RejectKind::Precondition,
                format!(
                    "service {} needs capability {d}, which no service offers at {} level yet: register that first",
                    s.name,
                    tenant.level.as_str()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, cap: &str, from: Level, to: Level) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            display_name: name.into(),
            capability: cap.into(),
            layer: "application".into(),
            from,
            to,
            topology: Topology::Central,
            depends_on: vec![],
            per_tenant_database_bytes: 0,
            per_tenant_bucket_bytes: 0,
            owner: None,
            workload: true,
        }
    }

    fn service(s: ServiceSpec) -> Service {
        Service {
            spec: s,
            generation: 1,
            created_revision: 1,
            exemption: None,
        }
    }

    #[test]
    fn one_capability_one_service_per_scope_unless_exempted() {
        let axis = service(spec(
            "truc-lien-thong",
            "document-exchange",
            Level::Central,
            Level::Commune,
        ));
        let again = spec(
            "truc-moi",
            "document-exchange",
            Level::Province,
            Level::Province,
        );
        let (kind, msg) = check_register(&again, std::slice::from_ref(&axis), None).unwrap_err();
        assert_eq!(kind, RejectKind::AlreadyExists);
        assert!(msg.contains("truc-lien-thong"), "{msg}");
        assert_eq!(
            check_register(&again, std::slice::from_ref(&axis), Some("QĐ 1/2026")).unwrap(),
            Some("QĐ 1/2026".into())
        );
        // Re-registering the same service is an update, not a duplicate.
        assert!(check_register(&axis.spec, std::slice::from_ref(&axis), None).is_ok());
        // Disjoint scopes do not clash.
        let central = service(spec("a", "x", Level::Central, Level::Central));
        let local = spec("b", "x", Level::Province, Level::Commune);
        assert!(check_register(&local, &[central], None).is_ok());
    }

    #[test]
    fn specs_are_checked() {
        let mut s = spec("ok", "cap", Level::Commune, Level::Central);
        assert!(validate_spec(&s).is_err(), "upside-down scope");
        s.from = Level::Central;
        s.to = Level::Commune;
        s.layer = "magic".into();
        assert!(validate_spec(&s).is_err());
        s.layer = "platform".into();
        assert!(validate_spec(&s).is_ok());
        s.name = "Bad Name".into();
        assert!(validate_spec(&s).is_err());
    }
}
