//! Claims through the state machine: admission against the tenant's quota
//! and state, who may do what, and the deletion handshake with the
//! provisioner that returns the quota.

use std::collections::BTreeMap;

use ndc_store::claims::{
    BucketSpec, ClaimOp, ClaimRequest, ClaimSpec, ClaimStatus, DatabaseSpec, DeletionPolicy, Phase,
    Sealed, StatusBasis,
};
use ndc_store::domain::{Actor, DomainOp, DomainRequest, RejectKind, Role};
use ndc_store::{Command, Rejection, Response, StateMachine, StoreReader, TypeConfig};
use ndc_tenants::{Branch, Level, Quota, TenantPatch, TenantSpec, TenantState};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

struct Sm {
    sm: StateMachine,
    reader: StoreReader,
    index: u64,
    _dir: tempfile::TempDir,
}

fn operator() -> Actor {
    Actor {
        name: "ops".into(),
        roles: vec![Role::DcOperator],
    }
}

fn provisioner() -> Actor {
    Actor {
        name: "provisioner".into(),
        roles: vec![Role::Provisioner],
    }
}

fn admin_of(t: &str) -> Actor {
    Actor {
        name: format!("admin-{t}"),
        roles: vec![Role::TenantAdmin(t.into())],
    }
}

fn sealed(generation: u64) -> Sealed {
    Sealed {
        generation,
        nonce: "00ff".into(),
        ciphertext: "abcd".into(),
    }
}

fn basis(credentials: u64, deleting: bool) -> StatusBasis {
    StatusBasis {
        generation: 1,
        credentials,
        deleting,
    }
}

fn bucket(size: u64) -> ClaimSpec {
    ClaimSpec::Bucket(BucketSpec {
        size_bytes: size,
        ..Default::default()
    })
}

fn create(uid: &str, tenant: &str, name: &str, spec: ClaimSpec) -> ClaimOp {
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
    fn new() -> Sm {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ndc_store::open(dir.path(), 1000).expect("open");
        Sm {
            sm: store.state_machine,
            reader: store.reader,
            index: 0,
            _dir: dir,
        }
    }

    async fn apply(&mut self, cmd: Command) -> Response {
        self.index += 1;
        let e: Entry<TypeConfig> = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
            payload: EntryPayload::Normal(cmd),
        };
        self.sm.apply([e]).await.expect("apply").remove(0)
    }

    async fn domain(&mut self, op: DomainOp) -> Response {
        self.apply(Command::Domain(Box::new(DomainRequest {
            actor: operator(),
            decision: None,
            at_ms: 1,
            op,
            expected_plan: None,
        })))
        .await
    }

    async fn claim(&mut self, actor: Actor, op: ClaimOp) -> Response {
        self.apply(Command::Claim(Box::new(ClaimRequest {
            actor,
            at_ms: 2,
            op,
        })))
        .await
    }

    fn used(&self, tenant: &str) -> Quota {
        self.reader
            .with_registry(|r| r.get(tenant).expect("tenant").used)
            .expect("registry")
    }
}

fn spec(
    id: &str,
    parent: Option<&str>,
    level: Level,
    code: Option<&str>,
    quota: Quota,
) -> TenantSpec {
    TenantSpec {
        id: id.into(),
        display_name: id.into(),
        level,
        branch: Branch::State,
        parent: parent.map(Into::into),
        admin_code: code.map(Into::into),
        security_level: 2,
        labels: BTreeMap::new(),
        quota,
        deletion_protection: false,
    }
}

