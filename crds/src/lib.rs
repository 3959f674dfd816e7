//! ndc's Kubernetes custom resources, group `ndc.gov.vn`, version
//! `v1alpha1`. The YAML under `crds/` is generated from these types
//! (`cargo run -p ndc-crds --bin ndc-crds -- crds/`) and a test keeps the
//! two equal.
//!
//! - [`Tenant`] (cluster): a read-mostly mirror of a control-plane tenant.
//! - [`ObjectBucket`], [`Database`] (namespaced): claims an agency makes in
//!   its tenant namespace.
//! - [`SharedService`] (cluster): a shared application or platform of the
//!   national framework, deployed once and used by every eligible agency.
//! - [`ServiceSubscription`] (namespaced): an agency consuming a shared
//!   service.
//!
//! This crate must not depend on the operator, the simulator or rocksdb:
//! types and their YAML, no controllers.

// Several `printcolumn(...)` in one `#[kube]` attribute repeat `type_ =`,
// which this lint mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

pub const GROUP: &str = "ndc.gov.vn";
pub const VERSION: &str = "v1alpha1";

/// Labels the operator puts on what it manages.
pub mod labels {
    pub const TENANT: &str = "ndc.gov.vn/tenant";
    pub const LEVEL: &str = "ndc.gov.vn/level";
    pub const BRANCH: &str = "ndc.gov.vn/branch";
    /// `<ancestor>.tree.ndc.gov.vn/depth` = distance, one per ancestor and
    /// the tenant itself (0), so a selector finds a whole subtree.
    pub const TREE_SUFFIX: &str = ".tree.ndc.gov.vn/depth";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const OPERATOR: &str = "ndc-operator";
    pub const SERVICE: &str = "ndc.gov.vn/service";
}

/// A Kubernetes-style condition.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready` or `Synced`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word a program can match.
    pub reason: String,
    /// What happened and, on failure, what to do.
    pub message: String,
    /// RFC 3339.
    pub last_transition_time: String,
    #[serde(default)]
    pub observed_generation: i64,
}

/// Quotas as the control plane keeps them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantQuota {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    pub buckets: u64,
    pub databases: u64,
    pub namespaces: u64,
}

/// A tenant of the control plane, mirrored. The operator writes it; edits
/// are overwritten (change tenants with `ndc tenant`).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ndc.gov.vn",
    version = "v1alpha1",
    kind = "Tenant",
    plural = "tenants",
    shortname = "tn",
    category = "ndc",
    status = "TenantStatus",
    doc = "An agency of the political system, mirrored from the ndc control plane",
    printcolumn(
        name = "Display name",
        type_ = "string",
        json_path = ".spec.displayName"
    ),
    printcolumn(name = "Level", type_ = "string", json_path = ".spec.level"),
    printcolumn(name = "Parent", type_ = "string", json_path = ".spec.parent"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// Vietnamese display name (NFC).
    pub display_name: String,
    /// central, province or commune.
    pub level: String,
    /// party, state, national-assembly or other.
    pub branch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Province (2 digits) or commune (5 digits) code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_code: Option<String>,
    /// Decree 85/2016 level, 1–5.
    pub security_level: u8,
    /// active, suspended or retired.
    pub state: String,
    /// From the root down to the parent.
    #[serde(default)]
    pub ancestors: Vec<String>,
    /// Old ids (after a merge or rename).
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub quota: TenantQuota,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    #[serde(default)]
    pub observed_generation: i64,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The tenant's namespace.
    #[serde(default)]
    pub namespace: String,
    /// The control-plane revision mirrored.
    #[serde(default)]
    pub revision: u64,
}

/// What deleting a claim does to the bucket or database.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DeletionPolicy {
    /// Keep it; ndc forgets it.
    #[default]
    Retain,
    /// Remove it (a non-empty bucket only with `purge`; a database after a
    /// final dump).
    Delete,
}

/// Status shared by the two claim kinds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimStatus {
    #[serde(default)]
    pub observed_generation: i64,
    /// Pending, Ready, Failed or Deleting.
    #[serde(default)]
    pub phase: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The claim's uid in the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_uid: Option<String>,
    /// The bucket's or database's name outside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The Secret (in this namespace) holding the credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

