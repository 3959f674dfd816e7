//! The data centre's hosts, as their agents report them: applied in the
//! state machine like every other change, so the leader's decisions (a host
//! that stopped reporting becomes NotReady) are replicated too.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{Actor, Role};

/// Key prefix of host records.
pub const NODES_PREFIX: &str = "/ndc/nodes/";

pub fn node_key(name: &str) -> String {
    format!("{NODES_PREFIX}{name}")
}

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
        }
    }

    pub fn target(&self) -> String {
        match self {
            InventoryOp::Register(s) => s.name.clone(),
            InventoryOp::Heartbeat { name, .. }
            | InventoryOp::Cordon { name, .. }
            | InventoryOp::Remove { name } => name.clone(),
            InventoryOp::ExpireBefore { names, .. } => names.join(","),
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
}
