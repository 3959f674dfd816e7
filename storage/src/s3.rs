//! Plain S3 operations shared by the object-store drivers, over
//! `aws-sdk-s3`: a client set up the way tenants' clients must be (path
//! style, the server's region), and the bucket-level chores a driver does
//! with its own key (emptiness, purge, backups).

use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

use crate::{Error, Result, S3Credentials};

/// An S3 client for `endpoint` (`http://` or `https://`), signing for
/// `region` with `creds`, with path-style addressing
/// (`endpoint/bucket/key`), which servers without wildcard DNS need.
/// TLS, where used, is rustls with the ring provider and the system's
/// root certificates.
pub fn client(endpoint: &str, region: &str, creds: &S3Credentials) -> Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(10))
        .build();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(region.to_string()))
        .credentials_provider(Credentials::new(
            &creds.access_key_id,
            &creds.secret_access_key,
            None,
            None,
            "ndc",
        ))
        .force_path_style(true)
        .timeout_config(timeouts)
        .http_client(http)
        .build();
    Client::from_conf(config)
}

/// The S3 error code of a failed request ("AccessDenied", "NoSuchBucket"),
/// if the server sent one.
pub fn error_code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}

fn s3_error<E, R>(what: String, err: SdkError<E, R>) -> Error
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    Error::backend(what, DisplayErrorContext(err))
}

/// Whether the bucket holds no object (one `ListObjectsV2` with max-keys 1).
pub async fn is_empty(client: &Client, bucket: &str) -> Result<bool> {
    let out = client
        .list_objects_v2()
        .bucket(bucket)
        .max_keys(1)
        .send()
        .await
        .map_err(|e| s3_error(format!("listing bucket {bucket}"), e))?;
    Ok(out.contents().is_empty())
}

/// Deletes every object in the bucket, a page (up to 1000 keys) at a
/// time; returns how many were deleted. Objects written meanwhile may
/// survive: the caller checks again before deleting the bucket.
pub async fn purge(client: &Client, bucket: &str) -> Result<u64> {
    let mut deleted = 0u64;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .max_keys(1000)
            .send()
            .await
            .map_err(|e| s3_error(format!("listing bucket {bucket}"), e))?;
        let mut ids = Vec::new();
        for object in page.contents() {
            if let Some(key) = object.key() {
                let id = ObjectIdentifier::builder()
                    .key(key)
                    .build()
                    .map_err(|e| Error::backend(format!("purging bucket {bucket}"), e))?;
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return Ok(deleted);
        }
        let count = ids.len() as u64;
        let delete = Delete::builder()
            .set_objects(Some(ids))
            .quiet(true)
            .build()
            .map_err(|e| Error::backend(format!("purging bucket {bucket}"), e))?;
        let out = client
            .delete_objects()
            .bucket(bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| s3_error(format!("deleting objects in bucket {bucket}"), e))?;
        if let Some(first) = out.errors().first() {
            return Err(Error::backend(
                format!("deleting objects in bucket {bucket}"),
                format!(
                    "{} object(s) not deleted, first {:?}: {} {}",
                    out.errors().len(),
                    first.key().unwrap_or_default(),
                    first.code().unwrap_or_default(),
                    first.message().unwrap_or_default()
                ),
            ));
        }
        deleted += count;
    }
}

/// Writes one object.
pub async fn put_object(client: &Client, bucket: &str, key: &str, body: Vec<u8>) -> Result<()> {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .map_err(|e| s3_error(format!("writing object {key:?} in bucket {bucket}"), e))?;
    Ok(())
}

/// Whether an object exists (`HeadObject`).
pub async fn object_exists(client: &Client, bucket: &str, key: &str) -> Result<bool> {
    match client.head_object().bucket(bucket).key(key).send().await {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(false),
        Err(e) => Err(s3_error(
            format!("looking up object {key:?} in bucket {bucket}"),
            e,
        )),
    }
}
