//! A catalogue of bad tenancy inputs, through gRPC and the CLI: each gets a
//! clear error and leaves the store's revision where it was.

mod support;

use anyhow::{ensure, Context, Result};
use ndc_api::convert;
use ndc_api::tenants::{self as pb};
use ndc_core::{Level, TenantSpec};
use support::tenancy::*;
use support::*;
use tonic::Code;

/// Each bad input gets a clear error that says what to fix, and the store's
/// revision does not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalogue_of_bad_inputs_changes_nothing() -> Result<()> {
    let c = national(1).await?;
    let addr = c.addr(1);
    let mut t = tenants(&addr, OPERATOR)?;
    // Fixtures for some cases: a suspended province and a central body.
    create(
        &mut t,
        &spec("sus", Level::Province, Some("vn"), Some("02"), 1),
    )
    .await?;
    t.update(pb::UpdateTenantRequest {
        id: "sus".into(),
        state: Some("suspended".into()),
        ..Default::default()
    })
    .await?;
    create(
        &mut t,
        &spec("bo-y-te", Level::Central, Some("vn"), None, 1),
    )
    .await?;
    create(
        &mut t,
        &spec("da-xoa", Level::Province, Some("vn"), Some("03"), 1),
    )
    .await?;
    t.delete(pb::DeleteTenantRequest {
        id: "da-xoa".into(),
        decision: String::new(),
    })
    .await?;

    let s = |f: &dyn Fn(&mut TenantSpec)| {
        let mut x = spec("moi", Level::Province, Some("vn"), Some("33"), 1);
        f(&mut x);
        convert::spec_to_pb(&x)
    };
    let mut creates: Vec<(&str, pb::TenantSpec, Code, &str)> = vec![
        (
            "empty id",
            s(&|x| x.id = String::new()),
            Code::InvalidArgument,
            "id is empty",
        ),
        (
            "uppercase id",
            s(&|x| x.id = "Ha-Noi".into()),
            Code::InvalidArgument,
            "only lowercase",
        ),
        (
            "diacritics in id",
            s(&|x| x.id = "hà-nội".into()),
            Code::InvalidArgument,
            "only lowercase",
        ),
        (
            "underscore in id",
            s(&|x| x.id = "ha_noi".into()),
            Code::InvalidArgument,
            "only lowercase",
        ),
        (
            "space in id",
            s(&|x| x.id = "ha noi".into()),
            Code::InvalidArgument,
            "only lowercase",
        ),
        (
            "leading dash",
            s(&|x| x.id = "-hn".into()),
            Code::InvalidArgument,
            "start and end",
        ),
        (
            "trailing dash",
            s(&|x| x.id = "hn-".into()),
            Code::InvalidArgument,
            "start and end",
        ),
        (
            "id too long",
            s(&|x| x.id = "a".repeat(49)),
            Code::InvalidArgument,
            "limit is 48",
        ),
        (
            "empty name",
            s(&|x| x.display_name = String::new()),
            Code::InvalidArgument,
            "display name is empty",
        ),
        (
            "blank name",
            s(&|x| x.display_name = "   ".into()),
            Code::InvalidArgument,
            "display name is empty",
        ),
        (
            "name too long",
            s(&|x| x.display_name = "ư".repeat(201)),
            Code::InvalidArgument,
            "limit is 200",
        ),
        (
            "control character in name",
            s(&|x| x.display_name = "Hà\u{7}Nội".into()),
            Code::InvalidArgument,
            "control character",
        ),
        (
            "province without code",
            s(&|x| x.admin_code = None),
            Code::InvalidArgument,
            "2 digits",
        ),
        (
            "one-digit province code",
            s(&|x| x.admin_code = Some("1".into())),
            Code::InvalidArgument,
            "exactly 2 digits",
        ),
        (
            "letters in code",
            s(&|x| x.admin_code = Some("0a".into())),
            Code::InvalidArgument,
            "exactly 2 digits",
        ),
        (
            "short commune code",
            s(&|x| {
                x.level = Level::Commune;
                x.parent = Some("ha-noi".into());
                x.admin_code = Some("123".into())
            }),
            Code::InvalidArgument,
            "exactly 5 digits",
        ),
        (
            "central body with a code",
            s(&|x| {
                x.level = Level::Central;
                x.admin_code = Some("01".into())
            }),
            Code::InvalidArgument,
            "no administrative code",
        ),
        (
            "code already used",
            s(&|x| x.admin_code = Some("01".into())),
            Code::AlreadyExists,
            "already used by province tenant ha-noi",
        ),
        (
            "security level 0",
            s(&|x| x.security_level = 0),
            Code::InvalidArgument,
            "1 to 5",
        ),
        (
            "security level 6",
            s(&|x| x.security_level = 6),
            Code::InvalidArgument,
            "1 to 5",
        ),
        (
            "bad label key",
            s(&|x| {
                x.labels.insert("-x".into(), "y".into());
            }),
            Code::InvalidArgument,
            "label key",
        ),
        (
            "bad label value",
            s(&|x| {
                x.labels.insert("vung".into(), "miền bắc".into());
            }),
            Code::InvalidArgument,
            "invalid value",
        ),
        (
            "too many labels",
            s(&|x| {
                for i in 0..65 {
                    x.labels.insert(format!("k{i}"), "v".into());
                }
            }),
            Code::InvalidArgument,
            "limit of 64",
        ),
        (
            "province without parent",
            s(&|x| x.parent = None),
            Code::InvalidArgument,
            "needs a parent of level central",
        ),
        (
            "unknown parent",
            s(&|x| x.parent = Some("nowhere".into())),
            Code::FailedPrecondition,
            "parent nowhere not found",
        ),
        (
            "commune under a central body",
            s(&|x| {
                x.level = Level::Commune;
                x.admin_code = Some("55555".into())
            }),
            Code::InvalidArgument,
            "must be province",
        ),
        (
            "province under a province",
            s(&|x| x.parent = Some("ha-noi".into())),
            Code::InvalidArgument,
            "must be central",
        ),
        (
            "parent suspended",
            s(&|x| {
                x.level = Level::Commune;
                x.parent = Some("sus".into());
                x.admin_code = Some("55556".into())
            }),
            Code::FailedPrecondition,
            "only an active tenant",
        ),
        (
            "duplicate id",
            s(&|x| x.id = "ha-noi".into()),
            Code::AlreadyExists,
            "already exists",
        ),
        (
            "id of a deleted tenant",
            s(&|x| x.id = "da-xoa".into()),
            Code::AlreadyExists,
            "never given again",
        ),
        (
            "above the parent's room",
            s(&|x| {
                x.level = Level::Commune;
                x.parent = Some("ha-noi".into());
                x.admin_code = Some("55557".into());
                x.quota = cores(31)
            }),
            Code::FailedPrecondition,
            "has 30000 left",
        ),
        (
            "overflowing quota",
            s(&|x| x.quota.memory_bytes = u64::MAX),
            Code::FailedPrecondition,
            "vn",
        ),
    ];
    let mut level = s(&|_| {});
    level.level = "district".into();
    creates.push((
        "unknown level",
        level,
        Code::InvalidArgument,
        "unknown level",
    ));
    let mut branch = s(&|_| {});
    branch.branch = "army".into();
    creates.push((
        "unknown branch",
        branch,
        Code::InvalidArgument,
        "unknown branch",
    ));
    let mut big = s(&|_| {});
    big.security_level = 300;
    creates.push((
        "security level out of u8",
        big,
        Code::InvalidArgument,
        "out of range",
    ));

    let mut checked = 0;
    for (name, spec, code, text) in creates {
        let before = revision(&addr).await?;
        let err = t
            .create(pb::CreateTenantRequest {
                spec: Some(spec),
                decision: String::new(),
            })
            .await
            .expect_err(name);
        ensure!(
            err.code() == code && err.message().contains(text),
            "{name}: got {:?} {:?}, want {code:?} with {text:?}",
            err.code(),
            err.message()
        );
        ensure!(
            revision(&addr).await? == before,
            "{name}: the store changed"
        );
        checked += 1;
    }

    let update = |id: &str| pb::UpdateTenantRequest {
        id: id.into(),
        ..Default::default()
    };
    let updates: Vec<(&str, pb::UpdateTenantRequest, Code, &str)> = vec![
        (
            "update unknown tenant",
            pb::UpdateTenantRequest {
                display_name: Some("X".into()),
                ..update("nope")
            },
            Code::NotFound,
            "not found",
        ),
        (
            "quota below what is handed out",
            pb::UpdateTenantRequest {
                quota: Some(convert::quota_to_pb(&cores(5))),
                ..update("ha-noi")
            },
            Code::FailedPrecondition,
            "cannot go below",
        ),
        (
            "child quota above the parent's room",
            pb::UpdateTenantRequest {
                quota: Some(convert::quota_to_pb(&cores(41))),
                ..update("ba-dinh")
            },
            Code::FailedPrecondition,
            "cannot hand out",
        ),
        (
            "unknown state",
            pb::UpdateTenantRequest {
                state: Some("paused".into()),
                ..update("ha-noi")
            },
            Code::InvalidArgument,
            "unknown state",
        ),
        (
            "retire a tenant with children",
            pb::UpdateTenantRequest {
                state: Some("retired".into()),
                ..update("ha-noi")
            },
            Code::FailedPrecondition,
            "child tenant",
        ),
        (
            "rename to an empty name",
            pb::UpdateTenantRequest {
                display_name: Some(" ".into()),
                ..update("ha-noi")
            },
            Code::InvalidArgument,
            "display name is empty",
        ),
    ];
    for (name, req, code, text) in updates {
        let before = revision(&addr).await?;
        let err = t.update(req).await.expect_err(name);
        ensure!(
            err.code() == code && err.message().contains(text),
            "{name}: got {:?} {:?}",
            err.code(),
            err.message()
        );
        ensure!(
            revision(&addr).await? == before,
            "{name}: the store changed"
        );
        checked += 1;
    }

    let deletes = [
        (
            "delete a tenant with children",
            "ha-noi",
            Code::FailedPrecondition,
            "child tenant",
        ),
        (
            "delete a protected tenant",
            "hue",
            Code::FailedPrecondition,
            "deletion protection",
        ),
        (
            "delete an unknown tenant",
            "nope",
            Code::NotFound,
            "not found",
        ),
    ];
    for (name, id, code, text) in deletes {
        let before = revision(&addr).await?;
        let err = t
            .delete(pb::DeleteTenantRequest {
                id: id.into(),
                decision: String::new(),
            })
            .await
            .expect_err(name);
        ensure!(
            err.code() == code && err.message().contains(text),
            "{name}: got {:?} {:?}",
            err.code(),
            err.message()
        );
        ensure!(
            revision(&addr).await? == before,
            "{name}: the store changed"
        );
        checked += 1;
    }

    use ndc_core::{MergeTarget, Reorg};
    let reorgs: Vec<(&str, Reorg, Code, &str)> = vec![
        (
            "merge without sources",
            Reorg::Merge {
                sources: vec![],
                into: MergeTarget::Existing("ha-noi".into()),
            },
            Code::InvalidArgument,
            "at least one source",
        ),
        (
            "merge into itself",
            Reorg::Merge {
                sources: vec!["hue".into()],
                into: MergeTarget::Existing("hue".into()),
            },
            Code::InvalidArgument,
            "into itself",
        ),
        (
            "merge across levels",
            Reorg::Merge {
                sources: vec!["ba-dinh".into()],
                into: MergeTarget::Existing("hue".into()),
            },
            Code::InvalidArgument,
            "share a level",
        ),
        (
            "merge the same source twice",
            Reorg::Merge {
                sources: vec!["hue".into(), "hue".into()],
                into: MergeTarget::Existing("ha-noi".into()),
            },
            Code::InvalidArgument,
            "twice",
        ),
        (
            "reparent into its own subtree",
            Reorg::Reparent {
                tenant: "vn".into(),
                parent: "bo-y-te".into(),
            },
            Code::FailedPrecondition,
            "cycle",
        ),
        (
            "reparent to the same parent",
            Reorg::Reparent {
                tenant: "ba-dinh".into(),
                parent: "ha-noi".into(),
            },
            Code::InvalidArgument,
            "already the parent",
        ),
        (
            "reparent a commune under a central body",
            Reorg::Reparent {
                tenant: "ba-dinh".into(),
                parent: "vn".into(),
            },
            Code::InvalidArgument,
            "must be province",
        ),
        (
            "rename onto an existing id",
            Reorg::Rename {
                from: "hue".into(),
                to: "ha-noi".into(),
            },
            Code::AlreadyExists,
            "already exists",
        ),
        (
            "rename to an invalid id",
            Reorg::Rename {
                from: "hue".into(),
                to: "Huế".into(),
            },
            Code::InvalidArgument,
            "only lowercase",
        ),
        (
            "rename to the same id",
            Reorg::Rename {
                from: "hue".into(),
                to: "hue".into(),
            },
            Code::InvalidArgument,
            "different id",
        ),
    ];
    for (name, reorg, code, text) in reorgs {
        let before = revision(&addr).await?;
        let err = t
            .reorganise(convert::reorg_to_pb(&reorg, None))
            .await
            .expect_err(name);
        ensure!(
            err.code() == code && err.message().contains(text),
            "{name}: got {:?} {:?}",
            err.code(),
            err.message()
        );
        ensure!(
            revision(&addr).await? == before,
            "{name}: the store changed"
        );
        checked += 1;
    }

    // Through the CLI: malformed YAML, unknown fields, bad quantities.
    let before = revision(&addr).await?;
    let dir = tempfile::tempdir()?;
    let cases = [
        ("malformed YAML", "kind: Tenant\nspec: [unclosed\n", 1),
        ("unknown field", "kind: Tenant\nspec:\n  id: moi\n  display_name: Mới\n  level: central\n  branch: state\n  security_level: 3\n  colour: red\n", 1),
        ("second document bad", "kind: Tenant\nspec:\n  id: moi\n  display_name: Mới\n  level: central\n  branch: state\n  security_level: 3\n---\nkind: Tenant\nspec:\n  id: BAD\n  display_name: X\n  level: central\n  branch: state\n  security_level: 3\n", 1),
    ];
    for (name, yaml, want) in cases {
        let f = dir.path().join("t.yaml");
        std::fs::write(&f, yaml)?;
        let (code, _, err) = ndc(&[
            "--endpoints",
            &addr,
            "--token",
            OPERATOR,
            "apply",
            "-f",
            f.to_str().context("utf-8")?,
        ])?;
        ensure!(
            code == want && err.contains("was not applied"),
            "{name}: {code} {err}"
        );
        checked += 1;
    }
    let (code, _, err) = ndc(&[
        "--endpoints",
        &addr,
        "--token",
        OPERATOR,
        "tenant",
        "create",
        "--id",
        "x",
        "--name",
        "X",
        "--level",
        "central",
        "--cpu",
        "lots",
    ])?;
    ensure!(
        code == 2 && err.contains("invalid CPU amount"),
        "{code} {err}"
    );
    checked += 1;
    ensure!(
        revision(&addr).await? == before,
        "the CLI cases changed the store"
    );
    ensure!(checked >= 40, "only {checked} cases");
    eprintln!("{checked} bad inputs refused, none changed the store");
    Ok(())
}
