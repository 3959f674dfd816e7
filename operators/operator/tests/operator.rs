//! The operator end to end: an in-process control-plane node (with a real
//! Garage and PostgreSQL for claims), the Kubernetes API simulator, and the
//! operator between them.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use ndc_api::tenants::tenants_client::TenantsClient;
use ndc_core::{Level, Quota, TenantSpec};
use ndc_crds::{Database, DatabaseSpec, DeletionPolicy, ObjectBucket, ObjectBucketSpec, Tenant};

const DEADLINE: Duration = Duration::from_secs(60);

struct World {
    kube: kube::Client,
    ndc: ndc_api::Client,
    garage: ndc_storage::LocalGarage,
    postgres: ndc_storage::LocalPostgres,
    _node: ndc_server::RunningNode,
    _sim: ndc_kube_sim::Running,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn quota(n: u64) -> Quota {
    Quota {
        cpu_millis: n * 1000,
        memory_bytes: n << 30,
        storage_bytes: n << 30,
        buckets: n,
        databases: n,
        namespaces: n,
    }
}

fn spec(id: &str, level: Level, parent: Option<&str>, code: Option<&str>, n: u64) -> TenantSpec {
    TenantSpec {
        quota: quota(n),
        ..ndc_testkit::tenant_spec(id, level, parent, code, n)
    }
}

async fn world() -> Result<World> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "warn,ndc_operator=debug",
        ))
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir()?;
    let garage = ndc_storage::LocalGarage::start(&dir.path().join("garage")).await?;
    let postgres = ndc_storage::LocalPostgres::start(&dir.path().join("postgres")).await?;
    let key = dir.path().join("secrets.key");
    ndc_server::SecretsKey::create_file(&key)?;
    let mut cfg = ndc_server::NodeConfig::new(1, "127.0.0.1:0".parse()?, dir.path().join("node"));
    cfg.init = true;
    cfg.secrets = Some(ndc_server::SecretsKey::load(&key).map_err(anyhow::Error::msg)?);
    cfg.provisioning = ndc_server::Provisioning::connect(ndc_server::provisioner::BackendsFile {
        garage: Some(garage.config()),
        postgres: Some(postgres.config()),
        backup_bucket: Some("ndc-backups".into()),
    })
    .await
    .map_err(anyhow::Error::msg)?;
    let node = ndc_server::start(cfg).await?;
    if !node.wait_for_leader(DEADLINE).await {
        bail!("the control plane elected no leader");
    }
    let ndc = ndc_api::Client::connect(std::slice::from_ref(&node.addr), None).await?;
    let mut tenants = TenantsClient::new(ndc_api::client::channel(&node.addr)?);
    for s in [
        spec("vn", Level::Central, None, None, 100),
        spec("ha-noi", Level::Province, Some("vn"), Some("01"), 20),
        spec("ba-dinh", Level::Commune, Some("ha-noi"), Some("00004"), 5),
        spec("hue", Level::Province, Some("vn"), Some("46"), 10),
    ] {
        tenants
            .create(ndc_api::tenants::CreateTenantRequest {
                spec: Some(ndc_api::convert::spec_to_pb(&s)),
                decision: String::new(),
            })
            .await?;
    }

    let sim = ndc_kube_sim::Simulator::new().start().await?;
    let kube = kube::Client::try_from(kube::Config::new(sim.url().parse()?))?;
    let crds: Api<ndc_crds::CustomResourceDefinition> = Api::all(kube.clone());
    for (_, crd) in ndc_crds::all() {
        crds.create(&PostParams::default(), &crd).await?;
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let k = kube.clone();
    let n = ndc_api::Client::connect(std::slice::from_ref(&node.addr), None).await?;
    tokio::spawn(async move {
        let _ = ndc_operator::run(k, n, async {
            let _ = stopped.await;
        })
        .await;
    });
    Ok(World {
        kube,
        ndc,
        garage,
        postgres,
        _node: node,
        _sim: sim,
        stop: Some(stop),
        _dir: dir,
    })
}

use ndc_testkit::{wait_for as eventually, wait_for_within as eventually_within};

