//! The revisioned object API.

use crate::{status, watch};
use std::sync::Arc;

use ndc_api::kv::kv_server::Kv;
use ndc_api::kv::{self as pb, Consistency};
use ndc_store::{
    validate_key, validate_txn, Command, Compare, Event, EventKind, Op, Response, StoredObject, Txn,
};
use tonic::{Request, Status};
use tracing::instrument;

use crate::auth::require;
use crate::node::Node;
use ndc_core::domain::Role;

const WRITERS: [Role; 1] = [Role::DcOperator];
const READERS: [Role; 2] = [Role::DcOperator, Role::Auditor];

pub(crate) struct KvService {
    pub(crate) node: Arc<Node>,
}

fn object(key: String, o: StoredObject) -> pb::Object {
    pb::Object {
        key,
        value: o.value,
        create_revision: o.create_revision,
        mod_revision: o.mod_revision,
        version: o.version,
    }
}

fn stale(c: i32) -> bool {
    c == Consistency::Stale as i32
}

impl KvService {
    /// Checks the transaction's shape, proposes it and turns a rejection
    /// into a status that says what to do.
    async fn commit(
        &self,
        txn: Txn,
        request_id: Option<String>,
    ) -> Result<(u64, Vec<u64>), Status> {
        validate_txn(&txn).map_err(Status::invalid_argument)?;
        match self
            .node
            .write(crate::node::once(request_id, Command::Txn(txn)))
            .await?
        {
            Response::Applied { revision, results } => Ok((
                revision,
                results.into_iter().map(|r| r.prev_revision).collect(),
            )),
            Response::Rejected(r) => Err(status::rejected(r)),
            Response::Empty
            | Response::Domain { .. }
            | Response::Claim { .. }
            | Response::Catalog { .. }
            | Response::Batch(_) => Err(Status::internal("the state machine returned no result")),
        }
    }
}

/// The compare that makes a put or delete conditional, if asked for.
fn guard(key: &str, expected_revision: Option<u64>) -> Vec<Compare> {
    expected_revision
        .map(|revision| Compare {
            key: key.to_string(),
            revision,
        })
        .into_iter()
        .collect()
}

type WatchStream = watch::Watch<pb::WatchResponse>;

#[tonic::async_trait]
impl Kv for KvService {
    #[instrument(skip_all, fields(key = %request.get_ref().key))]
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<tonic::Response<pb::PutResponse>, Status> {
        require(
            &self.node.auth.actor(request.metadata())?,
            &WRITERS,
            "write objects",
        )?;
        let rid = crate::node::request_id(request.metadata())?;
        let r = request.into_inner();
        let compares = guard(&r.key, r.expected_revision);
        let txn = Txn {
            compares,
            ops: vec![Op::Put {
                key: r.key,
                value: r.value,
            }],
        };
        let (revision, prev) = self.commit(txn, rid).await?;
        Ok(tonic::Response::new(pb::PutResponse {
            revision,
            prev_revision: prev.first().copied().unwrap_or(0),
        }))
    }

    #[instrument(skip_all, fields(key = %request.get_ref().key))]
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<tonic::Response<pb::GetResponse>, Status> {
        require(
            &self.node.auth.actor(request.metadata())?,
            &READERS,
            "read objects",
        )?;
        let r = request.into_inner();
        validate_key(&r.key).map_err(Status::invalid_argument)?;
        self.node.read_barrier(stale(r.consistency)).await?;
        let (obj, revision) = self.node.reader.get(&r.key).map_err(status::store)?;
        Ok(tonic::Response::new(pb::GetResponse {
            object: obj.map(|o| object(r.key, o)),
            revision,
        }))
    }

