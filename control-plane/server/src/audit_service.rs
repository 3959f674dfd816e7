//! The audit log: listing and verifying the hash chain.

use crate::status;
use std::sync::Arc;

use ndc_api::tenants::audit_server::Audit;
use ndc_api::tenants::{self as pb};
use ndc_core::domain::Role;
use tonic::{Request, Response, Status};

use crate::auth::require;
use crate::node::Node;

pub(crate) struct AuditService {
    pub(crate) node: Arc<Node>,
}

const READERS: [Role; 2] = [Role::DcOperator, Role::Auditor];

#[tonic::async_trait]
impl Audit for AuditService {
    async fn list(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let actor = self.node.auth.actor(request.metadata())?;
        require(&actor, &READERS, "read the audit log")?;
        let r = request.into_inner();
        self.node.read_barrier(false).await?;
        let records = self
            .node
            .reader
            .audit_records(r.from_seq, 0)
            .map_err(status::store)?;
        let records = records
            .into_iter()
            .filter(|a| r.actor.is_empty() || a.actor == r.actor)
            .filter(|a| r.action.is_empty() || a.action == r.action)
            .filter(|a| r.target.is_empty() || a.target.split([',', ' ']).any(|t| t == r.target))
            .take(if r.limit == 0 {
                usize::MAX
            } else {
                r.limit as usize
            })
            .map(|a| pb::AuditRecord {
                seq: a.seq,
                revision: a.revision,
                at_ms: a.at_ms,
                actor: a.actor,
                action: a.action,
                target: a.target,
                decision: a.decision.unwrap_or_default(),
                prev_hash: a.prev_hash,
                hash: a.hash,
            })
            .collect();
        Ok(Response::new(pb::ListAuditResponse { records }))
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        let actor = self.node.auth.actor(request.metadata())?;
        require(&actor, &READERS, "verify the audit log")?;
        self.node.read_barrier(false).await?;
        let report = self.node.reader.verify_audit().map_err(status::store)?;
        let (first_bad_seq, problem) = report.problem.unwrap_or((0, String::new()));
        Ok(Response::new(pb::VerifyAuditResponse {
            ok: problem.is_empty(),
            checked: report.checked,
            first_bad_seq,
            problem,
        }))
    }
}
