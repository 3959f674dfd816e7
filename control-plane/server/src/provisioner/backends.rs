//! The outside systems claims are provisioned in, and the file that names them.

use std::sync::Arc;

use ndc_storage::{DatabaseStore, ObjectStore};

/// The outside systems claims are provisioned in. A kind without one stays
/// Pending with a status that says so.
#[derive(Clone, Debug, Default)]
pub struct Provisioning {
    pub objects: Option<Arc<dyn ObjectStore>>,
    pub databases: Option<Arc<dyn DatabaseStore>>,
    /// Where the final dump of a deleted database is stored (a bucket of
    /// the data centre's own, outside any claim).
    pub backup_bucket: Option<String>,
}

/// The backends file given to `ndc server --backends-file`: where claims
/// are provisioned. Every part is optional; a claim whose kind has no
/// backend stays Pending and says so.
///
/// ```yaml
/// garage:
///   s3_endpoint: http://127.0.0.1:3900
///   admin_endpoint: http://127.0.0.1:3903
///   admin_token: "..."
///   region: garage
/// postgres:
///   host: 127.0.0.1
///   port: 5432
///   admin_user: postgres
///   admin_password: "..."
/// backup_bucket: ndc-backups
/// ```
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendsFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub garage: Option<ndc_storage::GarageConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<ndc_storage::PostgresConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_bucket: Option<String>,
}

impl Provisioning {
    /// Reads a backends file and connects to what it names.
    pub async fn load(path: &std::path::Path) -> Result<Provisioning, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the backends file {}: {e}", path.display()))?;
        let file: BackendsFile =
            serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Provisioning::connect(file).await
    }

    /// Connects to the backends; an unreachable one is an error now rather
    /// than a surprise at the first claim.
    pub async fn connect(file: BackendsFile) -> Result<Provisioning, String> {
        let objects: Option<Arc<dyn ObjectStore>> = match file.garage {
            Some(g) => {
                let endpoint = g.admin_endpoint.clone();
                let store = ndc_storage::GarageStore::connect(g)
                    .await
                    .map_err(|e| format!("cannot use Garage at {endpoint}: {e}"))?;
                Some(Arc::new(store))
            }
            None => None,
        };
        let databases: Option<Arc<dyn DatabaseStore>> = match file.postgres {
            Some(p) => {
                let at = format!("{}:{}", p.host, p.port);
                let store = ndc_storage::PostgresStore::connect(p)
                    .await
                    .map_err(|e| format!("cannot use PostgreSQL at {at}: {e}"))?;
                Some(Arc::new(store))
            }
            None => None,
        };
        if file.backup_bucket.is_some() && objects.is_none() {
            return Err("backup_bucket needs an object store (garage) in the backends file".into());
        }
        Ok(Provisioning {
            objects,
            databases,
            backup_bucket: file.backup_bucket,
        })
    }
}