fn ready_condition(conds: &[ndc_crds::Condition]) -> Option<&ndc_crds::Condition> {
    conds.iter().find(|c| c.type_ == "Ready")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenants_become_namespaces_with_their_guard_rails_and_drift_is_repaired() -> Result<()> {
    let w = world().await?;
    let tenants: Api<Tenant> = Api::all(w.kube.clone());
    let t = eventually("tenant ba-dinh to be mirrored and ready", || {
        let tenants = tenants.clone();
        async move {
            let t = tenants.get_opt("ba-dinh").await.ok()??;
            let ok = t
                .status
                .as_ref()
                .and_then(|s| ready_condition(&s.conditions))
                .is_some_and(|c| c.status == "True");
            ok.then_some(t)
        }
    })
    .await?;
    assert_eq!(t.spec.ancestors, ["vn", "ha-noi"]);
    assert_eq!(t.spec.level, "commune");
    assert_eq!(t.spec.admin_code.as_deref(), Some("00004"));
    assert_eq!(t.spec.display_name, "Đơn vị ba-dinh");

    let ns: Namespace = Api::all(w.kube.clone()).get("ba-dinh").await?;
    let l = ns.labels();
    assert_eq!(l["ndc.gov.vn/tenant"], "ba-dinh");
    assert_eq!(l["ndc.gov.vn/level"], "commune");
    assert_eq!(l["vn.tree.ndc.gov.vn/depth"], "2");
    assert_eq!(l["ha-noi.tree.ndc.gov.vn/depth"], "1");
    assert_eq!(l["ba-dinh.tree.ndc.gov.vn/depth"], "0");
    assert_eq!(l["pod-security.kubernetes.io/enforce"], "restricted");

    // Hà Nội keeps what it did not hand to Ba Đình: 20 - 5 cores. Its
    // guard rails are read once it is Ready: they are all written by then
    // (its tenant is reconciled apart from Ba Đình's, maybe later).
    eventually("tenant ha-noi to be ready", || {
        let tenants = tenants.clone();
        async move {
            let t = tenants.get_opt("ha-noi").await.ok()??;
            let st = t.status.as_ref()?;
            let ready = ready_condition(&st.conditions)?.status == "True"
                && Some(st.observed_generation) == t.metadata.generation;
            ready.then_some(())
        }
    })
    .await?;
    let quotas: Api<ResourceQuota> = Api::namespaced(w.kube.clone(), "ha-noi");
    let q = quotas.get("ndc-quota").await?;
    let hard = q.spec.and_then(|s| s.hard).context("hard")?;
    assert_eq!(hard["requests.cpu"].0, "15000m");
    assert_eq!(hard["count/objectbuckets.ndc.gov.vn"].0, "15");
    let lr: Api<LimitRange> = Api::namespaced(w.kube.clone(), "ha-noi");
    assert!(lr.get_opt("ndc-defaults").await?.is_some());
    let rb: Api<RoleBinding> = Api::namespaced(w.kube.clone(), "ha-noi");
    let rb = rb.get("ndc-tenant-admins").await?;
    assert_eq!(
        rb.subjects.unwrap_or_default()[0].name,
        "ndc:tenant-admin:ha-noi"
    );
    let nps: Api<NetworkPolicy> = Api::namespaced(w.kube.clone(), "ha-noi");
    let np = nps.get("ndc-default-deny").await?;
    let np_spec = np.spec.context("spec")?;
    assert_eq!(
        np_spec.policy_types.unwrap_or_default(),
        ["Ingress", "Egress"]
    );
    assert_eq!(
        np_spec.egress.unwrap_or_default().len(),
        2,
        "same namespace and DNS"
    );

    // Drift: a deleted policy and an edited quota come back.
    nps.delete("ndc-default-deny", &DeleteParams::default())
        .await?;
    quotas
        .patch(
            "ndc-quota",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"hard": {"requests.cpu": "999"}}})),
        )
        .await?;
    eventually("the network policy to be restored", || {
        let nps = nps.clone();
        async move { nps.get_opt("ndc-default-deny").await.ok()? }
    })
    .await?;
    eventually("the quota to be restored", || {
        let quotas = quotas.clone();
        async move {
            let q = quotas.get_opt("ndc-quota").await.ok()??;
            let cpu = q.spec?.hard?.get("requests.cpu")?.0.clone();
            (cpu == "15000m").then_some(())
        }
    })
    .await?;

    // A quota change in the control plane reaches the namespace.
    let mut tc = TenantsClient::new(ndc_api::client::channel(&w.ndc_addr())?);
    tc.update(ndc_api::tenants::UpdateTenantRequest {
        id: "hue".into(),
        quota: Some(ndc_api::convert::quota_to_pb(&quota(8))),
        ..Default::default()
    })
    .await?;
    let hue_quotas: Api<ResourceQuota> = Api::namespaced(w.kube.clone(), "hue");
    eventually("hue's quota to follow the control plane", || {
        let q = hue_quotas.clone();
        async move {
            let q = q.get_opt("ndc-quota").await.ok()??;
            (q.spec?.hard?.get("requests.cpu")?.0 == "8000m").then_some(())
        }
    })
    .await?;

    // A commune of Huế: mirrored alone, with its ancestors.
    let hue_generation = tenants.get("hue").await?.metadata.generation.unwrap_or(0);
    tc.create(ndc_api::tenants::CreateTenantRequest {
        spec: Some(ndc_api::convert::spec_to_pb(&spec(
            "thuan-hoa",
            Level::Commune,
            Some("hue"),
            Some("19753"),
            2,
        ))),
        decision: String::new(),
    })
    .await?;
    let ancestors = |id: &'static str, want: [&'static str; 2]| {
        let tenants = tenants.clone();
        eventually("a mirror's ancestors", move || {
            let tenants = tenants.clone();
            async move {
                let t = tenants.get_opt(id).await.ok()??;
                (t.spec.ancestors == want).then_some(())
            }
        })
    };
    ancestors("thuan-hoa", ["vn", "hue"]).await?;
    // Huế's mirror changed with its new child (what it keeps for itself):
    // its reconcile is let finish before the merge.
    eventually("hue's mirror to be reconciled again", || {
        let tenants = tenants.clone();
        async move {
            let t = tenants.get_opt("hue").await.ok()??;
            let g = t.metadata.generation?;
            let s = t.status.as_ref()?;
            (g > hue_generation && s.observed_generation == g).then_some(())
        }
    })
    .await?;

    // A merge: Huế's mirror goes, its namespace stays with its data, re-homed.
    tc.reorganise(ndc_api::convert::reorg_to_pb(
        &ndc_core::Reorg::Merge {
            sources: vec!["hue".into()],
            into: ndc_core::MergeTarget::Existing("ha-noi".into()),
        },
        Some("QĐ sáp nhập"),
    ))
    .await?;
    eventually("hue's mirror to go", || {
        let tenants = tenants.clone();
        async move { tenants.get_opt("hue").await.ok()?.is_none().then_some(()) }
    })
    .await?;
    let nss: Api<Namespace> = Api::all(w.kube.clone());
    let ns = eventually("hue's namespace to be re-homed to ha-noi", || {
        let nss = nss.clone();
        async move {
            let ns = nss.get_opt("hue").await.ok()??;
            (ns.labels().get("ndc.gov.vn/tenant")? == "ha-noi").then_some(ns)
        }
    })
    .await?;
    assert!(ns.metadata.deletion_timestamp.is_none());
    assert_eq!(ns.annotations()["ndc.gov.vn/former-tenant"], "hue");
    // Its commune moved with it: the mirror's ancestors follow.
    ancestors("thuan-hoa", ["vn", "ha-noi"]).await?;
    Ok(())
}

