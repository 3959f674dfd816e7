//! The database conformance suite against a real PostgreSQL server started
//! in a temporary directory.

use ndc_storage::{DatabaseStore, LocalPostgres, PostgresStore};
use ndc_testkit::conformance;

async fn postgres(dir: &std::path::Path) -> LocalPostgres {
    LocalPostgres::start(dir)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn postgres_passes_the_database_suite() {
    let dir = tempfile::tempdir().unwrap();
    let local = postgres(dir.path()).await;
    let store = PostgresStore::connect(local.config()).await.unwrap();
    if let Err(e) = conformance::database_store(&store).await {
        panic!("PostgreSQL: {e}");
    }
}

#[tokio::test]
async fn the_admin_needs_its_password_and_stop_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut local = postgres(dir.path()).await;
    let mut config = local.config();
    config.admin_password = Some("wrong".into());
    let err = PostgresStore::connect(config).await.unwrap_err();
    assert!(
        err.to_string().contains("password authentication failed"),
        "{err}"
    );
    let mut config = local.config();
    config.admin_password = None;
    assert!(PostgresStore::connect(config).await.is_err());

    PostgresStore::connect(local.config()).await.unwrap();
    local.stop().await;
    assert!(
        PostgresStore::connect(local.config()).await.is_err(),
        "the server still answers after stop()"
    );
    local.stop().await; // and again, then on drop: nothing happens
}

#[tokio::test]
async fn a_second_start_in_the_same_dir_keeps_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = LocalPostgres::start(dir.path()).await.unwrap();
    let cfg = first.config();
    let store = PostgresStore::connect(cfg.clone()).await.unwrap();
    let req = ndc_storage::DatabaseRequest {
        name: "ndc_kept".into(),
        role: "ndc_kept".into(),
        password: "kept-password-0123".into(),
        connection_limit: 0,
    };
    store.ensure_database(&req).await.unwrap();
    drop(store);
    first.stop().await;
    let mut second = LocalPostgres::start(dir.path()).await.unwrap();
    assert_eq!(
        second.config().port,
        cfg.port,
        "the port is reused when free"
    );
    assert_eq!(second.config().admin_password, cfg.admin_password);
    let store = PostgresStore::connect(second.config()).await.unwrap();
    assert!(store.database_exists("ndc_kept").await.unwrap());
    drop(store);
    second.stop().await;
}
