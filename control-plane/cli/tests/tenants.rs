//! Tenancy through real `ndc server` processes: rules under concurrency, a
//! catalogue of bad inputs, roles, the audit chain, and the CLI.

mod support;

use std::collections::BTreeMap;

use anyhow::{ensure, Context, Result};
use ndc_api::client::Auth;
use ndc_api::convert;
use ndc_api::tenants::tenants_client::TenantsClient;
use ndc_api::tenants::{self as pb};
use ndc_tenants::{Branch, Level, Quota, TenantSpec};
use support::*;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;

const OPERATOR: &str = "operator-token-0123456789";
const HANOI_ADMIN: &str = "hanoi-admin-token-0123456789";
const HUE_ADMIN: &str = "hue-admin-token-0123456789";
const AUDITOR: &str = "auditor-token-0123456789";

const CLUSTER_SECRET: &str = "cluster-secret-for-tests-0123456789";

const AUTH: &str = "users:
  - name: operator
    token: operator-token-0123456789
    roles: [dc-operator]
  - name: hanoi-admin
    token: hanoi-admin-token-0123456789
    roles: [\"tenant-admin:ha-noi\"]
  - name: hue-admin
    token: hue-admin-token-0123456789
    roles: [\"tenant-admin:hue\"]
  - name: auditor
    token: auditor-token-0123456789
    roles: [auditor]
";

type Tenants = TenantsClient<InterceptedService<Channel, Auth>>;

fn tenants(addr: &str, token: &str) -> Result<Tenants> {
    Ok(TenantsClient::with_interceptor(
        ndc_api::client::channel(addr)?,
        Auth::new(Some(token))?,
    ))
}

fn cores(n: u64) -> Quota {
    Quota {
        cpu_millis: n * 1000,
        memory_bytes: n << 30,
        storage_bytes: n << 34,
        buckets: n,
        databases: n,
        namespaces: n,
    }
}

fn spec(id: &str, level: Level, parent: Option<&str>, code: Option<&str>, n: u64) -> TenantSpec {
    TenantSpec {
        id: id.into(),
        display_name: format!("Đơn vị {id}"),
        level,
        branch: Branch::State,
        parent: parent.map(Into::into),
        admin_code: code.map(Into::into),
        security_level: 3,
        labels: BTreeMap::new(),
        quota: cores(n),
        deletion_protection: false,
    }
}

async fn create(t: &mut Tenants, s: &TenantSpec) -> Result<pb::TenantResponse, tonic::Status> {
    t.create(pb::CreateTenantRequest {
        spec: Some(convert::spec_to_pb(s)),
        decision: "QĐ thử nghiệm".into(),
    })
    .await
    .map(|r| r.into_inner())
}

/// A cluster with an auth file, and the national root, Hà Nội, one of its
/// communes and Huế.
async fn national(nodes: u64) -> Result<Cluster> {
    let dir = tempfile::tempdir()?;
    let auth = dir.path().join("auth.yaml");
    std::fs::write(&auth, AUTH)?;
    let mut c = Cluster::new(&["--auth-file", auth.to_str().context("utf-8")?])?;
    // Keep the auth file alive as long as the cluster's temp dir.
    let keep = c.dir.path().join("auth.yaml");
    std::fs::copy(&auth, &keep)?;
    let secret = c.dir.path().join("cluster.secret");
    std::fs::write(&secret, CLUSTER_SECRET)?;
    c.flags = vec![
        "--auth-file".into(),
        keep.to_str().context("utf-8")?.into(),
        "--cluster-secret-file".into(),
        secret.to_str().context("utf-8")?.into(),
    ];
    let a1 = c.start(1, "127.0.0.1:0", Start::Init).await?;
    for id in 2..=nodes {
        c.start(id, "127.0.0.1:0", Start::Join(&a1)).await?;
    }
    let voters: Vec<u64> = (1..=nodes).collect();
    wait_for("the leader", || {
        let a1 = a1.clone();
        let voters = voters.clone();
        async move {
            let ch = ndc_api::client::channel(&a1).ok()?;
            let s = ndc_api::cluster::cluster_client::ClusterClient::with_interceptor(
                ch,
                Auth::new(Some(OPERATOR)).ok()?,
            )
            .status(ndc_api::cluster::StatusRequest {})
            .await
            .ok()?
            .into_inner();
            let mut v: Vec<u64> = s.members.iter().filter(|m| m.voter).map(|m| m.id).collect();
            v.sort();
            (s.leader_id.is_some() && v == voters && !s.joint).then_some(())
        }
    })
    .await?;
    let mut op = tenants(&a1, OPERATOR)?;
    create(&mut op, &spec("vn", Level::Central, None, None, 100)).await?;
    create(
        &mut op,
        &spec("ha-noi", Level::Province, Some("vn"), Some("01"), 40),
    )
    .await?;
    create(
        &mut op,
        &spec("ba-dinh", Level::Commune, Some("ha-noi"), Some("00004"), 10),
    )
    .await?;
    let mut hue = spec("hue", Level::Province, Some("vn"), Some("46"), 20);
    hue.deletion_protection = true;
    create(&mut op, &hue).await?;
    create(
        &mut op,
        &spec("phu-xuan", Level::Commune, Some("hue"), Some("19753"), 5),
    )
    .await?;
    Ok(c)
}

async fn status_with_token(addr: &str) -> Result<bool> {
    let ch = ndc_api::client::channel(addr)?;
    let s = ndc_api::cluster::cluster_client::ClusterClient::with_interceptor(
        ch,
        Auth::new(Some(OPERATOR))?,
    )
    .status(ndc_api::cluster::StatusRequest {})
    .await?
    .into_inner();
    Ok(s.state == "leader")
}

async fn revision(addr: &str) -> Result<u64> {
    let ch = ndc_api::client::channel(addr)?;
    Ok(
        ndc_api::kv::kv_client::KvClient::with_interceptor(ch, Auth::new(Some(OPERATOR))?)
            .get(ndc_api::kv::GetRequest {
                key: "/probe".into(),
                consistency: 0,
            })
            .await?
            .into_inner()
            .revision,
    )
}

/// Many clients on different nodes race to take more than a parent has: the
/// parent's quota is never exceeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_clients_never_overdraw_a_parent() -> Result<()> {
    let c = national(3).await?;
    let endpoints = c.endpoints();
    // Hà Nội has 40 cores and gave 10 to Ba Đình: 30 left, so at most 15 of
    // these 24 communes of 2 cores each can be admitted.
    let mut tasks = Vec::new();
    for i in 0..24u64 {
        let addr = endpoints[i as usize % endpoints.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut t = tenants(&addr, OPERATOR)?;
            let s = spec(
                &format!("xa-{i}"),
                Level::Commune,
                Some("ha-noi"),
                Some(&format!("{:05}", 100 + i)),
                2,
            );
            anyhow::Ok(create(&mut t, &s).await)
        }));
    }
    let (mut admitted, mut refused) = (0, 0);
    for t in tasks {
        match t.await?? {
            Ok(_) => admitted += 1,
            Err(s) => {
                ensure!(
                    s.code() == Code::FailedPrecondition && s.message().contains("cannot hand out"),
                    "{s:?}"
                );
                refused += 1;
            }
        }
    }
    ensure!(
        admitted == 15 && refused == 9,
        "admitted {admitted}, refused {refused}"
    );
    let mut op = tenants(&endpoints[0], OPERATOR)?;
    let hn = op
        .get(pb::GetTenantRequest {
            id: "ha-noi".into(),
            stale: false,
        })
        .await?
        .into_inner()
        .tenant
        .context("ha-noi")?;
    let hn = convert::tenant_from_pb(hn).map_err(anyhow::Error::msg)?;
    ensure!(hn.allocated == cores(40), "allocated {:?}", hn.allocated);
    let kids = op
        .list(pb::ListTenantsRequest {
            parent: "ha-noi".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .tenants;
    let sum: u64 = kids
        .iter()
        .map(|k| {
            k.spec
                .as_ref()
                .and_then(|s| s.quota.as_ref())
                .map(|q| q.cpu_millis)
                .unwrap_or(0)
        })
        .sum();
    ensure!(
        sum <= 40_000 && kids.len() == 16,
        "children hold {sum} millicores in {} tenants",
        kids.len()
    );
    Ok(())
}

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

    use ndc_tenants::{MergeTarget, Reorg};
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

/// A tenant-admin of one province cannot read or change another province or
/// its communes; an auditor reads but cannot change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_keep_tenants_apart() -> Result<()> {
    let c = national(1).await?;
    let addr = c.addr(1);
    let mut hn = tenants(&addr, HANOI_ADMIN)?;

    // Its own subtree: allowed.
    create(
        &mut hn,
        &spec(
            "hoan-kiem",
            Level::Commune,
            Some("ha-noi"),
            Some("00070"),
            2,
        ),
    )
    .await?;
    hn.update(pb::UpdateTenantRequest {
        id: "ba-dinh".into(),
        quota: Some(convert::quota_to_pb(&cores(12))),
        ..Default::default()
    })
    .await?;
    hn.update(pb::UpdateTenantRequest {
        id: "ha-noi".into(),
        set_labels: true,
        labels: [("vung".to_string(), "bac".to_string())].into(),
        ..Default::default()
    })
    .await?;
    hn.get(pb::GetTenantRequest {
        id: "ba-dinh".into(),
        stale: false,
    })
    .await?;

    let denied =
        |r: Result<tonic::Response<pb::TenantResponse>, tonic::Status>, what: &str| -> Result<()> {
            let e = r.expect_err(what);
            ensure!(e.code() == Code::PermissionDenied, "{what}: {e:?}");
            Ok(())
        };
    denied(
        hn.get(pb::GetTenantRequest {
            id: "hue".into(),
            stale: false,
        })
        .await,
        "read another province",
    )?;
    denied(
        hn.get(pb::GetTenantRequest {
            id: "phu-xuan".into(),
            stale: false,
        })
        .await,
        "read another province's commune",
    )?;
    denied(
        hn.update(pb::UpdateTenantRequest {
            id: "hue".into(),
            display_name: Some("X".into()),
            ..Default::default()
        })
        .await,
        "rename another province",
    )?;
    denied(
        hn.update(pb::UpdateTenantRequest {
            id: "phu-xuan".into(),
            quota: Some(convert::quota_to_pb(&cores(1))),
            ..Default::default()
        })
        .await,
        "change another province's commune",
    )?;
    denied(
        hn.update(pb::UpdateTenantRequest {
            id: "ha-noi".into(),
            quota: Some(convert::quota_to_pb(&cores(90))),
            ..Default::default()
        })
        .await,
        "raise its own quota",
    )?;
    denied(
        create(
            &mut hn,
            &spec("xa-moi", Level::Commune, Some("hue"), Some("19999"), 1),
        )
        .await
        .map(tonic::Response::new),
        "create under another province",
    )?;
    let e = hn
        .delete(pb::DeleteTenantRequest {
            id: "phu-xuan".into(),
            decision: String::new(),
        })
        .await
        .expect_err("delete");
    ensure!(e.code() == Code::PermissionDenied, "{e:?}");
    let e = hn
        .reorganise(convert::reorg_to_pb(
            &ndc_tenants::Reorg::Rename {
                from: "ba-dinh".into(),
                to: "ba-dinh-2".into(),
            },
            None,
        ))
        .await
        .expect_err("reorganise");
    ensure!(
        e.code() == Code::PermissionDenied && e.message().contains("dc-operator"),
        "{e:?}"
    );
    // Listing shows only its own subtree.
    let listed: Vec<String> = hn
        .list(pb::ListTenantsRequest::default())
        .await?
        .into_inner()
        .tenants
        .into_iter()
        .filter_map(|t| t.spec.map(|s| s.id))
        .collect();
    ensure!(
        listed
            .iter()
            .all(|id| ["ha-noi", "ba-dinh", "hoan-kiem"].contains(&id.as_str()))
            && listed.len() == 3,
        "{listed:?}"
    );
    for req in [
        pb::ListTenantsRequest {
            subtree: "hue".into(),
            ..Default::default()
        },
        pb::ListTenantsRequest {
            parent: "hue".into(),
            ..Default::default()
        },
    ] {
        let e = hn.list(req).await.expect_err("list another province");
        ensure!(e.code() == Code::PermissionDenied, "{e:?}");
    }

    // The auditor reads everything and changes nothing.
    let mut au = tenants(&addr, AUDITOR)?;
    au.get(pb::GetTenantRequest {
        id: "hue".into(),
        stale: false,
    })
    .await?;
    denied(
        create(&mut au, &spec("x", Level::Central, None, None, 1))
            .await
            .map(tonic::Response::new),
        "auditor creates",
    )?;
    // Hue's admin cannot see Hà Nội either.
    let mut hu = tenants(&addr, HUE_ADMIN)?;
    denied(
        hu.get(pb::GetTenantRequest {
            id: "ha-noi".into(),
            stale: false,
        })
        .await,
        "hue reads ha-noi",
    )?;
    // No token, or a wrong one.
    let mut anon = TenantsClient::new(ndc_api::client::channel(&addr)?);
    let e = anon
        .get(pb::GetTenantRequest {
            id: "vn".into(),
            stale: false,
        })
        .await
        .expect_err("anonymous");
    ensure!(e.code() == Code::Unauthenticated, "{e:?}");
    let mut wrong = tenants(&addr, "not-a-known-token-at-all")?;
    let e = wrong
        .get(pb::GetTenantRequest {
            id: "vn".into(),
            stale: false,
        })
        .await
        .expect_err("wrong token");
    ensure!(e.code() == Code::Unauthenticated, "{e:?}");
    // The node-to-node service wants the cluster secret: a client cannot
    // forward a write, join, or retire a node without it.
    use ndc_api::raft::raft_client::RaftClient;
    for secret in [None, Some("a-wrong-cluster-secret-0000")] {
        let mut raft =
            RaftClient::with_interceptor(ndc_api::client::channel(&addr)?, Auth::cluster(secret)?);
        let e = raft
            .retire(ndc_api::raft::Payload { data: vec![1] })
            .await
            .expect_err("retire without the secret");
        ensure!(
            e.code() == Code::Unauthenticated && e.message().contains("cluster"),
            "{e:?}"
        );
        let e = raft
            .forward(ndc_api::raft::Payload { data: vec![1] })
            .await
            .expect_err("forward without the secret");
        ensure!(e.code() == Code::Unauthenticated, "{e:?}");
    }
    ensure!(status_with_token(&addr).await?, "the node is still serving");
    Ok(())
}