fn refused(r: &Response) -> (RejectKind, String) {
    match r {
        Response::Rejected(Rejection::Domain { kind, message }) => (*kind, message.clone()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn with_tenants() -> Sm {
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

#[tokio::test]
async fn claims_are_admitted_against_quota_inside_apply() {
    let mut sm = with_tenants().await;
    let r = sm
        .claim(
            operator(),
            create("000000000000000a", "ha-noi", "archive", bucket(60)),
        )
        .await;
    let Response::Claim { claim, removed, .. } = r else {
        panic!("{r:?}")
    };
    assert!(!removed);
    assert_eq!(claim.status.phase, Phase::Pending);
    assert_eq!(claim.generation, 1);
    assert_eq!(sm.used("ha-noi").buckets, 1);
    assert_eq!(sm.used("ha-noi").storage_bytes, 60);

    // The bucket count is used up: a second bucket is refused, nothing written.
    let (kind, msg) = refused(
        &sm.claim(
            operator(),
            create("000000000000000b", "ha-noi", "files", bucket(1)),
        )
        .await,
    );
    assert_eq!(kind, RejectKind::Precondition, "{msg}");
    assert!(msg.contains("bucket"), "{msg}");
    assert!(sm
        .reader
        .claim("000000000000000b")
        .expect("read")
        .0
        .is_none());

    // Storage: 60 + 50 > 100.
    let db = ClaimSpec::Database(DatabaseSpec {
        size_bytes: 50,
        connection_limit: 10,
    });
    let (_, msg) = refused(
        &sm.claim(
            operator(),
            create("000000000000000c", "ha-noi", "records", db.clone()),
        )
        .await,
    );
    assert!(msg.contains("storage"), "{msg}");
    // Another tenant's quota is its own.
    let r = sm
        .claim(operator(), create("000000000000000c", "hue", "records", db))
        .await;
    assert!(matches!(r, Response::Claim { .. }), "{r:?}");
    assert_eq!(sm.used("ha-noi").storage_bytes, 60);

    // Same name and kind in one tenant, or a uid already taken: refused.
    let (kind, _) = refused(
        &sm.claim(
            operator(),
            create(
                "000000000000000d",
                "hue",
                "records",
                ClaimSpec::Database(DatabaseSpec {
                    size_bytes: 1,
                    connection_limit: 0,
                }),
            ),
        )
        .await,
    );
    assert_eq!(kind, RejectKind::AlreadyExists);
    let (kind, _) = refused(
        &sm.claim(
            operator(),
            create("000000000000000a", "hue", "other", bucket(1)),
        )
        .await,
    );
    assert_eq!(kind, RejectKind::AlreadyExists);

    // Bad input: zero size, bad name, bad uid, missing tenant.
    for op in [
        create("000000000000000e", "hue", "zero", bucket(0)),
        create("000000000000000e", "hue", "Bad_Name", bucket(1)),
        create("XYZ", "hue", "ok", bucket(1)),
    ] {
        assert_eq!(
            refused(&sm.claim(operator(), op).await).0,
            RejectKind::Invalid
        );
    }
    let (kind, _) = refused(
        &sm.claim(
            operator(),
            create("000000000000000e", "nowhere", "x", bucket(1)),
        )
        .await,
    );
    assert_eq!(kind, RejectKind::NotFound);
}

#[tokio::test]
async fn tenant_admins_claim_for_their_own_subtree_only() {
    let mut sm = with_tenants().await;
    let (kind, msg) = refused(
        &sm.claim(
            admin_of("hue"),
            create("000000000000000a", "ha-noi", "x", bucket(1)),
        )
        .await,
    );
    assert_eq!(kind, RejectKind::PermissionDenied, "{msg}");
    let r = sm
        .claim(
            admin_of("hue"),
            create("000000000000000a", "hue", "x", bucket(1)),
        )
        .await;
    assert!(matches!(r, Response::Claim { .. }), "{r:?}");
    let r = sm
        .claim(
            admin_of("bo-noi-vu"),
            create("000000000000000b", "ha-noi", "x", bucket(1)),
        )
        .await;
    assert!(matches!(r, Response::Claim { .. }), "{r:?}");
    // Only the provisioner reports status, even for a dc-operator.
    let (kind, _) = refused(
        &sm.claim(
            operator(),
            ClaimOp::SetStatus {
                uid: "000000000000000a".into(),
                status: ClaimStatus::default(),
                basis: basis(1, false),
            },
        )
        .await,
    );
    assert_eq!(kind, RejectKind::PermissionDenied);
}

#[tokio::test]
async fn a_suspended_tenant_claims_nothing() {
    let mut sm = with_tenants().await;
    let r = sm
        .domain(DomainOp::UpdateTenant {
            id: "hue".into(),
            patch: TenantPatch {
                state: Some(TenantState::Suspended),
                ..TenantPatch::default()
            },
        })
        .await;
    assert!(matches!(r, Response::Domain { .. }), "{r:?}");
    let (kind, msg) = refused(
        &sm.claim(
            operator(),
            create("000000000000000a", "hue", "x", bucket(1)),
        )
        .await,
    );
    assert_eq!(kind, RejectKind::Precondition);
    assert!(msg.contains("suspended"), "{msg}");
}

#[tokio::test]
async fn deletion_is_marked_then_forgotten_by_the_provisioner() {
    let mut sm = with_tenants().await;
    let uid = "000000000000000a";
    sm.claim(operator(), create(uid, "hue", "archive", bucket(30)))
        .await;
    // Forget before a deletion was asked: refused.
    let forget = ClaimOp::Forget {
        uid: uid.into(),
        outcome: "deleted".into(),
    };
    assert_eq!(
        refused(&sm.claim(provisioner(), forget.clone()).await).0,
        RejectKind::Precondition
    );
    let r = sm
        .claim(
            admin_of("hue"),
            ClaimOp::Delete {
                uid: uid.into(),
                purge: false,
            },
        )
        .await;
    let Response::Claim { claim, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(claim.status.phase, Phase::Deleting);
    assert!(!claim.deletion.as_ref().expect("deletion").purge);
    // Still counted until the provisioner is done.
    assert_eq!(sm.used("hue").storage_bytes, 30);
    // Asking again with purge records the purge.
    let r = sm
        .claim(
            admin_of("hue"),
            ClaimOp::Delete {
                uid: uid.into(),
                purge: true,
            },
        )
        .await;
    let Response::Claim { claim, .. } = r else {
        panic!("{r:?}")
    };
    assert!(claim.deletion.as_ref().expect("deletion").purge);
    // Rotating a claim being deleted is refused.
    assert_eq!(
        refused(
            &sm.claim(
                operator(),
                ClaimOp::Rotate {
                    uid: uid.into(),
                    credentials: sealed(2)
                }
            )
            .await
        )
        .0,
        RejectKind::Precondition
    );
    let r = sm.claim(provisioner(), forget).await;
    assert!(matches!(r, Response::Claim { removed: true, .. }), "{r:?}");
    assert!(sm.reader.claim(uid).expect("read").0.is_none());
    assert_eq!(sm.used("hue"), Quota::default());
    // The audit chain has the create, delete, delete again and the outcome.
    let actions: Vec<String> = sm
        .reader
        .audit_records(1, 0)
        .expect("audit")
        .into_iter()
        .map(|r| r.action)
        .collect();
    assert!(
        actions.ends_with(&[
            "bucket.create".into(),
            "bucket.delete".into(),
            "bucket.delete".into(),
            "bucket.deleted".into()
        ]),
        "{actions:?}"
    );
    let report = sm.reader.verify_audit().expect("verify");
    assert!(report.problem.is_none(), "{report:?}");
}

#[tokio::test]
async fn rotation_must_follow_the_current_generation() {
    let mut sm = with_tenants().await;
    let uid = "000000000000000a";
    sm.claim(operator(), create(uid, "hue", "archive", bucket(30)))
        .await;
    let rotate = |g| ClaimOp::Rotate {
        uid: uid.into(),
        credentials: sealed(g),
    };
    assert_eq!(
        refused(&sm.claim(operator(), rotate(3)).await).0,
        RejectKind::Precondition
    );
    let r = sm.claim(operator(), rotate(2)).await;
    let Response::Claim { claim, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(claim.credentials.generation, 2);
    assert!(!claim.converged());
}

#[test]
fn claim_commands_survive_the_log_encoding() {
    // Log entries are postcard (positional): every claim type must round-trip.
    let status = ClaimStatus {
        phase: Phase::Ready,
        endpoint: Some("http://127.0.0.1:3900".into()),
        region: None,
        backup: Some("s3://b/k".into()),
        ..ClaimStatus::default()
    };
    let cmds = [
        create("000000000000000a", "hue", "a", bucket(1)),
        create(
            "000000000000000b",
            "hue",
            "b",
            ClaimSpec::Bucket(BucketSpec {
                size_bytes: 5,
                versioning: true,
                retention_days: Some(30),
            }),
        ),
        ClaimOp::SetStatus {
            uid: "000000000000000a".into(),
            status,
            basis: basis(2, true),
        },
        ClaimOp::Rotate {
            uid: "000000000000000a".into(),
            credentials: sealed(2),
        },
        ClaimOp::Forget {
            uid: "000000000000000a".into(),
            outcome: "deleted".into(),
        },
        ClaimOp::Delete {
            uid: "000000000000000a".into(),
            purge: true,
        },
    ];
    for op in cmds {
        let cmd = Command::Claim(Box::new(ClaimRequest {
            actor: provisioner(),
            at_ms: 7,
            op,
        }));
        let bytes = ndc_store::encode("command", &cmd).expect("encode");
        let back: Command = ndc_store::decode("command", &bytes).expect("decode");
        assert_eq!(back, cmd);
    }
}

#[tokio::test]
async fn a_report_on_an_older_claim_is_refused_and_never_forgets_a_dump() {
    let mut sm = with_tenants().await;
    let uid = "000000000000000a";
    sm.claim(operator(), create(uid, "hue", "archive", bucket(30)))
        .await;
    let ready = ClaimStatus {
        phase: Phase::Ready,
        observed_generation: 1,
        observed_credentials: 1,
        access_key_id: Some("GK1".into()),
        ..ClaimStatus::default()
    };
    let report = |status: ClaimStatus, b: StatusBasis| ClaimOp::SetStatus {
        uid: uid.into(),
        status,
        basis: b,
    };
    let r = sm
        .claim(provisioner(), report(ready.clone(), basis(1, false)))
        .await;
    assert!(matches!(r, Response::Claim { .. }), "{r:?}");
    // Rotated meanwhile: a report made before the rotation is refused.
    sm.claim(
        operator(),
        ClaimOp::Rotate {
            uid: uid.into(),
            credentials: sealed(2),
        },
    )
    .await;
    let (kind, msg) = refused(
        &sm.claim(provisioner(), report(ready.clone(), basis(1, false)))
            .await,
    );
    assert_eq!(kind, RejectKind::Precondition);
    assert!(msg.contains("stale"), "{msg}");
    // Deleted meanwhile: likewise; and once deleting, a report keeps it Deleting.
    sm.claim(
        operator(),
        ClaimOp::Delete {
            uid: uid.into(),
            purge: false,
        },
    )
    .await;
    assert_eq!(
        refused(
            &sm.claim(provisioner(), report(ready.clone(), basis(2, false)))
                .await
        )
        .0,
        RejectKind::Precondition
    );
    let with_dump = ClaimStatus {
        backup: Some("s3://ndc-backups/x.sql".into()),
        ..ready.clone()
    };
    sm.claim(provisioner(), report(with_dump, basis(2, true)))
        .await;
    // A later failure report without the dump's place keeps it, and the key.
    let failed = ClaimStatus {
        phase: Phase::Failed,
        ..ClaimStatus::default()
    };
    let r = sm
        .claim(provisioner(), report(failed, basis(2, true)))
        .await;
    let Response::Claim { claim, .. } = r else {
        panic!("{r:?}")
    };
    assert_eq!(claim.status.phase, Phase::Deleting);
    assert_eq!(
        claim.status.backup.as_deref(),
        Some("s3://ndc-backups/x.sql")
    );
    assert_eq!(claim.status.access_key_id.as_deref(), Some("GK1"));
}

#[tokio::test]
async fn claims_follow_their_tenant_through_a_merge() {
    let mut sm = with_tenants().await;
    sm.claim(
        operator(),
        create("000000000000000a", "hue", "archive", bucket(30)),
    )
    .await;
    let r = sm
        .domain(DomainOp::Reorganise(ndc_tenants::Reorg::Merge {
            sources: vec!["hue".into()],
            into: ndc_tenants::MergeTarget::Existing("ha-noi".into()),
        }))
        .await;
    assert!(matches!(r, Response::Domain { .. }), "{r:?}");
    let (c, _) = sm.reader.claim("000000000000000a").expect("read");
    assert_eq!(c.expect("claim").tenant, "ha-noi");
    assert_eq!(sm.used("ha-noi").storage_bytes, 30);
}

#[tokio::test]
async fn a_suspended_parent_stops_claims_and_rotations_below_it() {
    let mut sm = with_tenants().await;
    sm.claim(
        operator(),
        create("000000000000000a", "hue", "archive", bucket(30)),
    )
    .await;
    sm.domain(DomainOp::UpdateTenant {
        id: "bo-noi-vu".into(),
        patch: TenantPatch {
            state: Some(TenantState::Suspended),
            ..TenantPatch::default()
        },
    })
    .await;
    let (kind, msg) = refused(
        &sm.claim(
            operator(),
            create("000000000000000b", "hue", "other", bucket(1)),
        )
        .await,
    );
    assert_eq!(kind, RejectKind::Precondition);
    assert!(msg.contains("bo-noi-vu"), "{msg}");
    let (kind, _) = refused(
        &sm.claim(
            operator(),
            ClaimOp::Rotate {
                uid: "000000000000000a".into(),
                credentials: sealed(2),
            },
        )
        .await,
    );
    assert_eq!(kind, RejectKind::Precondition);
}

// ---- the shared-service catalogue ----

fn service(
    name: &str,
    cap: &str,
    from: Level,
    to: Level,
    needs: &[&str],
) -> ndc_store::catalog::ServiceSpec {
    ndc_store::catalog::ServiceSpec {
        name: name.into(),
        display_name: format!("Dịch vụ {name}"),
        capability: cap.into(),
        layer: "application".into(),
        from,
        to,
        topology: ndc_store::catalog::Topology::Central,
        depends_on: needs.iter().map(|s| s.to_string()).collect(),
        per_tenant_database_bytes: 0,
        per_tenant_bucket_bytes: 0,
        owner: None,
        workload: true,
    }
}

impl Sm {
    async fn catalog(
        &mut self,
        actor: Actor,
        decision: Option<&str>,
        op: ndc_store::catalog::CatalogOp,
    ) -> Response {
        self.apply(Command::Catalog(Box::new(
            ndc_store::catalog::CatalogRequest {
                actor,
                at_ms: 3,
                decision: decision.map(Into::into),
                op,
            },
        )))
        .await
    }
}

#[tokio::test]
async fn the_catalogue_shares_a_capability_once_and_subscriptions_respect_scope() {
    use ndc_store::catalog::CatalogOp::*;
    let mut sm = with_tenants().await;
    let owner = Actor {
        name: "owner".into(),
        roles: vec![Role::ServiceOwner],
    };
    let r = sm
        .catalog(
            owner.clone(),
            None,
            Register(service(
                "dinh-danh",
                "identity",
                Level::Central,
                Level::Commune,
                &[],
            )),
        )
        .await;
    assert!(matches!(r, Response::Catalog { .. }), "{r:?}");
    // The same capability at an overlapping scope: refused, naming the one there is.
    let (kind, msg) = refused(
        &sm.catalog(
            owner.clone(),
            None,
            Register(service(
                "dinh-danh-2",
                "identity",
                Level::Province,
                Level::Province,
                &[],
            )),
        )
        .await,
    );
    assert_eq!(kind, RejectKind::AlreadyExists);
    assert!(msg.contains("dinh-danh"), "{msg}");
    // With a recorded exemption it is admitted, and the decision is audited.
    let r = sm
        .catalog(
            owner.clone(),
            Some("QĐ 5/2026"),
            Register(service(
                "dinh-danh-2",
                "identity",
                Level::Province,
                Level::Province,
                &[],
            )),
        )
        .await;
    assert!(matches!(r, Response::Catalog { .. }), "{r:?}");
    // Both register again unchanged (as the operator does on every
    // reconcile), the first without a decision: each keeps its place.
    for (name, from, to, decision) in [
        ("dinh-danh", Level::Central, Level::Commune, None),
        ("dinh-danh-2", Level::Province, Level::Province, None),
    ] {
        let r = sm
            .catalog(
                owner.clone(),
                decision,
                Register(service(name, "identity", from, to, &[])),
            )
            .await;
        let Response::Catalog {
            service: Some(s), ..
        } = &r
        else {
            panic!("{name} registered again: {r:?}");
        };
        assert_eq!(s.generation, 1, "{s:?}");
        let expected = (name == "dinh-danh-2").then(|| "QĐ 5/2026".to_string());
        assert_eq!(s.exemption, expected, "{s:?}");
    }
    // The incumbent widening its scope is a new place: checked again.
    let (kind, msg) = refused(
        &sm.catalog(
            owner.clone(),
            None,
            Register(service(
                "dinh-danh-2",
                "identity",
                Level::Central,
                Level::Province,
                &[],
            )),
        )
        .await,
    );
    assert_eq!(kind, RejectKind::AlreadyExists, "{msg}");
    // A tenant-admin may not register.
    let (kind, _) = refused(
        &sm.catalog(
            admin_of("hue"),
            None,
            Register(service("x", "y", Level::Central, Level::Central, &[])),
        )
        .await,
    );
    assert_eq!(kind, RejectKind::PermissionDenied);

    // Reporting serves central and province only; the portal needs identity and data sharing.
    sm.catalog(
        owner.clone(),
        None,
        Register(service(
            "bao-cao",
            "reporting",
            Level::Central,
            Level::Province,
            &[],
        )),
    )
    .await;
    sm.catalog(
        owner.clone(),
        None,
        Register(service(
            "cong-dvc",
            "public-services",
            Level::Central,
            Level::Commune,
            &["identity", "data-sharing"],
        )),
    )
    .await;
    // Hue is a province: reporting is fine.
    let r = sm
        .catalog(
            admin_of("hue"),
            None,
            Subscribe {
                tenant: "hue".into(),
                service: "bao-cao".into(),
            },
        )
        .await;
    assert!(
        matches!(
            r,
            Response::Catalog {
                subscription: Some(_),
                ..
            }
        ),
        "{r:?}"
    );
    assert!(sm
        .reader
        .with_registry(|r| r.get("hue").expect("hue").subscriptions.contains("bao-cao"))
        .expect("registry"));
    // Subscribing again changes nothing.
    let again = sm
        .catalog(
            admin_of("hue"),
            None,
            Subscribe {
                tenant: "hue".into(),
                service: "bao-cao".into(),
            },
        )
        .await;
    assert!(
        matches!(
            again,
            Response::Catalog {
                subscription: Some(_),
                ..
            }
        ),
        "{again:?}"
    );
    // The portal's dependency on data sharing is not offered yet: refused.
    let (kind, msg) = refused(
        &sm.catalog(
            admin_of("hue"),
            None,
            Subscribe {
                tenant: "hue".into(),
                service: "cong-dvc".into(),
            },
        )
        .await,
    );
    assert_eq!(kind, RejectKind::Precondition);
    assert!(msg.contains("data-sharing"), "{msg}");
    // Another tenant's admin may not subscribe hue.
    let (kind, _) = refused(
        &sm.catalog(
            admin_of("ha-noi"),
            None,
            Subscribe {
                tenant: "hue".into(),
                service: "bao-cao".into(),
            },
        )
        .await,
    );
    assert_eq!(kind, RejectKind::PermissionDenied);
    // A service with subscribers cannot be removed; after unsubscribing it can.
    let (kind, _) = refused(
        &sm.catalog(
            owner.clone(),
            None,
            Remove {
                name: "bao-cao".into(),
            },
        )
        .await,
    );
    assert_eq!(kind, RejectKind::Precondition);
    let r = sm
        .catalog(
            admin_of("hue"),
            None,
            Unsubscribe {
                tenant: "hue".into(),
                service: "bao-cao".into(),
            },
        )
        .await;
    assert!(matches!(r, Response::Catalog { .. }), "{r:?}");
    let r = sm
        .catalog(
            owner,
            None,
            Remove {
                name: "bao-cao".into(),
            },
        )
        .await;
    assert!(matches!(r, Response::Catalog { .. }), "{r:?}");
    let decisions: Vec<Option<String>> = sm
        .reader
        .audit_records(1, 0)
        .expect("audit")
        .into_iter()
        .filter(|r| r.action == "service.register")
        .map(|r| r.decision)
        .collect();
    assert!(
        decisions.contains(&Some("QĐ 5/2026".into())),
        "{decisions:?}"
    );
}

#[tokio::test]
async fn a_commune_is_refused_a_province_only_service_and_subscriptions_follow_a_merge() {
    use ndc_store::catalog::CatalogOp::*;
    let mut sm = with_tenants().await;
    sm.domain(DomainOp::CreateTenant(spec(
        "phu-xuan",
        Some("hue"),
        Level::Commune,
        Some("19753"),
        Quota::default(),
    )))
    .await;
    sm.catalog(
        operator(),
        None,
        Register(service(
            "bao-cao",
            "reporting",
            Level::Central,
            Level::Province,
            &[],
        )),
    )
    .await;
    let (kind, msg) = refused(
        &sm.catalog(
            operator(),
            None,
            Subscribe {
                tenant: "phu-xuan".into(),
                service: "bao-cao".into(),
            },
        )
        .await,
    );
    assert_eq!(kind, RejectKind::Precondition);
    assert!(
        msg.contains("central→province") && msg.contains("commune"),
        "{msg}"
    );
    // Hue subscribes, then merges into Ha Noi: the subscription moves.
    sm.catalog(
        operator(),
        None,
        Subscribe {
            tenant: "hue".into(),
            service: "bao-cao".into(),
        },
    )
    .await;
    sm.domain(DomainOp::DeleteTenant {
        id: "phu-xuan".into(),
    })
    .await;
    let r = sm
        .domain(DomainOp::Reorganise(ndc_tenants::Reorg::Merge {
            sources: vec!["hue".into()],
            into: ndc_tenants::MergeTarget::Existing("ha-noi".into()),
        }))
        .await;
    assert!(matches!(r, Response::Domain { .. }), "{r:?}");
    let keys: Vec<String> = sm
        .reader
        .list(ndc_store::catalog::SUBSCRIPTIONS_PREFIX, None, 0)
        .expect("list")
        .items
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["/ndc/subscriptions/ha-noi/bao-cao"]);
}