impl World {
    fn ndc_addr(&self) -> String {
        self._node.addr.clone()
    }
}

async fn bucket(w: &World, ns: &str, name: &str, size: &str, policy: DeletionPolicy) -> Result<()> {
    let api: Api<ObjectBucket> = Api::namespaced(w.kube.clone(), ns);
    let mut o = ObjectBucket::new(
        name,
        ObjectBucketSpec {
            size: size.into(),
            versioning: false,
            retention_days: None,
            deletion_policy: policy,
            purge_on_delete: true,
        },
    );
    o.metadata.namespace = Some(ns.into());
    api.create(&PostParams::default(), &o).await?;
    Ok(())
}

async fn claim_condition<K>(api: &Api<K>, name: &str, status: &str) -> Option<ndc_crds::Condition>
where
    K: ndc_operator::claims::ClaimObject,
{
    let o = api.get_opt(name).await.ok()??;
    let c = ready_condition(&o.claim_status()?.conditions)?.clone();
    (c.status == status).then_some(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_in_tenant_namespaces_are_provisioned_and_their_deletion_follows_policy(
) -> Result<()> {
    let w = world().await?;
    let nss: Api<Namespace> = Api::all(w.kube.clone());
    eventually("ha-noi's namespace", || {
        let nss = nss.clone();
        async move { nss.get_opt("ha-noi").await.ok()? }
    })
    .await?;

    // A bucket: provisioned, its key in a Secret that works in Garage.
    bucket(&w, "ha-noi", "ho-so", "1Gi", DeletionPolicy::Delete).await?;
    let buckets: Api<ObjectBucket> = Api::namespaced(w.kube.clone(), "ha-noi");
    eventually("bucket ho-so to be ready", || {
        let b = buckets.clone();
        async move { claim_condition(&b, "ho-so", "True").await }
    })
    .await?;
    let secrets: Api<Secret> = Api::namespaced(w.kube.clone(), "ha-noi");
    let s = secrets.get("ho-so-bucket-credentials").await?;
    let data = s.string_data.or_else(|| {
        s.data.map(|d| {
            d.into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect()
        })
    });
    let data = data.context("secret data")?;
    let creds = ndc_storage::S3Credentials {
        access_key_id: data["access_key_id"].clone(),
        secret_access_key: data["secret_access_key"].clone(),
    };
    let s3 = ndc_storage::s3::client(&data["endpoint"], &data["region"], &creds);
    s3.put_object()
        .bucket(&data["bucket"])
        .key("a.txt")
        .body(b"x".to_vec().into())
        .send()
        .await?;
    assert!(s
        .metadata
        .owner_references
        .is_some_and(|o| o[0].kind == "ObjectBucket"));

    // A database likewise.
    let dbs: Api<Database> = Api::namespaced(w.kube.clone(), "ha-noi");
    let mut d = Database::new(
        "so-lieu",
        DatabaseSpec {
            size: "1Gi".into(),
            connection_limit: 5,
            deletion_policy: DeletionPolicy::Retain,
        },
    );
    d.metadata.namespace = Some("ha-noi".into());
    dbs.create(&PostParams::default(), &d).await?;
    eventually("database so-lieu to be ready", || {
        let d = dbs.clone();
        async move { claim_condition(&d, "so-lieu", "True").await }
    })
    .await?;
    assert!(secrets
        .get_opt("so-lieu-database-credentials")
        .await?
        .is_some());

    // Refusals: outside a tenant namespace, and over quota; nothing made.
    let scratch: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "scratch"}}))?;
    nss.create(&PostParams::default(), &scratch).await?;
    bucket(&w, "scratch", "lac-loai", "1Gi", DeletionPolicy::Retain).await?;
    let stray: Api<ObjectBucket> = Api::namespaced(w.kube.clone(), "scratch");
    let c = eventually("the stray bucket to be refused", || {
        let b = stray.clone();
        async move { claim_condition(&b, "lac-loai", "False").await }
    })
    .await?;
    assert_eq!(c.reason, "NotInTenantNamespace", "{c:?}");
    assert!(c.message.contains("tenant"), "{}", c.message);
    bucket(&w, "ba-dinh", "qua-lon", "1Ti", DeletionPolicy::Retain).await?;
    let bd: Api<ObjectBucket> = Api::namespaced(w.kube.clone(), "ba-dinh");
    let c = eventually("the oversized bucket to be refused", || {
        let b = bd.clone();
        async move { claim_condition(&b, "qua-lon", "False").await }
    })
    .await?;
    assert_eq!(c.reason, "Refused", "{c:?}");
    assert!(
        c.message.contains("storage") && c.message.contains("quota"),
        "{}",
        c.message
    );
    let claims = w
        .ndc
        .call(|ch| {
            let a = w.ndc.auth();
            async move {
                ndc_api::claims::claims_client::ClaimsClient::with_interceptor(ch, a)
                    .list(ndc_api::claims::ListClaimsRequest::default())
                    .await
            }
        })
        .await?
        .into_inner()
        .claims;
    assert_eq!(claims.len(), 2, "only ho-so and so-lieu became claims");

    // Deleting follows the policy: the bucket (delete, purge) goes; the
    // database (retain) stays; both objects go once that is done.
    buckets.delete("ho-so", &DeleteParams::default()).await?;
    dbs.delete("so-lieu", &DeleteParams::default()).await?;
    eventually("both claim objects to go", || {
        let (b, d) = (buckets.clone(), dbs.clone());
        async move {
            (b.get_opt("ho-so").await.ok()?.is_none() && d.get_opt("so-lieu").await.ok()?.is_none())
                .then_some(())
        }
    })
    .await?;
    let store = ndc_storage::GarageStore::connect(w.garage.config()).await?;
    use ndc_storage::ObjectStore;
    assert!(!store.bucket_exists(&data["bucket"]).await?);
    let pg = ndc_storage::PostgresStore::connect(w.postgres.config()).await?;
    use ndc_storage::DatabaseStore;
    let db_name = dbs_external(&claims, "so-lieu")?;
    assert!(pg.database_exists(&db_name).await?);
    Ok(())
}