/// Every accepted change is an audit record; `ndc audit verify` passes on a
/// real history and finds a record altered directly in RocksDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_chain_detects_tampering() -> Result<()> {
    let mut c = national(1).await?;
    let addr = c.addr(1);
    let eps = ["--endpoints", addr.as_str(), "--token", OPERATOR];
    // A reorganisation through the CLI, with its decision.
    let (code, out, err) = ndc(&[
        &eps[..],
        &[
            "tenant",
            "rename",
            "ba-dinh",
            "phuong-ba-dinh",
            "--decision",
            "NQ 1656/NQ-UBTVQH15",
            "--yes",
        ],
    ]
    .concat())?;
    ensure!(
        code == 0 && out.contains("rename ba-dinh to phuong-ba-dinh"),
        "{code} {out} {err}"
    );
    let (code, out, _) = ndc(&[&eps[..], &["tenant", "get", "ba-dinh"]].concat())?;
    ensure!(
        code == 0 && out.contains("phuong-ba-dinh"),
        "the old id resolves: {out}"
    );

    let (code, out, err) = ndc(&[&eps[..], &["audit", "verify"]].concat())?;
    ensure!(
        code == 0 && out.contains("audit chain intact: 6 record(s)"),
        "{code} {out} {err}"
    );
    let (code, out, _) = ndc(&[
        "--endpoints",
        &addr,
        "--token",
        AUDITOR,
        "audit",
        "list",
        "--action",
        "tenant.rename",
    ])?;
    ensure!(
        code == 0 && out.contains("NQ 1656/NQ-UBTVQH15") && out.contains("operator"),
        "{out}"
    );
    let (code, _, err) = ndc(&[
        "--endpoints",
        &addr,
        "--token",
        HANOI_ADMIN,
        "audit",
        "list",
    ])?;
    ensure!(
        code == 1 && err.contains("auditor"),
        "tenant-admins do not read the audit log: {err}"
    );

    // Alter record 3 in RocksDB while the node is down.
    let data = c.data_dir(1);
    ensure!(c.terminate(1)?.success());
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(false);
        let cfs = rocksdb::DB::list_cf(&opts, data.join("db"))?;
        let db = rocksdb::DB::open_cf(&opts, data.join("db"), cfs)?;
        let kv = db.cf_handle("kv").context("kv family")?;
        let key = ndc_store::domain::audit_key(3);
        let raw = db.get_cf(kv, key.as_bytes())?.context("record 3")?;
        let mut obj: ndc_store::StoredObject = ndc_store::decode("object", &raw)?;
        let mut rec: serde_json::Value = serde_json::from_slice(&obj.value)?;
        rec["actor"] = serde_json::Value::String("someone-else".into());
        obj.value = serde_json::to_vec(&rec)?;
        db.put_cf(kv, key.as_bytes(), ndc_store::encode("object", &obj)?)?;
    }
    c.start(1, &addr, Start::Bare).await?;
    let (code, out, err) = ndc(&[&eps[..], &["audit", "verify"]].concat())?;
    ensure!(
        code == 1 && err.contains("broken at record 3") && err.contains("altered"),
        "{code} {out} {err}"
    );
    Ok(())
}

