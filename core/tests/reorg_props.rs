//! Property tests: any sequence of admitted requests keeps quota
//! conservation at every depth, and reorganisations lose nothing, conserve
//! totals and keep every old id resolvable.

use std::collections::BTreeSet;

use ndc_core::*;
use proptest::prelude::*;

fn q(units: u64) -> Quota {
    Quota {
        cpu_millis: units * 1000,
        memory_bytes: units << 30,
        storage_bytes: units << 32,
        buckets: units,
        databases: units,
        namespaces: units,
    }
}

fn spec(
    id: &str,
    level: Level,
    parent: Option<&str>,
    code: Option<String>,
    units: u64,
) -> TenantSpec {
    TenantSpec {
        id: id.into(),
        display_name: format!("Đơn vị {id}"),
        level,
        branch: Branch::State,
        parent: parent.map(Into::into),
        admin_code: code,
        security_level: 3,
        labels: Default::default(),
        quota: q(units),
        deletion_protection: false,
    }
}

fn admit(reg: &mut Registry, check: impl FnOnce(&Registry) -> Result<Changeset>) -> bool {
    match check(reg) {
        Ok(cs) => {
            reg.apply(&cs);
            true
        }
        Err(_) => false,
    }
}

#[derive(Debug, Clone)]
struct Setup {
    provinces: Vec<u64>,
    communes: Vec<(usize, u64)>,
    claims: Vec<(usize, u64)>,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop::collection::vec(1u64..400, 2..6),
        prop::collection::vec((0usize..8, 1u64..120), 0..16),
        prop::collection::vec((0usize..16, 1u64..30), 0..10),
    )
        .prop_map(|(provinces, communes, claims)| Setup {
            provinces,
            communes,
            claims,
        })
}

fn build(s: &Setup) -> Registry {
    let mut reg = Registry::default();
    assert!(admit(&mut reg, |r| r.check_create(spec(
        "vn",
        Level::Central,
        None,
        None,
        1_000
    ))));
    for (i, units) in s.provinces.iter().enumerate() {
        let id = format!("p{i}");
        admit(&mut reg, |r| {
            r.check_create(spec(
                &id,
                Level::Province,
                Some("vn"),
                Some(format!("{:02}", i + 1)),
                *units,
            ))
        });
    }
    let provinces: Vec<String> = reg
        .iter()
        .filter(|t| t.level == Level::Province)
        .map(|t| t.id.clone())
        .collect();
    for (j, (p, units)) in s.communes.iter().enumerate() {
        let parent = &provinces[p % provinces.len()];
        let id = format!("c{j}");
        admit(&mut reg, |r| {
            r.check_create(spec(
                &id,
                Level::Commune,
                Some(parent),
                Some(format!("{:05}", j + 1)),
                *units,
            ))
        });
    }
    let communes: Vec<String> = reg
        .iter()
        .filter(|t| t.level == Level::Commune)
        .map(|t| t.id.clone())
        .collect();
    if !communes.is_empty() {
        for (k, (c, units)) in s.claims.iter().enumerate() {
            let owner = &communes[c % communes.len()];
            admit(&mut reg, |r| {
                r.check_add_claim(owner, &format!("claim-{k}"), &q(*units / 2))
            });
        }
    }
    reg.check_invariants().expect("built registry is valid");
    reg
}

#[derive(Debug, Clone)]
enum Op {
    Merge {
        communes: bool,
        sources: Vec<usize>,
        target: usize,
        new: bool,
    },
    Reparent {
        commune: usize,
        province: usize,
    },
    Rename {
        idx: usize,
        n: u32,
    },
    Quota {
        idx: usize,
        units: u64,
    },
    Delete {
        idx: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            any::<bool>(),
            prop::collection::vec(0usize..32, 1..4),
            0usize..32,
            any::<bool>()
        )
            .prop_map(|(communes, sources, target, new)| Op::Merge {
                communes,
                sources,
                target,
                new
            }),
        (0usize..32, 0usize..32).prop_map(|(commune, province)| Op::Reparent { commune, province }),
        (0usize..64, 0u32..1000).prop_map(|(idx, n)| Op::Rename { idx, n }),
        (0usize..64, 0u64..500).prop_map(|(idx, units)| Op::Quota { idx, units }),
        (0usize..64).prop_map(|idx| Op::Delete { idx }),
    ]
}

