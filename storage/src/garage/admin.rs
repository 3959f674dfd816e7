//! A small client for Garage's admin API v2 (`/v2/<Operation>`, bearer
//! token), and the shapes of what it sends and answers.

use super::*;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Perm {
    #[serde(default)]
    pub(super) read: bool,
    #[serde(default)]
    pub(super) write: bool,
    #[serde(default)]
    pub(super) owner: bool,
}

impl Perm {
    pub(super) const ALL: Perm = Perm {
        read: true,
        write: true,
        owner: true,
    };
    pub(super) const READ_WRITE: Perm = Perm {
        read: true,
        write: true,
        owner: false,
    };
    pub(super) fn any(self) -> bool {
        self.read || self.write || self.owner
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Quotas {
    pub(super) max_size: Option<u64>,
    pub(super) max_objects: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BucketInfo {
    pub(super) id: String,
    #[serde(default)]
    pub(super) keys: Vec<BucketKey>,
    #[serde(default)]
    pub(super) objects: i64,
    #[serde(default)]
    pub(super) quotas: Quotas,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BucketKey {
    pub(super) access_key_id: String,
    #[serde(default)]
    pub(super) permissions: Perm,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct KeyInfo {
    pub(super) access_key_id: String,
    #[serde(default)]
    pub(super) name: String,
    #[serde(default)]
    pub(super) secret_access_key: Option<String>,
    #[serde(default)]
    pub(super) permissions: KeyPerm,
    #[serde(default)]
    pub(super) buckets: Vec<KeyBucket>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct KeyPerm {
    #[serde(default)]
    pub(super) create_bucket: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct KeyBucket {
    pub(super) id: String,
    #[serde(default)]
    pub(super) permissions: Perm,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BucketListItem {
    #[serde(default)]
    pub(super) global_aliases: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct KeyListItem {
    pub(super) id: String,
    #[serde(default)]
    pub(super) name: String,
    #[serde(default)]
    pub(super) created: Option<String>,
    #[serde(default)]
    pub(super) expired: bool,
}

/// A refusal from the admin API: HTTP status and Garage's error code.
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) status: StatusCode,
    pub(super) code: String,
    pub(super) message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

/// A small client for the admin API v2 (`/v2/<Operation>`, bearer token).
pub(super) struct Admin {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
    pub(super) token: String,
}

impl Admin {
    pub(super) fn new(config: &GarageConfig) -> Result<Self> {
        let base = config.admin_endpoint.trim_end_matches('/').to_string();
        if !base.starts_with("http://") {
            return Err(Error::Config(format!(
                "Garage admin_endpoint {base:?}: only http:// is supported (keep the admin API on a private network)"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::backend("setting up the Garage admin client", e))?;
        Ok(Admin {
            http,
            base,
            token: config.admin_token.clone(),
        })
    }

    /// Calls an operation; `Ok(Err(_))` is Garage's refusal, `Err(_)` a
    /// transport failure or an unreadable answer.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        op: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<std::result::Result<T, Refusal>> {
        let what = || format!("Garage admin {op}");
        let mut req = self
            .http
            .request(method, format!("{}/v2/{op}", self.base))
            .bearer_auth(&self.token)
            .query(query);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| Error::backend(what(), e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| Error::backend(what(), e))?;
        if status.is_success() {
            // Some operations answer with an empty body.
            let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
            return serde_json::from_slice(bytes)
                .map(Ok)
                .map_err(|e| Error::backend(what(), format!("unexpected answer: {e}")));
        }
        let parsed: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let field = |name: &str| parsed.get(name).and_then(Value::as_str).map(str::to_string);
        Ok(Err(Refusal {
            status,
            code: field("code").unwrap_or_default(),
            message: field("message")
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned()),
        }))
    }

    /// Like `call`, with every refusal an error.
    pub(super) async fn must<T: DeserializeOwned>(
        &self,
        method: Method,
        op: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<T> {
        self.call(method, op, query, body)
            .await?
            .map_err(|r| Error::backend(format!("Garage admin {op}"), r))
    }

    pub(super) async fn bucket_by_alias(&self, alias: &str) -> Result<Option<BucketInfo>> {
        match self
            .call(
                Method::GET,
                "GetBucketInfo",
                &[("globalAlias", alias)],
                None,
            )
            .await?
        {
            Ok(b) => Ok(Some(b)),
            Err(r) if r.status == StatusCode::NOT_FOUND => Ok(None),
            Err(r) => Err(Error::backend(
                format!("Garage admin GetBucketInfo {alias}"),
                r,
            )),
        }
    }

    pub(super) async fn create_bucket(&self, alias: &str) -> Result<BucketInfo> {
        self.create_bucket_granting(alias, None).await
    }

    /// Creates the bucket `alias`, or finds it if it exists. With `key`, a
    /// new bucket is made with that key allowed to read and write it (and
    /// named `alias` for it too), in the same call.
    pub(super) async fn create_bucket_granting(
        &self,
        alias: &str,
        key: Option<&str>,
    ) -> Result<BucketInfo> {
        let mut body = json!({ "globalAlias": alias });
        if let Some(k) = key {
            body["localAlias"] = json!({
                "accessKeyId": k,
                "alias": alias,
                "allow": Perm::READ_WRITE,
            });
        }
        match self
            .call(Method::POST, "CreateBucket", &[], Some(body))
            .await?
        {
            Ok(b) => Ok(b),
            // It exists already (created meanwhile, or a pass that is run
            // again): the same end state.
            Err(r) if r.status == StatusCode::CONFLICT || r.status == StatusCode::BAD_REQUEST => {
                self.bucket_by_alias(alias)
                    .await?
                    .ok_or_else(|| Error::backend(format!("Garage admin CreateBucket {alias}"), r))
            }
            Err(r) => Err(Error::backend(
                format!("Garage admin CreateBucket {alias}"),
                r,
            )),
        }
    }

    pub(super) async fn set_quotas(&self, bucket_id: &str, quotas: Quotas) -> Result<()> {
        let body = json!({ "quotas": quotas });
        let _: Value = self
            .must(
                Method::POST,
                "UpdateBucket",
                &[("id", bucket_id)],
                Some(body),
            )
            .await?;
        Ok(())
    }

    pub(super) async fn cleanup_uploads(&self, bucket_id: &str) -> Result<()> {
        let body = json!({ "bucketId": bucket_id, "olderThanSecs": 0 });
        let _: Value = self
            .must(Method::POST, "CleanupIncompleteUploads", &[], Some(body))
            .await?;
        Ok(())
    }

    pub(super) async fn delete_bucket(&self, alias: &str, bucket_id: &str) -> Result<()> {
        match self
            .call::<Value>(Method::POST, "DeleteBucket", &[("id", bucket_id)], None)
            .await?
        {
            Ok(_) => Ok(()),
            Err(r) if r.status == StatusCode::NOT_FOUND => Ok(()),
            // Written to between our check and the delete.
            Err(r) if r.code == "BucketNotEmpty" => Err(Error::NotEmpty {
                bucket: alias.to_string(),
                objects: 1,
            }),
            Err(r) => Err(Error::backend(
                format!("Garage admin DeleteBucket {alias}"),
                r,
            )),
        }
    }

    /// Allows (`allow`) or denies the permissions set in `perm`, leaving
    /// the others as they are. Returns the bucket after the change.
    pub(super) async fn set_bucket_key(
        &self,
        allow: bool,
        bucket_id: &str,
        key_id: &str,
        perm: Perm,
    ) -> Result<Option<BucketInfo>> {
        let op = if allow {
            "AllowBucketKey"
        } else {
            "DenyBucketKey"
        };
        let body = json!({ "bucketId": bucket_id, "accessKeyId": key_id, "permissions": perm });
        let v: Value = self.must(Method::POST, op, &[], Some(body)).await?;
        // Garage answers with the bucket as it now is.
        Ok(serde_json::from_value(v).ok())
    }

    pub(super) async fn list_buckets(&self) -> Result<Vec<BucketListItem>> {
        self.must(Method::GET, "ListBuckets", &[], None).await
    }

    pub(super) async fn list_keys(&self) -> Result<Vec<KeyListItem>> {
        self.must(Method::GET, "ListKeys", &[], None).await
    }

    pub(super) async fn key(&self, id: &str, show_secret: bool) -> Result<Option<KeyInfo>> {
        let show = if show_secret { "true" } else { "false" };
        match self
            .call(
                Method::GET,
                "GetKeyInfo",
                &[("id", id), ("showSecretKey", show)],
                None,
            )
            .await?
        {
            Ok(k) => Ok(Some(k)),
            Err(r) if r.status == StatusCode::NOT_FOUND => Ok(None),
            Err(r) => Err(Error::backend(format!("Garage admin GetKeyInfo {id}"), r)),
        }
    }

    pub(super) async fn create_key(&self, name: &str) -> Result<String> {
        let body = json!({ "name": name });
        let key: KeyInfo = self
            .must(Method::POST, "CreateKey", &[], Some(body))
            .await?;
        Ok(key.access_key_id)
    }

    pub(super) async fn import_key(&self, creds: &S3Credentials, name: &str) -> Result<KeyInfo> {
        let body = json!({
            "accessKeyId": creds.access_key_id,
            "secretAccessKey": creds.secret_access_key,
            "name": name,
        });
        match self
            .call(Method::POST, "ImportKey", &[], Some(body))
            .await?
        {
            Ok(k) => {
                // ImportKey does not return the secret: it is the one just
                // imported.
                let mut k: KeyInfo = k;
                k.secret_access_key = Some(creds.secret_access_key.clone());
                Ok(k)
            }
            Err(r) if r.status == StatusCode::CONFLICT => {
                // Imported meanwhile (fine if the secret matches), or
                // deleted before: Garage never takes a deleted key id back.
                match self.key(&creds.access_key_id, true).await? {
                    Some(k) => Ok(k),
                    None => Err(Error::Config(format!(
                        "key {} was deleted from Garage and its id cannot be used again; generate new credentials",
                        creds.access_key_id
                    ))),
                }
            }
            Err(r) => Err(Error::backend(
                format!("Garage admin ImportKey {}", creds.access_key_id),
                r,
            )),
        }
    }

    /// Sets the key's name and takes back the right to create buckets.
    pub(super) async fn update_key(&self, id: &str, name: &str) -> Result<()> {
        let body = json!({ "name": name, "deny": { "createBucket": true } });
        let _: Value = self
            .must(Method::POST, "UpdateKey", &[("id", id)], Some(body))
            .await?;
        Ok(())
    }

    pub(super) async fn delete_key(&self, id: &str) -> Result<()> {
        match self
            .call::<Value>(Method::POST, "DeleteKey", &[("id", id)], None)
            .await?
        {
            Ok(_) => Ok(()),
            Err(r) if r.status == StatusCode::NOT_FOUND => Ok(()),
            Err(r) => Err(Error::backend(format!("Garage admin DeleteKey {id}"), r)),
        }
    }

    /// Whether the cluster is healthy (all partitions have a quorum).
    pub(super) async fn healthy(&self) -> Result<bool> {
        let v: Value = self
            .must(Method::GET, "GetClusterHealth", &[], None)
            .await?;
        Ok(v.get("status").and_then(Value::as_str) == Some("healthy"))
    }
}
