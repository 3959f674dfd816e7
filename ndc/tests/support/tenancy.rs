//! Helpers for tenancy tests: tokens and roles, a national fixture
//! (root, Hà Nội with a commune, Huế with a commune), request builders.

#![allow(dead_code)]

use anyhow::{Context, Result};
use ndc_api::client::Auth;
use ndc_api::convert;
use ndc_api::tenants::tenants_client::TenantsClient;
use ndc_api::tenants::{self as pb};
use ndc_core::{Level, TenantSpec};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::*;

pub const OPERATOR: &str = "operator-token-0123456789";
pub const HANOI_ADMIN: &str = "hanoi-admin-token-0123456789";
pub const HUE_ADMIN: &str = "hue-admin-token-0123456789";
pub const AUDITOR: &str = "auditor-token-0123456789";

pub const CLUSTER_SECRET: &str = "cluster-secret-for-tests-0123456789";

pub const AUTH: &str = "users:
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

pub type Tenants = TenantsClient<InterceptedService<Channel, Auth>>;

pub fn tenants(addr: &str, token: &str) -> Result<Tenants> {
    Ok(TenantsClient::with_interceptor(
        ndc_api::client::channel(addr)?,
        Auth::new(Some(token))?,
    ))
}

#[allow(unused_imports)]
pub use ndc_testkit::cores;

#[allow(unused_imports)]
pub use ndc_testkit::tenant_spec as spec;

pub async fn create(t: &mut Tenants, s: &TenantSpec) -> Result<pb::TenantResponse, tonic::Status> {
    t.create(pb::CreateTenantRequest {
        spec: Some(convert::spec_to_pb(s)),
        decision: "QĐ thử nghiệm".into(),
    })
    .await
    .map(|r| r.into_inner())
}

/// A cluster with an auth file, and the national root, Hà Nội, one of its
/// communes and Huế.
pub async fn national(nodes: u64) -> Result<Cluster> {
    national_with(nodes, &[]).await
}

/// Like [`national`], with more flags for every server.
pub async fn national_with(nodes: u64, extra: &[String]) -> Result<Cluster> {
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
    c.flags.extend(extra.iter().cloned());
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

pub async fn status_with_token(addr: &str) -> Result<bool> {
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

pub async fn revision(addr: &str) -> Result<u64> {
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
