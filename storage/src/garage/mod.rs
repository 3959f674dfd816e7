//! The object-store driver for Garage: buckets, keys and permissions
//! through Garage's admin API v2, objects through S3 with the driver's own
//! "system" key.
//!
//! What Garage (2.x) does and does not do, checked against its source and
//! the conformance suite:
//! - no bucket versioning and no object lock: `GetBucketVersioning` always
//!   answers "not enabled", `PutBucketVersioning` and
//!   `PutObjectLockConfiguration` are refused; a request for either fails
//!   here with [`Error::Unsupported`] before anything is created;
//! - hard quotas per bucket (`maxSize`, `maxObjects`): a write that would
//!   take the bucket over `maxSize` is refused with `AccessDenied`;
//! - keys are imported, so the control plane generates them
//!   ([`crate::generate_s3_credentials`]). Garage never lets a deleted key id
//!   be imported again, and cannot change a key's secret: rotation means a
//!   new key, then [`ObjectStore::remove_key`] on the old one.
//!
//! The admin API is spoken over plain HTTP (reqwest without TLS): keep it on
//! a private network. The S3 endpoint may be `http://` or `https://`.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{s3, BucketRequest, Error, ObjectStore, ObjectStoreFeatures, Result, S3Credentials};

mod admin;

use admin::*;

const PRODUCT: &str = "Garage";

/// Where Garage is and how to administer it; read from the control
/// plane's configuration file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GarageConfig {
    /// The S3 API, e.g. `http://127.0.0.1:3900`; also what tenants use.
    pub s3_endpoint: String,
    /// The admin API, e.g. `http://127.0.0.1:3903` (plain HTTP only).
    pub admin_endpoint: String,
    /// Garage's `admin_token` (or an admin token with enough scope).
    pub admin_token: String,
    /// Garage's `s3_region`; clients signing with another region are refused.
    pub region: String,
}

impl std::fmt::Debug for GarageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GarageConfig")
            .field("s3_endpoint", &self.s3_endpoint)
            .field("admin_endpoint", &self.admin_endpoint)
            .field("admin_token", &"<redacted>")
            .field("region", &self.region)
            .finish()
    }
}

/// Garage behind the [`ObjectStore`] trait.
pub struct GarageStore {
    config: GarageConfig,
    admin: Admin,
    system_key: S3Credentials,
    s3: aws_sdk_s3::Client,
}

impl std::fmt::Debug for GarageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GarageStore")
            .field("config", &self.config)
            .field("system_key", &self.system_key.access_key_id)
            .finish()
    }
}

impl GarageStore {
    /// Name of the driver's own key in Garage.
    pub const SYSTEM_KEY_NAME: &'static str = "ndc-system";

    /// Connects to Garage and finds the driver's system key (named
    /// [`Self::SYSTEM_KEY_NAME`]), creating it if there is none. The key
    /// has no global permission (not even bucket creation: buckets are
    /// created through the admin API); `ensure_bucket` gives it read, write
    /// and owner on each bucket the driver manages.
    ///
    /// Two control-plane replicas connecting for the first time at once may
    /// each create one; both then keep the oldest and the younger is deleted.
    pub async fn connect(config: GarageConfig) -> Result<Self> {
        let admin = Admin::new(&config)?;
        let system_key = find_or_create_system_key(&admin).await?;
        let s3 = s3::client(&config.s3_endpoint, &config.region, &system_key);
        Ok(GarageStore {
            config,
            admin,
            system_key,
            s3,
        })
    }

    pub fn config(&self) -> &GarageConfig {
        &self.config
    }

    /// The access key id of the driver's system key.
    pub fn system_key_id(&self) -> &str {
        &self.system_key.access_key_id
    }

    /// The S3 client signing with the system key: owner of the driver's own
    /// buckets (the backups); on a tenant's bucket only while it is checked
    /// for emptiness, and once it is emptied for deletion.
    pub fn system_s3_client(&self) -> &aws_sdk_s3::Client {
        &self.s3
    }

    /// An S3 client for this Garage with other credentials (a tenant's).
    pub fn s3_client(&self, creds: &S3Credentials) -> aws_sdk_s3::Client {
        s3::client(&self.config.s3_endpoint, &self.config.region, creds)
    }