/// The CLI end to end: apply a file, list, draw the tree, merge with a new
/// target, and see old ids resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_the_hierarchy() -> Result<()> {
    let c = national(1).await?;
    let addr = c.addr(1);
    let eps = ["--endpoints", addr.as_str(), "--token", OPERATOR];
    let dir = tempfile::tempdir()?;
    let f = dir.path().join("communes.yaml");
    std::fs::write(
        &f,
        "kind: Tenant\ndecision: NQ 1656/NQ-UBTVQH15\nspec:\n  id: xa-a\n  display_name: Xã A\n  level: commune\n  branch: state\n  parent: hue\n  admin_code: \"20001\"\n  security_level: 2\n  quota: { cpu_millis: 1000, buckets: 1 }\n---\nkind: Tenant\nspec:\n  id: xa-b\n  display_name: Xã B\n  level: commune\n  branch: state\n  parent: hue\n  admin_code: \"20002\"\n  security_level: 2\n  quota: { cpu_millis: 2000, buckets: 2 }\n",
    )?;
    let (code, out, err) =
        ndc(&[&eps[..], &["apply", "-f", f.to_str().context("utf-8")?]].concat())?;
    ensure!(
        code == 0 && out.contains("tenant/xa-a created") && out.contains("tenant/xa-b created"),
        "{code} {out} {err}"
    );
    let (code, out, _) = ndc(&[&eps[..], &["apply", "-f", f.to_str().context("utf-8")?]].concat())?;
    ensure!(
        code == 0 && out.contains("tenant/xa-a unchanged"),
        "apply is idempotent: {out}"
    );

    let (code, out, _) = ndc(&[
        &eps[..],
        &[
            "tenant",
            "merge",
            "xa-a",
            "xa-b",
            "--new-id",
            "xa-ab",
            "--new-name",
            "Xã A B",
            "--new-code",
            "20003",
        ],
    ]
    .concat())?;
    ensure!(
        code == 1 && out.contains("plan: merge xa-a, xa-b into xa-ab"),
        "without --yes and a terminal it only plans: {code} {out}"
    );
    let (code, out, err) = ndc(&[
        &eps[..],
        &[
            "tenant",
            "merge",
            "xa-a",
            "xa-b",
            "--new-id",
            "xa-ab",
            "--new-name",
            "Xã A B",
            "--new-code",
            "20003",
            "--yes",
        ],
    ]
    .concat())?;
    ensure!(
        code == 0 && out.contains("applied at revision"),
        "{code} {out} {err}"
    );
    let (code, out, _) = ndc(&[&eps[..], &["-o", "json", "tenant", "get", "xa-a"]].concat())?;
    let t: serde_json::Value = serde_json::from_str(&out)?;
    ensure!(
        code == 0 && t["id"] == "xa-ab" && t["quota"]["cpu_millis"] == 3000,
        "{out}"
    );
    let (code, out, _) = ndc(&[
        &eps[..],
        &["-o", "yaml", "tenant", "list", "--parent", "hue"],
    ]
    .concat())?;
    ensure!(
        code == 0
            && out.contains("id: xa-ab")
            && out.contains("id: phu-xuan")
            && !out.contains("id: xa-a\n"),
        "{out}"
    );
    let (code, out, _) = ndc(&[&eps[..], &["tenant", "tree"]].concat())?;
    ensure!(
        code == 0
            && out.contains("vn \"Đơn vị vn\"")
            && out.contains("└── ")
            && out.contains("xa-ab"),
        "{out}"
    );
    let (code, out, _) = ndc(&[&eps[..], &["tenant", "list", "--level", "commune"]].concat())?;
    ensure!(code == 0 && out.contains("3 tenant(s)"), "{out}");
    Ok(())
}

