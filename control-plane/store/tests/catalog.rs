//! The shared-service catalogue through the state machine: one service per
//! capability and scope (an exemption needs a recorded decision), who may
//! register, and subscriptions that respect scope and dependencies.

mod support;

use support::*;

fn service(
    name: &str,
    cap: &str,
    from: Level,
    to: Level,
    needs: &[&str],
) -> ndc_core::catalog::ServiceSpec {
    ndc_core::catalog::ServiceSpec {
        name: name.into(),
        display_name: format!("Dịch vụ {name}"),
        capability: cap.into(),
        layer: "application".into(),
        from,
        to,
        topology: ndc_core::catalog::Topology::Central,
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
        op: ndc_core::catalog::CatalogOp,
    ) -> Response {
        self.apply(Command::Catalog(Box::new(
            ndc_core::catalog::CatalogRequest {
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
    use ndc_core::catalog::CatalogOp::*;
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
    use ndc_core::catalog::CatalogOp::*;
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
        .domain(DomainOp::Reorganise(ndc_core::Reorg::Merge {
            sources: vec!["hue".into()],
            into: ndc_core::MergeTarget::Existing("ha-noi".into()),
        }))
        .await;
    assert!(matches!(r, Response::Domain { .. }), "{r:?}");
    let keys: Vec<String> = sm
        .reader
        .list(ndc_store::keys::SUBSCRIPTIONS_PREFIX, None, 0)
        .expect("list")
        .items
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["/ndc/subscriptions/ha-noi/bao-cao"]);
}