    /// The global names of every bucket in Garage, sorted.
    pub async fn bucket_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .admin
            .list_buckets()
            .await?
            .into_iter()
            .flat_map(|b| b.global_aliases)
            .collect();
        names.sort();
        Ok(names)
    }

    /// The bucket's quota on size in bytes, `None` for no quota or no bucket.
    pub async fn size_quota(&self, bucket: &str) -> Result<Option<u64>> {
        Ok(self
            .admin
            .bucket_by_alias(bucket)
            .await?
            .and_then(|b| b.quotas.max_size))
    }

    /// What the system key may do on the bucket.
    fn system_key_perm(&self, bucket: &BucketInfo) -> Perm {
        bucket
            .keys
            .iter()
            .find(|k| k.access_key_id == self.system_key.access_key_id)
            .map(|k| k.permissions)
            .unwrap_or_default()
    }

    /// Gives the system key read, write and owner on the bucket.
    async fn allow_system_key(&self, bucket: &BucketInfo) -> Result<()> {
        let has = self.system_key_perm(bucket);
        if !(has.read && has.write && has.owner) {
            self.admin
                .set_bucket_key(true, &bucket.id, &self.system_key.access_key_id, Perm::ALL)
                .await?;
        }
        Ok(())
    }

    /// Brings a bucket's quota to `req`, and with `driver` the driver's
    /// key's grant (for the driver's own buckets).
    async fn settle_bucket(
        &self,
        bucket: &BucketInfo,
        req: &BucketRequest,
        driver: bool,
    ) -> Result<()> {
        if driver {
            self.allow_system_key(bucket).await?;
        }
        let max_size = (req.size_quota_bytes > 0).then_some(req.size_quota_bytes);
        if bucket.quotas.max_size != max_size {
            self.admin
                .set_quotas(
                    &bucket.id,
                    Quotas {
                        max_size,
                        max_objects: bucket.quotas.max_objects,
                    },
                )
                .await?;
        }
        Ok(())
    }

    /// Imports `creds` as the key `key_name`: a new claim's key does not
    /// exist yet; an existing one is read back, and its secret compared.
    async fn import_checked(&self, key_name: &str, creds: &S3Credentials) -> Result<KeyInfo> {
        let key = self.admin.import_key(creds, key_name).await?;
        if key.secret_access_key.as_deref() != Some(creds.secret_access_key.as_str()) {
            return Err(Error::Config(format!(
                "key {} exists in Garage with another secret; Garage cannot change a key's secret, generate new credentials",
                creds.access_key_id
            )));
        }
        if key.name != key_name || key.permissions.create_bucket {
            self.admin.update_key(&key.access_key_id, key_name).await?;
        }
        Ok(key)
    }

    /// Makes `creds` a key allowed to read and write `target` and nothing
    /// else. Returns the bucket as Garage described it after the grant,
    /// when a grant was needed.
    async fn grant_key(
        &self,
        target: &BucketInfo,
        key_name: &str,
        creds: &S3Credentials,
    ) -> Result<Option<BucketInfo>> {
        let key = self.import_checked(key_name, creds).await?;
        self.grant_imported(target, &key).await
    }

    /// [`Self::grant_key`] for a key already imported. What the key holds on
    /// `target` is read from `target`, which may be newer than `key`.
    async fn grant_imported(
        &self,
        target: &BucketInfo,
        key: &KeyInfo,
    ) -> Result<Option<BucketInfo>> {
        // Nothing but `target`: take back what the key has elsewhere.
        for b in &key.buckets {
            if b.id != target.id && b.permissions.any() {
                self.admin
                    .set_bucket_key(false, &b.id, &key.access_key_id, Perm::ALL)
                    .await?;
            }
        }
        let current = target
            .keys
            .iter()
            .find(|k| k.access_key_id == key.access_key_id)
            .map(|k| k.permissions)
            .unwrap_or_default();
        let mut after = None;
        if !(current.read && current.write) {
            after = self
                .admin
                .set_bucket_key(true, &target.id, &key.access_key_id, Perm::READ_WRITE)
                .await?;
        }
        if current.owner {
            let owner = Perm {
                owner: true,
                ..Perm::default()
            };
            after = self
                .admin
                .set_bucket_key(false, &target.id, &key.access_key_id, owner)
                .await?;
        }
        Ok(after)
    }

    /// Removes every key of the bucket but `keep` and the driver's own.
    async fn remove_keys_except(&self, info: &BucketInfo, keep: &str) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for k in &info.keys {
            if k.access_key_id == keep || k.access_key_id == self.system_key.access_key_id {
                continue;
            }
            self.admin.delete_key(&k.access_key_id).await?;
            removed.push(k.access_key_id.clone());
        }
        Ok(removed)
    }

    fn refuse_system_key(&self, access_key_id: &str) -> Result<()> {
        if access_key_id == self.system_key.access_key_id {
            return Err(Error::Config(format!(
                "{access_key_id} is the driver's own key ({}); tenants get keys of their own",
                Self::SYSTEM_KEY_NAME
            )));
        }
        Ok(())
    }
}