/// A reorganisation applies exactly the plan that was shown: if the tenants
/// changed in between, nothing is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_plan_is_not_applied() -> Result<()> {
    let c = national(1).await?;
    let mut t = tenants(&c.addr(1), OPERATOR)?;
    let reorg = ndc_tenants::Reorg::Reparent {
        tenant: "ba-dinh".into(),
        parent: "hue".into(),
    };
    let shown = t
        .plan(convert::reorg_to_pb(&reorg, None))
        .await?
        .into_inner();
    ensure!(!shown.digest.is_empty() && !shown.applied, "{shown:?}");
    // Someone changes Ba Đình's quota after the plan was shown.
    t.update(pb::UpdateTenantRequest {
        id: "ba-dinh".into(),
        quota: Some(convert::quota_to_pb(&cores(3))),
        ..Default::default()
    })
    .await?;
    let mut req = convert::reorg_to_pb(&reorg, None);
    req.expected_digest = shown.digest.clone();
    let e = t.reorganise(req).await.expect_err("stale plan");
    ensure!(
        e.code() == Code::FailedPrecondition && e.message().contains("plan again"),
        "{e:?}"
    );
    let bd = t
        .get(pb::GetTenantRequest {
            id: "ba-dinh".into(),
            stale: false,
        })
        .await?
        .into_inner()
        .tenant
        .context("ba-dinh")?;
    ensure!(
        bd.spec.map(|s| s.parent) == Some("ha-noi".into()),
        "nothing moved"
    );
    // Planned again, it applies.
    let fresh = t
        .plan(convert::reorg_to_pb(&reorg, None))
        .await?
        .into_inner();
    ensure!(fresh.digest != shown.digest);
    let mut req = convert::reorg_to_pb(&reorg, None);
    req.expected_digest = fresh.digest;
    let done = t.reorganise(req).await?.into_inner();
    ensure!(done.applied, "{done:?}");
    let bd = t
        .get(pb::GetTenantRequest {
            id: "ba-dinh".into(),
            stale: false,
        })
        .await?
        .into_inner()
        .tenant
        .context("ba-dinh")?;
    ensure!(
        bd.spec.map(|s| s.parent) == Some("hue".into()),
        "moved under hue"
    );
    Ok(())
}