/// An S3 bucket for the agency whose namespace this is.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ndc.gov.vn",
    version = "v1alpha1",
    kind = "ObjectBucket",
    plural = "objectbuckets",
    shortname = "ob",
    category = "ndc",
    namespaced,
    status = "ClaimStatus",
    doc = "An object-storage bucket claimed by the tenant of this namespace",
    printcolumn(name = "Size", type_ = "string", json_path = ".spec.size"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Bucket",
        type_ = "string",
        json_path = ".status.externalName",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ObjectBucketSpec {
    /// Size quota, e.g. `50Gi`; counted against the tenant's storage.
    pub size: String,
    #[serde(default)]
    pub versioning: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// With policy delete: delete the objects too when this is deleted.
    #[serde(default)]
    pub purge_on_delete: bool,
}

/// A PostgreSQL database for the agency whose namespace this is.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ndc.gov.vn",
    version = "v1alpha1",
    kind = "Database",
    plural = "databases",
    shortname = "ndcdb",
    category = "ndc",
    namespaced,
    status = "ClaimStatus",
    doc = "A PostgreSQL database claimed by the tenant of this namespace",
    printcolumn(name = "Size", type_ = "string", json_path = ".spec.size"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Database",
        type_ = "string",
        json_path = ".status.externalName",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Expected size, e.g. `20Gi`; counted against the tenant's storage.
    pub size: String,
    /// Most connections at once (0: the server's default).
    #[serde(default)]
    pub connection_limit: u32,
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Which levels of the hierarchy a shared service serves.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceScope {
    /// central, province or commune: the highest level served.
    pub from: String,
    /// central, province or commune: the lowest level served.
    pub to: String,
}

/// What each subscribing tenant gets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PerTenantResources {
    /// A database of this size per subscriber, e.g. `5Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// A bucket of this size per subscriber, e.g. `20Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
}

/// The containers of a shared service (absent for catalogue records of
/// infrastructure that is not a workload).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub image: String,
    #[serde(default = "one")]
    pub replicas: i32,
    #[serde(default = "http_port")]
    pub port: i32,
    /// CPU request, e.g. `500m`.
    #[serde(default = "default_cpu")]
    pub cpu: String,
    /// Memory request, e.g. `512Mi`.
    #[serde(default = "default_memory")]
    pub memory: String,
}

fn one() -> i32 {
    1
}
fn http_port() -> i32 {
    8080
}
fn default_cpu() -> String {
    "250m".into()
}
fn default_memory() -> String {
    "256Mi".into()
}

/// A shared application or platform of the national framework.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ndc.gov.vn",
    version = "v1alpha1",
    kind = "SharedService",
    plural = "sharedservices",
    shortname = "ss",
    category = "ndc",
    status = "SharedServiceStatus",
    doc = "A shared application or platform, deployed once for every eligible agency",
    printcolumn(name = "Capability", type_ = "string", json_path = ".spec.capability"),
    printcolumn(name = "Layer", type_ = "string", json_path = ".spec.layer"),
    printcolumn(name = "Topology", type_ = "string", json_path = ".spec.topology"),
    printcolumn(
        name = "Subscribers",
        type_ = "integer",
        json_path = ".status.subscribers"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SharedServiceSpec {
    /// Vietnamese display name.
    pub display_name: String,
    /// What it provides, unique at its scope, e.g. `document-exchange`.
    pub capability: String,
    /// application, platform, infrastructure or data.
    pub layer: String,
    pub scope: ServiceScope,
    /// central (one instance) or per-province (one per province tenant).
    #[serde(default = "central")]
    pub topology: String,
    /// Capabilities this service needs.
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub per_tenant: PerTenantResources,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    /// The tenant that owns and runs the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

fn central() -> String {
    "central".into()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SharedServiceStatus {
    #[serde(default)]
    pub observed_generation: i64,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub instances: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default)]
    pub subscribers: i32,
}

/// An agency consuming a shared service.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ndc.gov.vn",
    version = "v1alpha1",
    kind = "ServiceSubscription",
    plural = "servicesubscriptions",
    shortname = "sub",
    category = "ndc",
    namespaced,
    status = "SubscriptionStatus",
    doc = "The tenant of this namespace subscribes to a shared service",
    printcolumn(name = "Service", type_ = "string", json_path = ".spec.service"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSubscriptionSpec {
    /// The SharedService's name.
    pub service: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStatus {
    #[serde(default)]
    pub observed_generation: i64,
    #[serde(default)]
    pub phase: String,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The binding Secret in this namespace: endpoint and credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_secret: Option<String>,
}

/// Every CRD, in a stable order, with the file name it is kept under.
pub fn all() -> Vec<(&'static str, CustomResourceDefinition)> {
    vec![
        ("tenants.yaml", Tenant::crd()),
        ("objectbuckets.yaml", ObjectBucket::crd()),
        ("databases.yaml", Database::crd()),
        ("sharedservices.yaml", SharedService::crd()),
        ("servicesubscriptions.yaml", ServiceSubscription::crd()),
    ]
}

/// A CRD as the YAML kept under `crds/`.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, String> {
    let body = serde_saphyr::to_string(crd).map_err(|e| e.to_string())?;
    Ok(format!(
        "# Generated from crds/src/lib.rs by `cargo run -p ndc-crds -- crds/`; do not edit.\n{body}"
    ))
}

/// Every CRD in one multi-document YAML (for `kubectl apply -f -`).
pub fn all_yaml() -> Result<String, String> {
    let mut out = String::new();
    for (_, crd) in all() {
        out.push_str("---\n");
        out.push_str(&to_yaml(&crd)?);
    }
    Ok(out)
}