/// Garage has neither versioning nor object lock: refused before anything
/// is made.
fn check_request(req: &BucketRequest) -> Result<()> {
    if req.versioning {
        return Err(Error::Unsupported {
            product: PRODUCT,
            feature: "bucket versioning",
        });
    }
    if req.retention_days.is_some() {
        return Err(Error::Unsupported {
            product: PRODUCT,
            feature: "object lock (retention)",
        });
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for GarageStore {
    fn product(&self) -> &'static str {
        PRODUCT
    }

    fn features(&self) -> ObjectStoreFeatures {
        ObjectStoreFeatures {
            versioning: false,
            object_lock: false,
            quotas: true,
        }
    }

    fn endpoint(&self) -> String {
        self.config.s3_endpoint.clone()
    }

    fn region(&self) -> String {
        self.config.region.clone()
    }

    async fn ensure_bucket(&self, req: &BucketRequest) -> Result<()> {
        check_request(req)?;
        let bucket = match self.admin.bucket_by_alias(&req.name).await? {
            Some(b) => b,
            None => self.admin.create_bucket(&req.name).await?,
        };
        self.settle_bucket(&bucket, req, true).await
    }

    async fn bucket_exists(&self, name: &str) -> Result<bool> {
        Ok(self.admin.bucket_by_alias(name).await?.is_some())
    }

    async fn is_empty(&self, name: &str) -> Result<bool> {
        // A tenant's bucket gives the driver's key no standing access: it is
        // granted for the check.
        let Some(bucket) = self.admin.bucket_by_alias(name).await? else {
            return Ok(true);
        };
        let had = self.system_key_perm(&bucket);
        self.allow_system_key(&bucket).await?;
        let empty = s3::is_empty(&self.s3, name).await;
        // Taken back unless it was there before (a bucket of the driver's).
        if !had.any() {
            self.admin
                .set_bucket_key(false, &bucket.id, &self.system_key.access_key_id, Perm::ALL)
                .await?;
        }
        empty
    }

    async fn delete_bucket(&self, name: &str, purge: bool) -> Result<()> {
        let Some(bucket) = self.admin.bucket_by_alias(name).await? else {
            return Ok(());
        };
        // A tenant's bucket (the driver's key has no standing grant there),
        // or one made by another replica's system key (see `connect`).
        self.allow_system_key(&bucket).await?;
        if !s3::is_empty(&self.s3, name).await? {
            if !purge {
                return Err(Error::NotEmpty {
                    bucket: name.to_string(),
                    objects: u64::try_from(bucket.objects).unwrap_or(0).max(1),
                });
            }
            let n = s3::purge(&self.s3, name).await?;
            tracing::info!(bucket = name, objects = n, "purged bucket");
        }
        if purge {
            self.admin.cleanup_uploads(&bucket.id).await?;
        }
        self.admin.delete_bucket(name, &bucket.id).await
    }

    async fn ensure_key(&self, bucket: &str, key_name: &str, creds: &S3Credentials) -> Result<()> {
        self.refuse_system_key(&creds.access_key_id)?;
        let Some(target) = self.admin.bucket_by_alias(bucket).await? else {
            return Err(Error::backend(
                format!(
                    "giving key {} access to bucket {bucket}",
                    creds.access_key_id
                ),
                "the bucket does not exist",
            ));
        };
        self.grant_key(&target, key_name, creds).await.map(|_| ())
    }

    async fn remove_key(&self, access_key_id: &str) -> Result<()> {
        self.refuse_system_key(access_key_id)?;
        self.admin.delete_key(access_key_id).await
    }

    async fn remove_other_keys(&self, bucket: &str, keep: &str) -> Result<Vec<String>> {
        let Some(info) = self.admin.bucket_by_alias(bucket).await? else {
            return Ok(Vec::new());
        };
        self.remove_keys_except(&info, keep).await
    }

    /// Every admin call costs Garage an Argon2 check of the admin token
    /// (about 27 ms of CPU here), so a new claim's bucket takes three calls:
    /// the tenant's key imported, the bucket created with that key's grant
    /// (a lookup instead if it exists, then a grant if the key lacks one),
    /// the quota.
    async fn ensure_bucket_with_key(
        &self,
        req: &BucketRequest,
        key_name: &str,
        creds: &S3Credentials,
    ) -> Result<Vec<String>> {
        check_request(req)?;
        self.refuse_system_key(&creds.access_key_id)?;
        // The key first, so that a new bucket is made with the key's grant
        // in the same call: 4 admin calls for a new claim.
        let key = self.import_checked(key_name, creds).await?;
        let bucket = self
            .admin
            .create_bucket_granting(&req.name, Some(&key.access_key_id))
            .await?;
        // No standing grant for the driver's key on a tenant's bucket: it is
        // granted when the bucket is checked or emptied for deletion.
        self.settle_bucket(&bucket, req, false).await?;
        let info = match self.grant_imported(&bucket, &key).await? {
            Some(info) => info,
            None => bucket,
        };
        self.remove_keys_except(&info, &creds.access_key_id).await
    }

    async fn put_object(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<()> {
        s3::put_object(&self.s3, bucket, key, body).await
    }

    async fn object_exists(&self, bucket: &str, key: &str) -> Result<bool> {
        s3::object_exists(&self.s3, bucket, key).await
    }
}

async fn find_or_create_system_key(admin: &Admin) -> Result<S3Credentials> {
    let oldest = |keys: Vec<KeyListItem>| {
        keys.into_iter()
            .filter(|k| k.name == GarageStore::SYSTEM_KEY_NAME && !k.expired)
            .min_by_key(|k| (k.created.as_deref().map(sortable_time), k.id.clone()))
    };
    let id = match oldest(admin.list_keys().await?) {
        Some(k) => k.id,
        None => {
            let created = admin.create_key(GarageStore::SYSTEM_KEY_NAME).await?;
            let keep = oldest(admin.list_keys().await?)
                .map(|k| k.id)
                .unwrap_or_else(|| created.clone());
            if keep != created {
                admin.delete_key(&created).await?;
            }
            keep
        }
    };
    let key = admin.key(&id, true).await?.ok_or_else(|| {
        Error::backend(
            "reading the system key",
            format!("key {id} disappeared while connecting"),
        )
    })?;
    let secret = key.secret_access_key.ok_or_else(|| {
        Error::backend(
            "reading the system key",
            "Garage did not return its secret (the admin token may lack the scope)",
        )
    })?;
    Ok(S3Credentials {
        access_key_id: key.access_key_id,
        secret_access_key: secret,
    })
}

/// An RFC 3339 UTC time as Garage writes it ("2025-01-02T03:04:05.678Z",
/// with 0, 3, 6 or 9 fraction digits) made comparable as a string.
fn sortable_time(t: &str) -> String {
    let t = t.trim_end_matches('Z');
    let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
    format!("{secs}.{frac:0<9}")
}

/// Whether the Garage behind `config` answers on its admin API and reports
/// a healthy cluster (used to wait for a server that is starting).
pub async fn is_healthy(config: &GarageConfig) -> Result<bool> {
    Admin::new(config)?.healthy().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_debug_hides_the_token() {
        let c = GarageConfig {
            s3_endpoint: "http://127.0.0.1:3900".into(),
            admin_endpoint: "http://127.0.0.1:3903".into(),
            admin_token: "very-secret".into(),
            region: "garage".into(),
        };
        assert!(!format!("{c:?}").contains("very-secret"));
    }

    #[test]
    fn config_reads_from_json() {
        let c: GarageConfig = serde_json::from_str(
            r#"{"s3_endpoint":"http://a:3900","admin_endpoint":"http://a:3903","admin_token":"t","region":"garage"}"#,
        )
        .unwrap();
        assert_eq!(c.region, "garage");
        assert!(serde_json::from_str::<GarageConfig>(r#"{"s3_endpoint":"x"}"#).is_err());
    }

    #[test]
    fn admin_endpoint_must_be_http() {
        let c = GarageConfig {
            s3_endpoint: "http://127.0.0.1:3900".into(),
            admin_endpoint: "https://127.0.0.1:3903".into(),
            admin_token: "t".into(),
            region: "garage".into(),
        };
        assert!(matches!(Admin::new(&c), Err(Error::Config(_))));
    }

    #[test]
    fn times_sort_with_or_without_fractions() {
        let a = sortable_time("2025-01-02T03:04:05Z");
        let b = sortable_time("2025-01-02T03:04:05.120Z");
        let c = sortable_time("2025-01-02T03:04:05.12345Z");
        let d = sortable_time("2025-01-02T03:04:06Z");
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
    }

    #[test]
    fn permissions_serialize_as_garage_expects() {
        let v = serde_json::to_value(Perm::READ_WRITE).unwrap();
        assert_eq!(v, json!({"read": true, "write": true, "owner": false}));
        let q = serde_json::to_value(Quotas {
            max_size: Some(10),
            max_objects: None,
        })
        .unwrap();
        assert_eq!(q, json!({"maxSize": 10, "maxObjects": null}));
    }
}