fn ids(reg: &Registry, level: Option<Level>) -> Vec<String> {
    reg.iter()
        .filter(|t| level.is_none_or(|l| t.level == l))
        .map(|t| t.id.clone())
        .collect()
}

fn pick(list: &[String], i: usize) -> Option<String> {
    (!list.is_empty()).then(|| list[i % list.len()].clone())
}

fn level_total(reg: &Registry, level: Level) -> Quota {
    reg.iter()
        .filter(|t| t.level == level)
        .fold(Quota::default(), |a, t| {
            a.checked_add(&t.quota).expect("no overflow")
        })
}

fn all_names(reg: &Registry) -> BTreeSet<String> {
    reg.iter()
        .flat_map(|t| std::iter::once(t.id.clone()).chain(t.aliases.iter().cloned()))
        .collect()
}

fn all_claims(reg: &Registry) -> BTreeSet<String> {
    reg.iter().flat_map(|t| t.claims.iter().cloned()).collect()
}

fn plan_for(reg: &Registry, op: &Op, step: usize) -> Option<Reorg> {
    match op {
        Op::Merge {
            communes,
            sources,
            target,
            new,
        } => {
            let level = if *communes {
                Level::Commune
            } else {
                Level::Province
            };
            let pool = ids(reg, Some(level));
            let sources: Vec<String> = sources.iter().filter_map(|i| pick(&pool, *i)).collect();
            let into = if *new {
                let parent = reg.get(sources.first()?)?.parent.clone();
                let code = if *communes {
                    format!("{:05}", 90_000 + step)
                } else {
                    format!("{:02}", 90 + step % 10)
                };
                let mut s = spec(&format!("m{step}"), level, parent.as_deref(), Some(code), 0);
                s.quota = Quota::default();
                MergeTarget::New(s)
            } else {
                MergeTarget::Existing(pick(&pool, *target)?)
            };
            Some(Reorg::Merge { sources, into })
        }
        Op::Reparent { commune, province } => Some(Reorg::Reparent {
            tenant: pick(&ids(reg, Some(Level::Commune)), *commune)?,
            parent: pick(&ids(reg, Some(Level::Province)), *province)?,
        }),
        Op::Rename { idx, n } => Some(Reorg::Rename {
            from: pick(&ids(reg, None), *idx)?,
            to: format!("r{n}"),
        }),
        _ => None,
    }
}

