//! Where the control plane keeps its objects: the key layout of the `kv`
//! column family. Only the store and the server read these; every other
//! crate sees typed objects (the gRPC services and their watches).
//!
//! Values are JSON: `/ndc/tenants/<id>` → a tenant, `/ndc/claims/<uid>` → a
//! claim, `/ndc/services/<name>` → a service,
//! `/ndc/subscriptions/<tenant>/<service>` → a subscription,
//! `/ndc/nodes/<name>` → a host, `/ndc/audit/<seq>` → an audit record.

/// Key prefix of everything the control plane itself owns. The raw object
/// API refuses writes under it.
pub const RESERVED_PREFIX: &str = "/ndc/";
pub const TENANTS_PREFIX: &str = "/ndc/tenants/";
pub const AUDIT_PREFIX: &str = "/ndc/audit/";
pub const AUDIT_HEAD_KEY: &str = "/ndc/audit-head";
/// Responses to requests that carried a request id, kept for
/// [`REQUEST_RETENTION`] revisions so a retry is answered, not re-applied.
pub const REQUESTS_PREFIX: &str = "/ndc/requests/";
/// Revisions a request id is remembered for. A client retries within
/// seconds; at thousands of writes a second this is still minutes.
pub const REQUEST_RETENTION: u64 = 200_000;
/// How often (in revisions) forgotten request ids are pruned.
pub const REQUEST_PRUNE_EVERY: u64 = 4_096;
/// Ids of deleted tenants, kept so they are never given again.
pub const RETIRED_IDS_PREFIX: &str = "/ndc/retired-tenant-ids/";

pub fn tenant_key(id: &str) -> String {
    format!("{TENANTS_PREFIX}{id}")
}

pub fn audit_key(seq: u64) -> String {
    format!("{AUDIT_PREFIX}{seq:020}")
}

pub const CLAIMS_PREFIX: &str = "/ndc/claims/";

pub fn claim_key(uid: &str) -> String {
    format!("{CLAIMS_PREFIX}{uid}")
}

pub const SERVICES_PREFIX: &str = "/ndc/services/";
pub const SUBSCRIPTIONS_PREFIX: &str = "/ndc/subscriptions/";

pub fn service_key(name: &str) -> String {
    format!("{SERVICES_PREFIX}{name}")
}

pub fn subscription_key(tenant: &str, service: &str) -> String {
    format!("{SUBSCRIPTIONS_PREFIX}{tenant}/{service}")
}

/// Key prefix of host records.
pub const NODES_PREFIX: &str = "/ndc/nodes/";

pub fn node_key(name: &str) -> String {
    format!("{NODES_PREFIX}{name}")
}

/// Where the overcommit ratios are kept (absent: [`ndc_core::inventory::DEFAULT_OVERCOMMIT`]).
pub const OVERCOMMIT_KEY: &str = "/ndc/settings/overcommit";
