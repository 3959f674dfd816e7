//! Claims through the state machine: admission against the tenant's quota
//! and state, who may do what, and the deletion handshake with the
//! provisioner that returns the quota.

mod support;

use support::*;

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
        .domain(DomainOp::Reorganise(ndc_core::Reorg::Merge {
            sources: vec!["hue".into()],
            into: ndc_core::MergeTarget::Existing("ha-noi".into()),
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