static APPLIED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn any_admitted_sequence_keeps_every_rule(s in setup(), ops in prop::collection::vec(op(), 1..24)) {
        let mut reg = build(&s);
        for (step, op) in ops.iter().enumerate() {
            let names_before = all_names(&reg);
            let claims_before = all_claims(&reg);
            let totals_before: Vec<Quota> = Level::ALL.iter().map(|l| level_total(&reg, *l)).collect();
            let count_before = reg.len();
            if let Some(reorg) = plan_for(&reg, op, step) {
                let Ok(plan) = reg.plan(&reorg) else { continue };
                APPLIED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                reg.apply(&plan.changeset);
                prop_assert_eq!(reg.check_invariants(), Ok(()), "after {:?}", reorg);
                // Nothing is lost: every claim, and every old id resolves.
                prop_assert_eq!(all_claims(&reg), claims_before.clone());
                for n in &names_before {
                    prop_assert!(reg.resolve(n).is_some(), "{} no longer resolves after {:?}", n, reorg);
                }
                // Totals per level are conserved.
                let totals_after: Vec<Quota> = Level::ALL.iter().map(|l| level_total(&reg, *l)).collect();
                prop_assert_eq!(&totals_after, &totals_before, "totals changed by {:?}", reorg);
                // Every move the plan listed happened.
                for m in &plan.moves {
                    if m.kind == MoveKind::Claim {
                        prop_assert!(reg.resolve(&m.to).is_some_and(|t| t.claims.contains(&m.id)));
                    }
                    if m.kind == MoveKind::Child {
                        prop_assert_eq!(reg.get(&m.id).and_then(|t| t.parent.clone()), reg.resolve(&m.to).map(|t| t.id.clone()));
                    }
                }
                if let Reorg::Merge { sources, into } = &reorg {
                    let added = usize::from(matches!(into, MergeTarget::New(_)));
                    prop_assert_eq!(reg.len(), count_before - sources.len() + added);
                }
            } else {
                let all = ids(&reg, None);
                let cs = match op {
                    Op::Quota { idx, units } => pick(&all, *idx).map(|id| reg.check_update(&id, TenantPatch { quota: Some(q(*units)), ..Default::default() })),
                    Op::Delete { idx } => pick(&all, *idx).map(|id| reg.check_delete(&id)),
                    _ => None,
                };
                if let Some(Ok(cs)) = cs {
                    reg.apply(&cs);
                    prop_assert_eq!(reg.check_invariants(), Ok(()), "after {:?}", op);
                }
            }
        }
    }

    #[test]
    fn a_refused_request_changes_nothing(s in setup(), units in 0u64..5_000, idx in 0usize..64) {
        let reg = build(&s);
        let all = ids(&reg, None);
        let id = all[idx % all.len()].clone();
        let before: Vec<Tenant> = reg.iter().cloned().collect();
        // Checks never touch the registry, whatever they answer.
        let _ = reg.check_update(&id, TenantPatch { quota: Some(q(units)), ..Default::default() });
        let _ = reg.check_delete(&id);
        let _ = reg.check_create(spec("x", Level::Commune, Some(&id), Some("99999".into()), units));
        let after: Vec<Tenant> = reg.iter().cloned().collect();
        prop_assert_eq!(before, after);
    }
}

/// The property above is only worth something if reorganisations do get
/// admitted: run it and count.
#[test]
fn the_property_exercises_real_reorganisations() {
    any_admitted_sequence_keeps_every_rule();
    let applied = APPLIED.load(std::sync::atomic::Ordering::Relaxed);
    assert!(applied > 100, "only {applied} reorganisations were applied");
}

#[test]
fn a_parent_never_hands_out_more_than_it_has() {
    let mut reg = Registry::default();
    assert!(admit(&mut reg, |r| r.check_create(spec(
        "vn",
        Level::Central,
        None,
        None,
        100
    ))));
    assert!(admit(&mut reg, |r| r.check_create(spec(
        "ha-noi",
        Level::Province,
        Some("vn"),
        Some("01".into()),
        60
    ))));
    let err = reg
        .check_create(spec(
            "hue",
            Level::Province,
            Some("vn"),
            Some("46".into()),
            41,
        ))
        .expect_err("41 + 60 > 100");
    assert!(
        matches!(err, Error::QuotaExceedsParent { ref parent, available: 40_000, requested: 41_000, .. } if parent == "vn"),
        "{err}"
    );
    assert!(err.to_string().contains("has 40000 left"), "{err}");
    // Exactly at the boundary is fine.
    assert!(admit(&mut reg, |r| r.check_create(spec(
        "hue",
        Level::Province,
        Some("vn"),
        Some("46".into()),
        40
    ))));
    // A quota cannot shrink below what is handed out.
    let err = reg
        .check_update(
            "vn",
            TenantPatch {
                quota: Some(q(99)),
                ..Default::default()
            },
        )
        .expect_err("below committed");
    assert!(matches!(err, Error::QuotaBelowCommitted { .. }), "{err}");
    // At every depth: a commune under ha-noi is bounded by ha-noi.
    assert!(admit(&mut reg, |r| r.check_create(spec(
        "ba-dinh",
        Level::Commune,
        Some("ha-noi"),
        Some("00004".into()),
        60
    ))));
    let err = reg
        .check_create(spec(
            "hoan-kiem",
            Level::Commune,
            Some("ha-noi"),
            Some("00070".into()),
            1,
        ))
        .expect_err("ha-noi is full");
    assert!(
        matches!(err, Error::QuotaExceedsParent { ref parent, .. } if parent == "ha-noi"),
        "{err}"
    );
    reg.check_invariants().expect("valid");
}

