//! The object-store conformance suite against a real Garage node, plus
//! what we measure about Garage itself. Needs the `garage` binary (see
//! `ndc_storage::local::find_garage`); without it the tests fail with the
//! command that installs it.

use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
use ndc_storage::{BucketRequest, GarageStore, LocalGarage, ObjectStore};
use ndc_testkit::conformance;

async fn garage(dir: &std::path::Path) -> (LocalGarage, GarageStore) {
    let local = LocalGarage::start(dir)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let store = GarageStore::connect(local.config())
        .await
        .unwrap_or_else(|e| panic!("connecting to Garage: {e}"));
    (local, store)
}

#[tokio::test]
async fn garage_passes_the_object_store_suite() {
    let dir = tempfile::tempdir().unwrap();
    let (_local, store) = garage(dir.path()).await;
    if let Err(e) = conformance::object_store(&store).await {
        panic!("Garage: {e}");
    }
}

#[tokio::test]
async fn the_system_key_is_found_again_not_duplicated() {
    let dir = tempfile::tempdir().unwrap();
    let (local, store) = garage(dir.path()).await;
    let again = GarageStore::connect(local.config()).await.unwrap();
    assert_eq!(store.system_key_id(), again.system_key_id());
    assert!(store.system_key_id().starts_with("GK"));
    let creds = ndc_storage::generate_s3_credentials().unwrap();
    // Tenants never get the system key, nor remove it.
    assert!(store.remove_key(store.system_key_id()).await.is_err());
    let system = ndc_storage::S3Credentials {
        access_key_id: store.system_key_id().to_string(),
        secret_access_key: creds.secret_access_key,
    };
    // On a bucket that exists, so only the system-key rule can refuse it.
    let bucket = ndc_storage::BucketRequest {
        name: "ndc-system-key-check".into(),
        size_quota_bytes: 0,
        versioning: false,
        retention_days: None,
    };
    store.ensure_bucket(&bucket).await.unwrap();
    let err = store
        .ensure_key(&bucket.name, "x", &system)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("driver's own key"), "{err}");
}

#[tokio::test]
async fn every_earlier_key_of_a_bucket_can_be_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (_local, store) = garage(dir.path()).await;
    let bucket = ndc_storage::BucketRequest {
        name: "ndc-rotations".into(),
        size_quota_bytes: 0,
        versioning: false,
        retention_days: None,
    };
    store.ensure_bucket(&bucket).await.unwrap();
    let keys: Vec<_> = (0..3)
        .map(|_| ndc_storage::generate_s3_credentials().unwrap())
        .collect();
    for (i, k) in keys.iter().enumerate() {
        store
            .ensure_key(&bucket.name, &format!("ndc-rotations-g{i}"), k)
            .await
            .unwrap();
    }
    let keep = &keys[2].access_key_id;
    let mut removed = store.remove_other_keys(&bucket.name, keep).await.unwrap();
    removed.sort();
    let mut want = vec![keys[0].access_key_id.clone(), keys[1].access_key_id.clone()];
    want.sort();
    assert_eq!(removed, want);
    // The kept key still works, the system key too (it can still list).
    let s3 = store.s3_client(&keys[2]);
    s3.list_objects_v2()
        .bucket(&bucket.name)
        .send()
        .await
        .unwrap();
    assert!(store.is_empty(&bucket.name).await.unwrap());
    let gone = store.s3_client(&keys[0]);
    assert!(gone
        .list_objects_v2()
        .bucket(&bucket.name)
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn garage_has_no_versioning_and_quotas_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (_local, store) = garage(dir.path()).await;
    let name = "ndc-measure-versioning";
    store
        .ensure_bucket(&BucketRequest {
            name: name.into(),
            size_quota_bytes: 4096,
            versioning: false,
            retention_days: None,
        })
        .await
        .unwrap();
    assert_eq!(store.size_quota(name).await.unwrap(), Some(4096));

    // Garage answers GetBucketVersioning with "not enabled", and refuses
    // to turn versioning on, even for the bucket's owner key.
    let system = store.system_s3_client();
    let got = system
        .get_bucket_versioning()
        .bucket(name)
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.status(),
        None,
        "Garage reported versioning {:?}",
        got.status()
    );
    let put = system
        .put_bucket_versioning()
        .bucket(name)
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await;
    assert!(put.is_err(), "Garage accepted PutBucketVersioning");
    let lock = system
        .get_object_lock_configuration()
        .bucket(name)
        .send()
        .await;
    assert!(
        lock.as_ref()
            .map_or(true, |l| l.object_lock_configuration().is_none()),
        "Garage reported an object lock configuration: {lock:?}"
    );
    store.delete_bucket(name, true).await.unwrap();
}

#[tokio::test]
async fn stop_is_clean_and_quick_once_clients_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let (mut local, store) = garage(dir.path()).await;
    drop(store);
    let started = std::time::Instant::now();
    local.stop().await;
    let took = started.elapsed();
    // Garage waits up to 10 s for open connections to end: well under
    // that means none was left (with room for a loaded machine).
    assert!(
        took < std::time::Duration::from_secs(8),
        "stop took {took:?}"
    );
    assert!(
        GarageStore::connect(local.config()).await.is_err(),
        "Garage still answers after stop()"
    );
    local.stop().await; // again, then on drop: nothing happens
}

#[tokio::test]
async fn a_second_start_in_the_same_dir_keeps_buckets_and_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = ndc_storage::LocalGarage::start(dir.path()).await.unwrap();
    let cfg = first.config();
    let store = GarageStore::connect(cfg.clone()).await.unwrap();
    let bucket = ndc_storage::BucketRequest {
        name: "ndc-kept".into(),
        size_quota_bytes: 0,
        versioning: false,
        retention_days: None,
    };
    store.ensure_bucket(&bucket).await.unwrap();
    drop(store);
    first.stop().await;
    let mut second = ndc_storage::LocalGarage::start(dir.path()).await.unwrap();
    assert_eq!(
        second.config().s3_endpoint,
        cfg.s3_endpoint,
        "the port is reused when free"
    );
    let store = GarageStore::connect(second.config()).await.unwrap();
    assert!(store.bucket_exists("ndc-kept").await.unwrap());
    drop(store);
    second.stop().await;
}
