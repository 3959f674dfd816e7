//! The data centre's hosts, as their agents report them: applied in the
//! state machine like every other change, so the leader's decisions (a host
//! that stopped reporting becomes NotReady) are replicated too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{Actor, Role};

/// What a host offers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capacity {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
}

/// What an agent says about its host when it registers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct HostSpec {
    pub name: String,
    pub zone: String,
    pub rack: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: Capacity,
    /// Reported by a simulated agent (benchmarks, `ndc up`), not real hardware.
    pub simulated: bool,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostState {
    Ready,
    NotReady,
}

/// A host as the control plane keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub spec: HostSpec,
    pub state: HostState,
    /// An operator took it out of service: it does not count as capacity.
    pub cordoned: bool,
    pub registered_ms: u64,
    pub last_heartbeat_ms: u64,
}

impl Host {
    /// Whether its capacity counts: ready and not cordoned.
    pub fn schedulable(&self) -> bool {
        self.state == HostState::Ready && !self.cordoned
    }
}

/// An inventory change as proposed to the log.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct InventoryRequest {
    pub actor: Actor,
    /// The proposer's clock, milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub op: InventoryOp,
}

/// Agents register and report their own hosts; operators change the rest.
pub fn authorize(actor: &Actor, op: &InventoryOp) -> Result<(), String> {
    let agent_op = matches!(op, InventoryOp::Register(_) | InventoryOp::Heartbeat { .. });
    let allowed = actor.is_operator() || (agent_op && actor.roles.contains(&Role::NodeAgent));
    if allowed {
        Ok(())
    } else {
        Err(format!(
            "{} may not {}: that needs the role {}",
            actor.name,
            op.action(),
            if agent_op {
                "node-agent or dc-operator"
            } else {
                "dc-operator"
            }
        ))
    }
}

/// A change to the inventory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum InventoryOp {
    /// Adds a host, or updates its description; it is Ready.
    Register(HostSpec),
    /// The host is alive; its capacity may have changed.
    Heartbeat {
        name: String,
        capacity: Option<Capacity>,
    },
    /// Hosts whose last heartbeat is older than `before_ms` become NotReady.
    /// Proposed by the leader; decided in apply from the records alone.
    ExpireBefore {
        names: Vec<String>,
        before_ms: u64,
    },
    Cordon {
        name: String,
        cordoned: bool,
    },
    Remove {
        name: String,
    },
    /// Sets the overcommit ratios used by admission and the capacity report.
    SetOvercommit(Overcommit),
}

/// Why ratios are refused: each at least 1× (less would refuse what the
/// hosts can hold) and at most 100×.
pub fn validate_overcommit(oc: &Overcommit) -> Result<(), String> {
    for (what, v) in [
        ("cpu", oc.cpu_milli),
        ("memory", oc.memory_milli),
        ("storage", oc.storage_milli),
    ] {
        if !(1_000..=100_000).contains(&v) {
            return Err(format!(
                "the {what} overcommit must be between 1 and 100 (got {}.{:03})",
                v / 1000,
                v % 1000
            ));
        }
    }
    Ok(())
}

impl InventoryOp {
    pub fn action(&self) -> &'static str {
        match self {
            InventoryOp::Register(_) => "node.register",
            InventoryOp::Heartbeat { .. } => "node.heartbeat",
            InventoryOp::ExpireBefore { .. } => "node.not-ready",
            InventoryOp::Cordon { cordoned: true, .. } => "node.cordon",
            InventoryOp::Cordon {
                cordoned: false, ..
            } => "node.uncordon",
            InventoryOp::Remove { .. } => "node.remove",
            InventoryOp::SetOvercommit(_) => "capacity.overcommit",
        }
    }

    /// Whether the change goes into the audit chain. Heartbeats are
    /// liveness, not decisions: recording each would bury the chain.
    pub fn audited(&self) -> bool {
        !matches!(self, InventoryOp::Heartbeat { .. })
    }

    /// The hosts the change reads or writes.
    pub fn hosts(&self) -> Vec<String> {
        match self {
            InventoryOp::Register(s) => vec![s.name.clone()],
            InventoryOp::Heartbeat { name, .. }
            | InventoryOp::Cordon { name, .. }
            | InventoryOp::Remove { name } => {
                vec![name.clone()]
            }
            InventoryOp::ExpireBefore { names, .. } => names.clone(),
            InventoryOp::SetOvercommit(_) => vec![],
        }
    }

    pub fn target(&self) -> String {
        match self {
            InventoryOp::Register(s) => s.name.clone(),
            InventoryOp::Heartbeat { name, .. }
            | InventoryOp::Cordon { name, .. }
            | InventoryOp::Remove { name } => name.clone(),
            InventoryOp::ExpireBefore { names, .. } => names.join(","),
            InventoryOp::SetOvercommit(oc) => format!(
                "cpu {}.{:03}x, memory {}.{:03}x, storage {}.{:03}x",
                oc.cpu_milli / 1000,
                oc.cpu_milli % 1000,
                oc.memory_milli / 1000,
                oc.memory_milli % 1000,
                oc.storage_milli / 1000,
                oc.storage_milli % 1000
            ),
        }
    }
}