    #[instrument(skip_all, fields(key = %request.get_ref().key))]
    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<tonic::Response<pb::DeleteResponse>, Status> {
        require(
            &self.node.auth.actor(request.metadata())?,
            &WRITERS,
            "delete objects",
        )?;
        let rid = crate::node::request_id(request.metadata())?;
        let r = request.into_inner();
        let compares = guard(&r.key, r.expected_revision);
        let txn = Txn {
            compares,
            ops: vec![Op::Delete { key: r.key }],
        };
        let (revision, prev) = self.commit(txn, rid).await?;
        let prev_revision = prev.first().copied().unwrap_or(0);
        Ok(tonic::Response::new(pb::DeleteResponse {
            revision,
            deleted: prev_revision != 0,
            prev_revision,
        }))
    }

    #[instrument(skip_all, fields(prefix = %request.get_ref().prefix))]
    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<tonic::Response<pb::ListResponse>, Status> {
        require(
            &self.node.auth.actor(request.metadata())?,
            &READERS,
            "list objects",
        )?;
        let r = request.into_inner();
        if !r.prefix.is_empty() {
            validate_key(&r.prefix)
                .map_err(|e| Status::invalid_argument(format!("prefix: {e}")))?;
        }
        self.node.read_barrier(stale(r.consistency)).await?;
        let start_after = (!r.start_after.is_empty()).then_some(r.start_after.as_str());
        let page = self
            .node
            .reader
            .list(&r.prefix, start_after, r.limit as usize)
            .map_err(status::store)?;
        Ok(tonic::Response::new(pb::ListResponse {
            objects: page.items.into_iter().map(|(k, o)| object(k, o)).collect(),
            revision: page.revision,
            more: page.more,
        }))
    }

    #[instrument(skip_all, fields(ops = request.get_ref().ops.len()))]
    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<tonic::Response<pb::TxnResponse>, Status> {
        require(
            &self.node.auth.actor(request.metadata())?,
            &WRITERS,
            "write objects",
        )?;
        let rid = crate::node::request_id(request.metadata())?;
        let r = request.into_inner();
        let mut ops = Vec::with_capacity(r.ops.len());
        for op in r.ops {
            ops.push(match op.op {
                Some(pb::txn_op::Op::Put(p)) => Op::Put {
                    key: p.key,
                    value: p.value,
                },
                Some(pb::txn_op::Op::Delete(d)) => Op::Delete { key: d.key },
                None => {
                    return Err(Status::invalid_argument(
                        "a transaction op has neither put nor delete",
                    ))
                }
            });
        }
        let txn = Txn {
            compares: r
                .compares
                .into_iter()
                .map(|c| Compare {
                    key: c.key,
                    revision: c.revision,
                })
                .collect(),
            ops,
        };
        let (revision, prev_revisions) = self.commit(txn, rid).await?;
        Ok(tonic::Response::new(pb::TxnResponse {
            revision,
            prev_revisions,
        }))
    }

    type WatchStream = WatchStream;

    #[instrument(skip_all, fields(prefix = %request.get_ref().prefix, from = request.get_ref().start_revision))]
    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<tonic::Response<WatchStream>, Status> {
        require(
            &self.node.auth.actor(request.metadata())?,
            &READERS,
            "watch objects",
        )?;
        let r = request.into_inner();
        if !r.prefix.is_empty() {
            validate_key(&r.prefix)
                .map_err(|e| Status::invalid_argument(format!("prefix: {e}")))?;
        }
        let prefix = r.prefix;
        let stream = watch::open(
            self.node.reader.clone(),
            r.start_revision,
            |revision| pb::WatchResponse {
                events: vec![],
                revision,
            },
            move |revision, events| {
                let events = to_pb(events, &prefix);
                Ok((!events.is_empty()).then_some(pb::WatchResponse { events, revision }))
            },
        )?;
        Ok(tonic::Response::new(stream))
    }
}

fn to_pb(events: &[Event], prefix: &str) -> Vec<pb::Event> {
    events
        .iter()
        .filter(|e| e.key.starts_with(prefix))
        .map(|e| pb::Event {
            kind: match e.kind {
                EventKind::Put => pb::event::Kind::Put as i32,
                EventKind::Delete => pb::event::Kind::Delete as i32,
            },
            object: Some(object(e.key.clone(), e.object.clone())),
            revision: e.revision,
        })
        .collect()
}