fn dbs_external(claims: &[ndc_api::claims::Claim], name: &str) -> Result<String> {
    claims
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.external_name.clone())
        .context("claim not found")
}

fn shared_service(
    name: &str,
    capability: &str,
    scope: (&str, &str),
    topology: &str,
    per_tenant_db: Option<&str>,
) -> ndc_crds::SharedService {
    ndc_crds::SharedService::new(
        name,
        ndc_crds::SharedServiceSpec {
            display_name: format!("Hệ thống {name}"),
            capability: capability.into(),
            layer: "application".into(),
            scope: ndc_crds::ServiceScope {
                from: scope.0.into(),
                to: scope.1.into(),
            },
            topology: topology.into(),
            depends_on: vec![],
            per_tenant: ndc_crds::PerTenantResources {
                database: per_tenant_db.map(Into::into),
                bucket: None,
            },
            workload: Some(ndc_crds::Workload {
                image: format!("registry.ndc.gov.vn/{name}:1.0"),
                replicas: 2,
                port: 8080,
                cpu: "250m".into(),
                memory: "256Mi".into(),
            }),
            owner: Some("vn".into()),
        },
    )
}

fn subscription(ns: &str, service: &str) -> ndc_crds::ServiceSubscription {
    let mut s = ndc_crds::ServiceSubscription::new(
        service,
        ndc_crds::ServiceSubscriptionSpec {
            service: service.into(),
        },
    );
    s.metadata.namespace = Some(ns.into());
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_services_run_once_and_subscribers_get_bound() -> Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ConfigMap;
    let w = world().await?;
    let services: Api<ndc_crds::SharedService> = Api::all(w.kube.clone());
    eventually("the tenants' namespaces", || {
        let nss: Api<Namespace> = Api::all(w.kube.clone());
        async move {
            nss.get_opt("ba-dinh").await.ok()??;
            nss.get_opt("hue").await.ok()?
        }
    })
    .await?;
    services
        .create(
            &PostParams::default(),
            &shared_service(
                "bao-cao",
                "reporting",
                ("central", "province"),
                "central",
                Some("1Gi"),
            ),
        )
        .await?;
    services
        .create(
            &PostParams::default(),
            &shared_service(
                "hop-truc-tuyen",
                "online-meeting",
                ("central", "commune"),
                "per-province",
                None,
            ),
        )
        .await?;
    // The central one runs once, restricted; the per-province one once per province.
    let ready = eventually("bao-cao to run", || {
        let s = services.clone();
        async move {
            let o = s.get_opt("bao-cao").await.ok()??;
            let st = o.status?;
            (ready_condition(&st.conditions)?.status == "True").then_some(st)
        }
    })
    .await?;
    assert_eq!((ready.instances, ready.ready_replicas), (1, 2));
    // A second service for a capability already shared: refused, naming the first.
    // It is created once the first is registered: two created together race, and
    // whichever registers first is the one that runs.
    services
        .create(
            &PostParams::default(),
            &shared_service(
                "bao-cao-2",
                "reporting",
                ("province", "province"),
                "central",
                None,
            ),
        )
        .await?;
    let dup = eventually("the duplicate to be refused", || {
        let s = services.clone();
        async move {
            let o = s.get_opt("bao-cao-2").await.ok()??;
            let c = ready_condition(&o.status?.conditions)?.clone();
            (c.status == "False").then_some(c)
        }
    })
    .await?;
    assert_eq!(dup.reason, "DuplicateCapability", "{dup:?}");
    assert!(dup.message.contains("bao-cao"), "{}", dup.message);
    let deployments: Api<Deployment> = Api::namespaced(w.kube.clone(), "svc-bao-cao-2");
    assert!(deployments
        .list(&Default::default())
        .await?
        .items
        .is_empty());

    let d: Deployment = Api::namespaced(w.kube.clone(), "svc-bao-cao")
        .get("bao-cao")
        .await?;
    let pod = d.spec.template.spec.context("pod spec")?;
    let sc = pod.containers[0]
        .security_context
        .clone()
        .context("security context")?;
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_string()])
    );
    assert!(pod.containers[0]
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .is_some());
    let meetings: Api<Deployment> = Api::namespaced(w.kube.clone(), "svc-hop-truc-tuyen");
    let names = eventually("one meeting instance per province", || {
        let m = meetings.clone();
        async move {
            let mut n: Vec<String> = m
                .list(&Default::default())
                .await
                .ok()?
                .items
                .iter()
                .map(|d| d.name_any())
                .collect();
            n.sort();
            (n.len() == 2).then_some(n)
        }
    })
    .await?;
    assert_eq!(names, ["hop-truc-tuyen-ha-noi", "hop-truc-tuyen-hue"]);

    // Hà Nội subscribes: a database of its own, a binding Secret, egress opened,
    // and the service admits its namespace and lists it.
    let subs: Api<ndc_crds::ServiceSubscription> = Api::namespaced(w.kube.clone(), "ha-noi");
    subs.create(&PostParams::default(), &subscription("ha-noi", "bao-cao"))
        .await?;
    let bound = eventually("ha-noi's subscription to be bound", || {
        let s = subs.clone();
        async move {
            let o = s.get_opt("bao-cao").await.ok()??;
            let st = o.status?;
            (ready_condition(&st.conditions)?.status == "True").then_some(st)
        }
    })
    .await?;
    let secret: Secret = Api::namespaced(w.kube.clone(), "ha-noi")
        .get(bound.binding_secret.as_deref().context("binding secret")?)
        .await?;
    let data = secret.string_data.context("binding data")?;
    assert_eq!(
        data["endpoint"],
        "http://bao-cao.svc-bao-cao.svc.cluster.local"
    );
    assert!(data.contains_key("database_password"), "{:?}", data.keys());
    let np: NetworkPolicy = Api::namespaced(w.kube.clone(), "ha-noi")
        .get("ndc-allow-bao-cao")
        .await?;
    assert!(serde_json::to_string(&np)?.contains("svc-bao-cao"));
    let registry: Api<ConfigMap> = Api::namespaced(w.kube.clone(), "svc-bao-cao");
    eventually("the tenant registry to list ha-noi", || {
        let r = registry.clone();
        async move {
            let cm = r.get_opt("tenant-registry").await.ok()??;
            (cm.data?.get("subscribers.txt")? == "ha-noi").then_some(())
        }
    })
    .await?;
    let admits: NetworkPolicy = Api::namespaced(w.kube.clone(), "svc-bao-cao")
        .get("ndc-allow-subscribers")
        .await?;
    assert!(serde_json::to_string(&admits)?.contains("ha-noi"));

    // Ba Đình is a commune: reporting does not serve communes.
    let bd: Api<ndc_crds::ServiceSubscription> = Api::namespaced(w.kube.clone(), "ba-dinh");
    bd.create(&PostParams::default(), &subscription("ba-dinh", "bao-cao"))
        .await?;
    let c = eventually("ba-dinh's subscription to be refused", || {
        let s = bd.clone();
        async move {
            let o = s.get_opt("bao-cao").await.ok()??;
            let c = ready_condition(&o.status?.conditions)?.clone();
            (c.status == "False").then_some(c)
        }
    })
    .await?;
    assert_eq!(c.reason, "Refused");
    assert!(c.message.contains("commune"), "{}", c.message);

    // Unsubscribing: the control plane forgets it, the per-tenant database is released (retained).
    subs.delete("bao-cao", &DeleteParams::default()).await?;
    eventually("the subscription to go", || {
        let s = subs.clone();
        async move { s.get_opt("bao-cao").await.ok()?.is_none().then_some(()) }
    })
    .await?;
    // The service forgets it too: nobody is listed or admitted any more.
    // Well before its 60 s requeue: the subscription's end wakes it.
    eventually_within(
        Duration::from_secs(20),
        "the tenant registry to forget ha-noi",
        || {
            let r = registry.clone();
            async move {
                let cm = r.get_opt("tenant-registry").await.ok()??;
                (cm.data?.get("subscribers.txt")?.is_empty()).then_some(())
            }
        },
    )
    .await?;
    let admits: NetworkPolicy = Api::namespaced(w.kube.clone(), "svc-bao-cao")
        .get("ndc-allow-subscribers")
        .await?;
    assert!(!serde_json::to_string(&admits)?.contains("ha-noi"));
    let left = w
        .ndc
        .call(|ch| {
            let a = w.ndc.auth();
            async move {
                ndc_api::catalog::catalog_client::CatalogClient::with_interceptor(ch, a)
                    .list_subscriptions(ndc_api::catalog::ListSubscriptionsRequest::default())
                    .await
            }
        })
        .await?
        .into_inner()
        .subscriptions;
    assert!(left.is_empty(), "{left:?}");
    Ok(())
}
