//! What the provisioner works with, handed to it when the node starts: the
//! claims to read, where to record what it did, whether it may act, the
//! key that opens credentials, the backends and its counters. It knows
//! nothing else of the node, so a test can run it against its own fakes.

use std::sync::Arc;

use ndc_core::claims::ClaimRequest;
use ndc_store::{Response, StoreReader};
use tonic::async_trait;

use super::{Provisioning, Stats};
use crate::secrets::SecretsKey;

/// Whether this node may provision now.
#[async_trait]
pub(crate) trait Leadership: Send + Sync {
    /// Whether this node leads its cluster and was not removed from it.
    fn leads(&self) -> bool;
    /// Returns once this node has applied every change committed before
    /// the call; an error says why it could not tell.
    async fn read_barrier(&self) -> Result<(), String>;
}

/// Where the provisioner records what it did: a claim request, through the
/// node's write path (the log), answered with what applying it produced.
#[async_trait]
pub(crate) trait StatusWriter: Send + Sync {
    async fn record(&self, req: ClaimRequest) -> Result<Response, String>;
}

/// Everything the provisioner uses.
pub(crate) struct Context {
    /// The claims, and the feed of their changes.
    pub(crate) claims: StoreReader,
    pub(crate) status: Arc<dyn StatusWriter>,
    pub(crate) leadership: Arc<dyn Leadership>,
    /// Opens claim credentials; without it every pass fails and says so.
    pub(crate) secrets: Option<SecretsKey>,
    /// Where claims are provisioned.
    pub(crate) backends: Provisioning,
    /// Counters of the provisioner's work, read by [`crate::RunningNode`].
    pub(crate) stats: Arc<Stats>,
}