#[test]
fn rename_and_merge_keep_old_ids() {
    let mut reg = Registry::default();
    assert!(admit(&mut reg, |r| r.check_create(spec(
        "vn",
        Level::Central,
        None,
        None,
        1000
    ))));
    assert!(admit(&mut reg, |r| r.check_create(spec(
        "ha-giang",
        Level::Province,
        Some("vn"),
        Some("02".into()),
        10
    ))));
    assert!(admit(&mut reg, |r| r.check_create(spec(
        "tuyen-quang",
        Level::Province,
        Some("vn"),
        Some("08".into()),
        20
    ))));
    assert!(admit(&mut reg, |r| r.check_create(spec(
        "x1",
        Level::Commune,
        Some("ha-giang"),
        Some("00001".into()),
        5
    ))));
    assert!(admit(&mut reg, |r| r.check_add_claim(
        "x1",
        "bucket-a",
        &q(1)
    )));
    // 2025: Hà Giang merged into Tuyên Quang.
    let plan = reg
        .plan(&Reorg::Merge {
            sources: vec!["ha-giang".into()],
            into: MergeTarget::Existing("tuyen-quang".into()),
        })
        .expect("plan");
    assert!(plan
        .moves
        .iter()
        .any(|m| m.kind == MoveKind::Child && m.id == "x1"));
    assert!(plan
        .quotas
        .iter()
        .any(|c| c.tenant == "tuyen-quang" && c.quota_after == Some(q(30))));
    reg.apply(&plan.changeset);
    assert_eq!(
        reg.resolve("ha-giang").map(|t| t.id.as_str()),
        Some("tuyen-quang")
    );
    assert_eq!(
        reg.get("x1").and_then(|t| t.parent.as_deref()),
        Some("tuyen-quang")
    );
    let plan = reg
        .plan(&Reorg::Rename {
            from: "tuyen-quang".into(),
            to: "tq".into(),
        })
        .expect("rename");
    reg.apply(&plan.changeset);
    for old in ["ha-giang", "tuyen-quang", "tq"] {
        assert_eq!(reg.resolve(old).map(|t| t.id.as_str()), Some("tq"), "{old}");
    }
    assert_eq!(reg.get("x1").and_then(|t| t.parent.as_deref()), Some("tq"));
    reg.check_invariants().expect("valid");
    // A deleted tenant's id is never given again.
    assert!(admit(&mut reg, |r| r.check_create(spec(
        "tmp",
        Level::Province,
        Some("vn"),
        Some("04".into()),
        1
    ))));
    assert!(admit(&mut reg, |r| r.check_delete("tmp")));
    let err = reg
        .check_create(spec(
            "tmp",
            Level::Province,
            Some("vn"),
            Some("04".into()),
            1,
        ))
        .expect_err("retired id");
    assert!(matches!(err, Error::IdRetired { .. }), "{err}");
    let err = reg
        .plan(&Reorg::Rename {
            from: "tq".into(),
            to: "tmp".into(),
        })
        .expect_err("retired id");
    assert!(matches!(err, Error::IdRetired { .. }), "{err}");
    // The old ids cannot be taken by a new tenant.
    let err = reg
        .check_create(spec(
            "ha-giang",
            Level::Province,
            Some("vn"),
            Some("03".into()),
            1,
        ))
        .expect_err("alias taken");
    assert!(matches!(err, Error::AliasTaken { .. }), "{err}");
}