/// Creating a tenant, retried with the same request id after a lost answer,
/// creates it once and records it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_creation_is_recorded_once() -> Result<()> {
    let c = national(1).await?;
    let addr = c.addr(1);
    let client = |id: &str| -> Result<Tenants> {
        Ok(TenantsClient::with_interceptor(
            ndc_api::client::channel(&addr)?,
            Auth::new(Some(OPERATOR))?.with_request_id(id)?,
        ))
    };
    let s = spec("xa-moi", Level::Commune, Some("hue"), Some("20100"), 1);
    let first = create(&mut client("create-xa-moi-1")?, &s).await?;
    let again = create(&mut client("create-xa-moi-1")?, &s).await?;
    ensure!(
        again.revision == first.revision,
        "the retry got the first answer"
    );
    // Without the same id, it is a second request, refused as a duplicate.
    let e = create(&mut client("create-xa-moi-2")?, &s)
        .await
        .expect_err("duplicate");
    ensure!(e.code() == Code::AlreadyExists, "{e:?}");
    let (code, out, err) = ndc(&[
        "--endpoints",
        &addr,
        "--token",
        AUDITOR,
        "-o",
        "json",
        "audit",
        "list",
        "--target",
        "xa-moi",
    ])?;
    let records: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("{code} {err}"))?;
    ensure!(
        records.as_array().map(|a| a.len()) == Some(1),
        "one audit record: {out}"
    );
    Ok(())
}
