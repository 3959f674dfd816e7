//! The state machine alone, for tests: a fresh store in a temporary
//! directory, entries applied one by one, and the actors and tenants the
//! tests use.
#![allow(dead_code, unused_imports)]

pub use std::collections::BTreeMap;

pub use ndc_core::claims::{
    BucketSpec, ClaimOp, ClaimRequest, ClaimSpec, ClaimStatus, DatabaseSpec, DeletionPolicy, Phase,
    Sealed, StatusBasis,
};
pub use ndc_core::domain::{Actor, DomainOp, DomainRequest, RejectKind, Role};
pub use ndc_core::{Branch, Level, Quota, TenantPatch, TenantSpec, TenantState};
pub use ndc_store::{Command, Rejection, Response, StateMachine, StoreReader, TypeConfig};
pub use openraft::storage::RaftStateMachine;
pub use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

pub struct Sm {
    pub sm: StateMachine,
    pub reader: StoreReader,
    pub index: u64,
    _dir: tempfile::TempDir,
}

pub fn operator() -> Actor {
    Actor {
        name: "ops".into(),
        roles: vec![Role::DcOperator],
    }
}

pub fn provisioner() -> Actor {
    Actor {
        name: "provisioner".into(),
        roles: vec![Role::Provisioner],
    }
}

pub fn admin_of(t: &str) -> Actor {
    Actor {
        name: format!("admin-{t}"),
        roles: vec![Role::TenantAdmin(t.into())],
    }
}

pub fn sealed(generation: u64) -> Sealed {
    Sealed {
        generation,
        nonce: "00ff".into(),
        ciphertext: "abcd".into(),
    }
}

pub fn basis(credentials: u64, deleting: bool) -> StatusBasis {
    StatusBasis {
        generation: 1,
        credentials,
        deleting,
    }
}

pub fn bucket(size: u64) -> ClaimSpec {
    ClaimSpec::Bucket(BucketSpec {
        size_bytes: size,
        ..Default::default()
    })
}

pub fn create(uid: &str, tenant: &str, name: &str, spec: ClaimSpec) -> ClaimOp {
    ClaimOp::Create {
        uid: uid.into(),
        tenant: tenant.into(),
        name: name.into(),
        spec,
        deletion_policy: DeletionPolicy::Delete,
        credentials: sealed(1),
    }
}

impl Sm {
    pub fn new() -> Sm {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ndc_store::open(dir.path(), 1000).expect("open");
        Sm {
            sm: store.state_machine,
            reader: store.reader,
            index: 0,
            _dir: dir,
        }
    }

    pub async fn apply(&mut self, cmd: Command) -> Response {
        self.index += 1;
        let e: Entry<TypeConfig> = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
            payload: EntryPayload::Normal(cmd),
        };
        self.sm.apply([e]).await.expect("apply").remove(0)
    }

    pub async fn domain(&mut self, op: DomainOp) -> Response {
        self.apply(Command::Domain(Box::new(DomainRequest {
            actor: operator(),
            decision: None,
            at_ms: 1,
            op,
            expected_plan: None,
        })))
        .await
    }

    pub async fn claim(&mut self, actor: Actor, op: ClaimOp) -> Response {
        self.apply(Command::Claim(Box::new(ClaimRequest {
            actor,
            at_ms: 2,
            op,
        })))
        .await
    }

    pub fn used(&self, tenant: &str) -> Quota {
        self.reader
            .with_registry(|r| r.get(tenant).expect("tenant").used)
            .expect("registry")
    }
}

pub fn spec(
    id: &str,
    parent: Option<&str>,
    level: Level,
    code: Option<&str>,
    quota: Quota,
) -> TenantSpec {
    TenantSpec {
        display_name: id.into(),
        security_level: 2,
        quota,
        ..ndc_testkit::tenant_spec(id, level, parent, code, 0)
    }
}

pub fn refused(r: &Response) -> (RejectKind, String) {
    match r {
        Response::Rejected(Rejection::Domain { kind, message }) => (*kind, message.clone()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

pub async fn with_tenants() -> Sm {
    let mut sm = Sm::new();
    let q = Quota {
        storage_bytes: 100,
        buckets: 1,
        databases: 2,
        ..Quota::default()
    };
    let r = sm
        .domain(DomainOp::CreateTenant(spec(
            "bo-noi-vu",
            None,
            Level::Central,
            None,
            Quota {
                storage_bytes: 1000,
                buckets: 10,
                databases: 10,
                ..Quota::default()
            },
        )))
        .await;
    assert!(matches!(r, Response::Domain { .. }), "{r:?}");
    let r = sm
        .domain(DomainOp::CreateTenant(spec(
            "ha-noi",
            Some("bo-noi-vu"),
            Level::Province,
            Some("01"),
            q,
        )))
        .await;
    assert!(matches!(r, Response::Domain { .. }), "{r:?}");
    let r = sm
        .domain(DomainOp::CreateTenant(spec(
            "hue",
            Some("bo-noi-vu"),
            Level::Province,
            Some("46"),
            q,
        )))
        .await;
    assert!(matches!(r, Response::Domain { .. }), "{r:?}");
    sm
}