/// Checks a host description; returns why it is refused.
pub fn validate_host(spec: &HostSpec) -> Result<(), String> {
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            && !s.starts_with(['-', '.'])
            && !s.ends_with(['-', '.'])
    };
    if !name_ok(&spec.name) {
        return Err(format!(
            "host name {:?} must be 1-63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit",
            spec.name
        ));
    }
    for (what, v) in [("zone", &spec.zone), ("rack", &spec.rack)] {
        if !name_ok(v) {
            return Err(format!(
                "{what} {v:?} must be 1-63 lowercase letters, digits, '-' or '.'"
            ));
        }
    }
    if spec.capacity == Capacity::default() {
        return Err(format!("host {} reports no capacity at all", spec.name));
    }
    Ok(())
}

/// Applies an inventory change to the current record of its host (or the
/// hosts it names). Returns the records to write (`None` deletes) or why it
/// is refused. Pure: the caller reads and writes the store.
pub fn apply_op(
    op: &InventoryOp,
    at_ms: u64,
    current: &dyn Fn(&str) -> Option<Host>,
) -> Result<Vec<(String, Option<Host>)>, String> {
    match op {
        InventoryOp::Register(spec) => {
            validate_host(spec)?;
            let host = match current(&spec.name) {
                Some(mut h) => {
                    h.spec = spec.clone();
                    h.state = HostState::Ready;
                    h.last_heartbeat_ms = at_ms;
                    h
                }
                None => Host {
                    spec: spec.clone(),
                    state: HostState::Ready,
                    cordoned: false,
                    registered_ms: at_ms,
                    last_heartbeat_ms: at_ms,
                },
            };
            Ok(vec![(spec.name.clone(), Some(host))])
        }
        InventoryOp::Heartbeat { name, capacity } => {
            let mut h = current(name)
                .ok_or_else(|| format!("host {name} is not registered: register it first"))?;
            h.state = HostState::Ready;
            h.last_heartbeat_ms = at_ms;
            if let Some(c) = capacity {
                h.spec.capacity = *c;
            }
            Ok(vec![(name.clone(), Some(h))])
        }
        InventoryOp::ExpireBefore { names, before_ms } => Ok(names
            .iter()
            .filter_map(|n| current(n).map(|h| (n, h)))
            .filter(|(_, h)| h.state == HostState::Ready && h.last_heartbeat_ms < *before_ms)
            .map(|(n, mut h)| {
                h.state = HostState::NotReady;
                (n.clone(), Some(h))
            })
            .collect()),
        InventoryOp::Cordon { name, cordoned } => {
            let mut h = current(name).ok_or_else(|| format!("host {name} not found"))?;
            h.cordoned = *cordoned;
            Ok(vec![(name.clone(), Some(h))])
        }
        InventoryOp::Remove { name } => {
            current(name).ok_or_else(|| format!("host {name} not found"))?;
            Ok(vec![(name.clone(), None)])
        }
        // Written by the caller under OVERCOMMIT_KEY; no host changes.
        InventoryOp::SetOvercommit(oc) => validate_overcommit(oc).map(|_| vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> HostSpec {
        HostSpec {
            name: name.into(),
            zone: "hn-1".into(),
            rack: "r01".into(),
            labels: BTreeMap::new(),
            capacity: Capacity {
                cpu_millis: 64_000,
                memory_bytes: 512 << 30,
                storage_bytes: 8 << 40,
            },
            simulated: false,
        }
    }

    #[test]
    fn lifecycle() {
        let none = |_: &str| None;
        let reg = apply_op(&InventoryOp::Register(spec("h1")), 100, &none).unwrap();
        let h = reg[0].1.clone().unwrap();
        assert!(h.schedulable());
        let cur = |_: &str| Some(h.clone());
        // Not expired while its heartbeat is recent enough.
        let e = apply_op(
            &InventoryOp::ExpireBefore {
                names: vec!["h1".into()],
                before_ms: 100,
            },
            200,
            &cur,
        )
        .unwrap();
        assert!(e.is_empty());
        let e = apply_op(
            &InventoryOp::ExpireBefore {
                names: vec!["h1".into()],
                before_ms: 101,
            },
            200,
            &cur,
        )
        .unwrap();
        let down = e[0].1.clone().unwrap();
        assert_eq!(down.state, HostState::NotReady);
        assert!(!down.schedulable());
        let cur = |_: &str| Some(down.clone());
        let back = apply_op(
            &InventoryOp::Heartbeat {
                name: "h1".into(),
                capacity: None,
            },
            300,
            &cur,
        )
        .unwrap();
        assert_eq!(back[0].1.as_ref().map(|h| h.state), Some(HostState::Ready));
        assert!(apply_op(
            &InventoryOp::Heartbeat {
                name: "h2".into(),
                capacity: None
            },
            1,
            &none
        )
        .is_err());
        let mut bad = spec("H1");
        assert!(validate_host(&bad).is_err());
        bad = spec("h1");
        bad.capacity = Capacity::default();
        assert!(validate_host(&bad).is_err());
    }

    #[test]
    fn admission_at_the_boundary() {
        let mut h = Host {
            spec: spec("h1"),
            state: HostState::Ready,
            cordoned: false,
            registered_ms: 0,
            last_heartbeat_ms: 0,
        };
        // 64 cores × 4 = 256 cores; 512 GiB × 1.5 = 768 GiB; 8 TiB × 1.
        let at = Capacity {
            cpu_millis: 256_000,
            memory_bytes: 768 << 30,
            storage_bytes: 8 << 40,
        };
        let none = Capacity::default();
        let one = std::slice::from_ref(&h);
        assert_eq!(admit(one, &none, &at, &DEFAULT_OVERCOMMIT), Ok(()));
        let above = Capacity {
            cpu_millis: 256_001,
            ..at
        };
        let before = Capacity {
            cpu_millis: 200_000,
            ..none
        };
        let e = admit(one, &before, &above, &DEFAULT_OVERCOMMIT).unwrap_err();
        assert!(
            e.starts_with("cpu")
                && e.contains("256000")
                && e.contains("4.000")
                && e.ends_with("headroom is 56000"),
            "{e}"
        );
        let above = Capacity {
            storage_bytes: (8 << 40) + 1,
            ..at
        };
        assert!(admit(one, &none, &above, &DEFAULT_OVERCOMMIT)
            .unwrap_err()
            .starts_with("storage"));
        // A cordoned host holds nothing; an empty inventory admits anything.
        h.cordoned = true;
        assert!(admit(std::slice::from_ref(&h), &none, &at, &DEFAULT_OVERCOMMIT).is_err());
        assert_eq!(admit(&[], &none, &above, &DEFAULT_OVERCOMMIT), Ok(()));
        assert!(validate_overcommit(&Overcommit {
            cpu_milli: 999,
            ..DEFAULT_OVERCOMMIT
        })
        .is_err());
    }
}

/// How far quotas may exceed physical capacity, per resource, in
/// thousandths: CPU is shared well (4×), memory less (1.5×), storage not
/// at all (1×).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overcommit {
    pub cpu_milli: u64,
    pub memory_milli: u64,
    pub storage_milli: u64,
}

pub const DEFAULT_OVERCOMMIT: Overcommit = Overcommit {
    cpu_milli: 4_000,
    memory_milli: 1_500,
    storage_milli: 1_000,
};

/// The capacity of the hosts that count: ready and not cordoned.
pub fn schedulable(hosts: &[Host]) -> Capacity {
    hosts
        .iter()
        .filter(|h| h.schedulable())
        .fold(Capacity::default(), |a, h| Capacity {
            cpu_millis: a.cpu_millis.saturating_add(h.spec.capacity.cpu_millis),
            memory_bytes: a.memory_bytes.saturating_add(h.spec.capacity.memory_bytes),
            storage_bytes: a
                .storage_bytes
                .saturating_add(h.spec.capacity.storage_bytes),
        })
}

/// What may be granted on `capacity` with `oc`.
pub fn grantable(capacity: &Capacity, oc: &Overcommit) -> Capacity {
    let scale = |v: u64, milli: u64| {
        u64::try_from(u128::from(v) * u128::from(milli) / 1000).unwrap_or(u64::MAX)
    };
    Capacity {
        cpu_millis: scale(capacity.cpu_millis, oc.cpu_milli),
        memory_bytes: scale(capacity.memory_bytes, oc.memory_milli),
        storage_bytes: scale(capacity.storage_bytes, oc.storage_milli),
    }
}

/// Refuses a total grant above what the hosts can hold. `granted` is the sum
/// of the quotas of the top-level tenants (every other quota is carved out
/// of theirs). An empty inventory admits anything: capacity is unknown
/// until agents report.
pub fn admit(
    hosts: &[Host],
    before: &Capacity,
    granted: &Capacity,
    oc: &Overcommit,
) -> Result<(), String> {
    if hosts.is_empty() {
        return Ok(());
    }
    let cap = schedulable(hosts);
    let limit = grantable(&cap, oc);
    let checks = [
        (
            "cpu (millicores)",
            before.cpu_millis,
            granted.cpu_millis,
            limit.cpu_millis,
            cap.cpu_millis,
            oc.cpu_milli,
        ),
        (
            "memory (bytes)",
            before.memory_bytes,
            granted.memory_bytes,
            limit.memory_bytes,
            cap.memory_bytes,
            oc.memory_milli,
        ),
        (
            "storage (bytes)",
            before.storage_bytes,
            granted.storage_bytes,
            limit.storage_bytes,
            cap.storage_bytes,
            oc.storage_milli,
        ),
    ];
    for (resource, before, want, limit, cap, milli) in checks {
        if want > limit {
            return Err(format!(
                "{resource}: granting this would promise {want} in all zones, beyond the {limit} the data centre can hold ({cap} on ready, uncordoned hosts × {}.{:03} overcommit); headroom is {}",
                milli / 1000,
                milli % 1000,
                limit.saturating_sub(before)
            ));
        }
    }
    Ok(())
}
