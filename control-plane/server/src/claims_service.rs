//! The claims service: buckets and databases, admitted in apply; their
//! credentials generated and sealed here before they reach the log.

use crate::{status, watch};
use ndc_store::{keys, EventKind};
use std::sync::Arc;

use ndc_api::claims::claims_server::Claims;
use ndc_api::claims::{self as pb};
use ndc_core::claims::{
    self, BucketSpec, Claim, ClaimKind, ClaimOp, ClaimRequest, ClaimSpec, DatabaseSpec,
    DeletionPolicy,
};
use ndc_core::domain::Actor;
use ndc_store::Response as StoreResponse;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::node::Node;
use crate::secrets::Secret;

pub(crate) struct ClaimsService {
    pub(crate) node: Arc<Node>,
}

pub(crate) fn claim_to_pb(c: &Claim, mod_revision: u64) -> pb::Claim {
    let spec = match &c.spec {
        ClaimSpec::Bucket(b) => pb::claim::Spec::Bucket(pb::BucketSpec {
            size_bytes: b.size_bytes,
            versioning: b.versioning,
            retention_days: b.retention_days.unwrap_or(0),
        }),
        ClaimSpec::Database(d) => pb::claim::Spec::Database(pb::DatabaseSpec {
            size_bytes: d.size_bytes,
            connection_limit: d.connection_limit,
        }),
    };
    pb::Claim {
        uid: c.uid.clone(),
        tenant: c.tenant.clone(),
        kind: c.kind().as_str().into(),
        name: c.name.clone(),
        spec: Some(spec),
        deletion_policy: c.deletion_policy.as_str().into(),
        generation: c.generation,
        created_revision: c.created_revision,
        created_at_ms: c.created_at_ms,
        created_by: c.created_by.clone(),
        credentials_generation: c.credentials.generation,
        deleting: c.deletion.is_some(),
        purge: c.deletion.as_ref().is_some_and(|d| d.purge),
        external_name: c.external_name(),
        phase: c.status.phase.as_str().into(),
        ready: c.converged(),
        conditions: c
            .status
            .conditions
            .iter()
            .map(|k| pb::Condition {
                r#type: k.type_.clone(),
                status: k.status,
                reason: k.reason.clone(),
                message: k.message.clone(),
                at_ms: k.at_ms,
            })
            .collect(),
        endpoint: c.status.endpoint.clone().unwrap_or_default(),
        observed_generation: c.status.observed_generation,
        observed_credentials: c.status.observed_credentials,
        backup: c.status.backup.clone().unwrap_or_default(),
        mod_revision,
    }
}

fn claim_response(claim: &Claim, revision: u64) -> Response<pb::ClaimResponse> {
    Response::new(pb::ClaimResponse {
        claim: Some(claim_to_pb(claim, revision)),
        revision,
    })
}

fn spec_from_pb(spec: Option<pb::create_claim_request::Spec>) -> Result<ClaimSpec, Status> {
    let spec = match spec {
        Some(pb::create_claim_request::Spec::Bucket(b)) => ClaimSpec::Bucket(BucketSpec {
            size_bytes: b.size_bytes,
            versioning: b.versioning,
            retention_days: (b.retention_days > 0).then_some(b.retention_days),
        }),
        Some(pb::create_claim_request::Spec::Database(d)) => ClaimSpec::Database(DatabaseSpec {
            size_bytes: d.size_bytes,
            connection_limit: d.connection_limit,
        }),
        None => {
            return Err(Status::invalid_argument(
                "the request has no spec: give a bucket or a database",
            ))
        }
    };
    claims::validate_spec(&spec).map_err(Status::invalid_argument)?;
    Ok(spec)
}

fn policy_from_pb(s: &str) -> Result<DeletionPolicy, Status> {
    match s {
        "" => Ok(DeletionPolicy::default()),
        s => DeletionPolicy::parse(s).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown deletion policy {s:?}: use retain or delete"
            ))
        }),
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl ClaimsService {
    fn key(&self) -> Result<&crate::secrets::SecretsKey, Status> {
        self.node.secrets.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "this server has no secrets key (ndc server --secrets-key-file), so it cannot hold credentials: claims are refused",
            )
        })
    }

    async fn propose(
        &self,
        actor: Actor,
        op: ClaimOp,
        request_id: Option<String>,
    ) -> Result<(Claim, u64), Status> {
        let req = ClaimRequest {
            actor,
            at_ms: crate::node::now_ms(),
            op,
        };
        match self
            .node
            .write(crate::node::once(
                request_id,
                ndc_store::Command::Claim(Box::new(req)),
            ))
            .await?
        {
            StoreResponse::Claim {
                revision, claim, ..
            } => Ok((*claim, revision)),
            StoreResponse::Rejected(r) => Err(status::rejected(r)),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    /// Finds a claim by uid, or by tenant (or an old id of it), kind and
    /// name, and checks that the caller may read it.
    fn find(&self, actor: &Actor, r: &pb::ClaimRef) -> Result<(Claim, u64), Status> {
        let reader = &self.node.reader;
        let (claim, revision) = if !r.uid.is_empty() {
            let (c, rev) = reader.claim(&r.uid).map_err(status::store)?;
            let c = c.ok_or_else(|| Status::not_found(format!("claim {} not found", r.uid)))?;
            (c, rev)
        } else {
            let kind = ClaimKind::parse(&r.kind).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "unknown claim kind {:?}: use bucket or database",
                    r.kind
                ))
            })?;
            if r.tenant.is_empty() || r.name.is_empty() {
                return Err(Status::invalid_argument(
                    "name a claim by its uid, or by tenant and name",
                ));
            }
            let uids = reader
                .with_registry(|reg| {
                    reg.find(&r.tenant)
                        .map(|t| t.claims.iter().cloned().collect::<Vec<_>>())
                        .map_err(|e| status::core(&e))
                })
                .map_err(status::store)??;
            let mut found = Vec::new();
            for uid in uids {
                let (c, rev) = reader.claim(&uid).map_err(status::store)?;
                if let Some(c) = c.filter(|c| c.kind() == kind && c.name == r.name) {
                    found.push((c, rev));
                }
            }
            // A merge can bring two claims of one name into a tenant.
            if found.len() > 1 {
                let uids: Vec<&str> = found.iter().map(|(c, _)| c.uid.as_str()).collect();
                return Err(Status::failed_precondition(format!(
                    "tenant {} has {} {kind}s named {} (after a merge): name one by --uid: {}",
                    r.tenant,
                    found.len(),
                    r.name,
                    uids.join(", ")
                )));
            }
            found.pop().ok_or_else(|| {
                Status::not_found(format!(
                    "tenant {} has no {kind} named {}",
                    r.tenant, r.name
                ))
            })?
        };
        let visible = reader
            .with_registry(|reg| actor.can_read(reg, &claim.tenant))
            .map_err(status::store)?;
        if !visible {
            return Err(Status::permission_denied(format!(
                "{} may not read the claims of tenant {}: it is outside the caller's tenants",
                actor.name, claim.tenant
            )));
        }
        Ok((claim, revision))
    }

    fn new_secret(kind: ClaimKind) -> Result<Secret, Status> {
        Ok(match kind {
            ClaimKind::Bucket => {
                let c = ndc_storage::generate_s3_credentials().map_err(internal)?;
                Secret::S3 {
                    access_key_id: c.access_key_id,
                    secret_access_key: c.secret_access_key,
                }
            }
            ClaimKind::Database => Secret::Password {
                password: ndc_storage::generate_password().map_err(internal)?,
            },
        })
    }
}

#[tonic::async_trait]
impl Claims for ClaimsService {
    type WatchStream = watch::Watch<pb::ClaimEvents>;

    #[instrument(skip_all, fields(from = request.get_ref().start_revision))]
    async fn watch(
        &self,
        request: Request<pb::WatchClaimsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let actor = self.node.auth.actor(request.metadata())?;
        watch::require_reads_every_tenant(&actor, "watch claims")?;
        let stream = watch::open(
            self.node.reader.clone(),
            request.into_inner().start_revision,
            |revision| pb::ClaimEvents {
                events: vec![],
                revision,
            },
            |revision, events| {
                let mut out = Vec::new();
                for e in events {
                    if !e.key.starts_with(keys::CLAIMS_PREFIX) {
                        continue;
                    }
                    let claim: Claim = watch::decode(e)?;
                    let kind = match e.kind {
                        EventKind::Put => pb::claim_event::Kind::Put,
                        EventKind::Delete => pb::claim_event::Kind::Delete,
                    };
                    out.push(pb::ClaimEvent {
                        kind: kind as i32,
                        claim: Some(claim_to_pb(&claim, e.object.mod_revision)),
                    });
                }
                Ok((!out.is_empty()).then_some(pb::ClaimEvents {
                    events: out,
                    revision,
                }))
            },
        )?;
        Ok(Response::new(stream))
    }

    #[instrument(skip_all, fields(tenant = %request.get_ref().tenant, name = %request.get_ref().name))]
    async fn create(
        &self,
        request: Request<pb::CreateClaimRequest>,
    ) -> Result<Response<pb::ClaimResponse>, Status> {
        let actor = self.node.auth.actor(request.metadata())?;
        let rid = crate::node::request_id(request.metadata())?;
        let r = request.into_inner();
        claims::validate_name(&r.name).map_err(Status::invalid_argument)?;
        let spec = spec_from_pb(r.spec)?;
        let deletion_policy = policy_from_pb(&r.deletion_policy)?;
        // What the object store cannot do is refused now, not after the
        // quota was taken.
        if let (ClaimSpec::Bucket(b), Some(objects)) = (&spec, &self.node.provisioning.objects) {
            let f = objects.features();
            let missing = if b.versioning && !f.versioning {
                Some("versioning")
            } else if b.retention_days.is_some() && !f.object_lock {
                Some("retention (object lock)")
            } else {
                None
            };
            if let Some(feature) = missing {
                return Err(Status::invalid_argument(format!(
                    "the object store ({}) does not support {feature}; ask for a bucket without it",
                    objects.product()
                )));
            }
        }
        let key = self.key()?;
        let uid = crate::secrets::generate_uid();
        let credentials = key
            .seal(&uid, 1, &Self::new_secret(spec.kind())?)
            .map_err(internal)?;
        let (claim, revision) = self
            .propose(
                actor,
                ClaimOp::Create {
                    uid,
                    tenant: r.tenant,
                    name: r.name,
                    spec,
                    deletion_policy,
                    credentials,
                },
                rid,
            )
            .await?;
        Ok(claim_response(&claim, revision))
    }

    async fn get(
        &self,
        request: Request<pb::ClaimRef>,
    ) -> Result<Response<pb::ClaimResponse>, Status> {
        let actor = self.node.auth.actor(request.metadata())?;
        self.node.read_barrier(false).await?;
        let (claim, revision) = self.find(&actor, request.get_ref())?;
        let (_, mod_revision) = self
            .node
            .reader
            .get(&ndc_store::keys::claim_key(&claim.uid))
            .map(|(o, _)| ((), o.map(|o| o.mod_revision).unwrap_or(0)))
            .map_err(status::store)?;
        Ok(Response::new(pb::ClaimResponse {
            claim: Some(claim_to_pb(&claim, mod_revision)),
            revision,
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListClaimsRequest>,
    ) -> Result<Response<pb::ListClaimsResponse>, Status> {
        let actor = self.node.auth.actor(request.metadata())?;
        let r = request.into_inner();
        let kind = match r.kind.as_str() {
            "" => None,
            k => Some(ClaimKind::parse(k).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "unknown claim kind {k:?}: use bucket or database"
                ))
            })?),
        };
        self.node.read_barrier(false).await?;
        let reader = &self.node.reader;
        // The tenants asked for (and allowed), or None for every tenant.
        let scope = reader
            .with_registry(
                |reg| -> Result<Option<std::collections::BTreeSet<String>>, Status> {
                    if r.tenant.is_empty() {
                        // Every claim, or those of the tenants the caller may
                        // read: filtered while the page is filled, so a page
                        // is never short for claims the caller may not see.
                        // (Not worked out tenant by tenant, for every page,
                        // when the caller reads them all.)
                        if actor.reads_every_tenant() {
                            return Ok(None);
                        }
                        let readable: std::collections::BTreeSet<String> = reg
                            .iter()
                            .filter(|t| actor.can_read(reg, &t.id))
                            .map(|t| t.id.clone())
                            .collect();
                        return Ok((readable.len() < reg.len()).then_some(readable));
                    }
                    let t = reg.find(&r.tenant).map_err(|e| status::core(&e))?;
                    if !actor.can_read(reg, &t.id) {
                        return Err(Status::permission_denied(format!(
                            "{} may not read the claims of tenant {}: it is outside the caller's tenants",
                            actor.name, t.id
                        )));
                    }
                    Ok(Some(if r.subtree {
                        reg.subtree(&t.id).iter().map(|t| t.id.clone()).collect()
                    } else {
                        [t.id.clone()].into()
                    }))
                },
            )
            .map_err(internal)??;
        // A page: claims of the kind and scope asked, up to the limit; one
        // more found means the page is not the last.
        let limit = if r.limit == 0 {
            usize::MAX
        } else {
            r.limit as usize
        };
        let mut found: Vec<pb::Claim> = Vec::new();
        let mut more = false;
        let take = |c: Claim, rev: u64| {
            if kind.is_some_and(|k| k != c.kind())
                || scope.as_ref().is_some_and(|s| !s.contains(&c.tenant))
            {
                return true;
            }
            if found.len() == limit {
                more = true;
                return false;
            }
            found.push(claim_to_pb(&c, rev));
            true
        };
        // A tenant's claims are read by uid from the tenant in memory; only
        // a list of every claim reads them all. Claims are converted as they
        // are read, so a large list is held once, not once per step.
        let revision = match &scope {
            Some(ids) => reader.claims_of(ids, &r.start_after, take),
            None => reader.scan_claims(&r.start_after, take),
        }
        .map_err(status::store)?;
        let next_after = match (more, found.last()) {
            (true, Some(c)) => c.uid.clone(),
            _ => String::new(),
        };
        // `scope` holds only tenants the caller may read (or is None when it
        // may read every tenant), so `found` needs no filtering after.
        Ok(Response::new(pb::ListClaimsResponse {
            claims: found,
            revision,
            next_after,
        }))
    }

    #[instrument(skip_all)]
    async fn delete(
        &self,
        request: Request<pb::DeleteClaimRequest>,
    ) -> Result<Response<pb::ClaimResponse>, Status> {
        let actor = self.node.auth.actor(request.metadata())?;
        let rid = crate::node::request_id(request.metadata())?;
        let r = request.into_inner();
        let cref = r
            .claim
            .ok_or_else(|| Status::invalid_argument("the request names no claim"))?;
        self.node.read_barrier(false).await?;
        let (claim, _) = self.find(&actor, &cref)?;
        // A non-empty bucket under the delete policy is refused at once when
        // this server can look; the provisioner checks again before it acts.
        if claim.kind() == ClaimKind::Bucket
            && claim.deletion_policy == DeletionPolicy::Delete
            && !r.purge
        {
            if let Some(objects) = &self.node.provisioning.objects {
                let name = claim.external_name();
                let empty = match objects.is_empty(&name).await {
                    Ok(e) => e,
                    // Never created: nothing to lose.
                    Err(_) if !objects.bucket_exists(&name).await.unwrap_or(true) => true,
                    Err(e) => return Err(Status::unavailable(e.to_string())),
                };
                if !empty {
                    return Err(Status::failed_precondition(format!(
                        "bucket {} of tenant {} is not empty; nothing was deleted: delete again with --purge to delete its objects too, or change nothing to keep it",
                        claim.name, claim.tenant
                    )));
                }
            }
        }
        let (claim, revision) = self
            .propose(
                actor,
                ClaimOp::Delete {
                    uid: claim.uid,
                    purge: r.purge,
                },
                rid,
            )
            .await?;
        Ok(claim_response(&claim, revision))
    }

    #[instrument(skip_all)]
    async fn rotate(
        &self,
        request: Request<pb::ClaimRef>,
    ) -> Result<Response<pb::ClaimResponse>, Status> {
        let actor = self.node.auth.actor(request.metadata())?;
        let rid = crate::node::request_id(request.metadata())?;
        let key = self.key()?;
        self.node.read_barrier(false).await?;
        let (claim, _) = self.find(&actor, request.get_ref())?;
        let credentials = key
            .seal(
                &claim.uid,
                claim.credentials.generation + 1,
                &Self::new_secret(claim.kind())?,
            )
            .map_err(internal)?;
        let (claim, revision) = self
            .propose(
                actor,
                ClaimOp::Rotate {
                    uid: claim.uid,
                    credentials,
                },
                rid,
            )
            .await?;
        Ok(claim_response(&claim, revision))
    }

    async fn credentials(
        &self,
        request: Request<pb::ClaimRef>,
    ) -> Result<Response<pb::CredentialsResponse>, Status> {
        let actor = self.node.auth.actor(request.metadata())?;
        let key = self.key()?;
        self.node.read_barrier(false).await?;
        let (claim, _) = self.find(&actor, request.get_ref())?;
        let allowed = self
            .node
            .reader
            .with_registry(|reg| claims::may_see_credentials(reg, &actor, &claim.tenant))
            .map_err(status::store)?;
        if !allowed {
            return Err(Status::permission_denied(format!(
                "{} may not see the credentials of tenant {}: only its tenant-admins (or those above) and dc-operator may",
                actor.name, claim.tenant
            )));
        }
        let secret = key.open(&claim.uid, &claim.credentials).map_err(internal)?;
        let mut values = std::collections::HashMap::new();
        let endpoint = claim.status.endpoint.clone().unwrap_or_default();
        match secret {
            Secret::S3 {
                access_key_id,
                secret_access_key,
            } => {
                values.insert("endpoint".into(), endpoint);
                values.insert(
                    "region".into(),
                    claim.status.region.clone().unwrap_or_default(),
                );
                values.insert("bucket".into(), claim.external_name());
                values.insert("access_key_id".into(), access_key_id);
                values.insert("secret_access_key".into(), secret_access_key);
            }
            Secret::Password { password } => {
                let (host, port) = endpoint
                    .rsplit_once(':')
                    .map(|(h, p)| (h.to_string(), p.to_string()))
                    .unwrap_or_default();
                values.insert("host".into(), host);
                values.insert("port".into(), port);
                values.insert("database".into(), claim.external_name());
                values.insert("user".into(), claim.external_name());
                values.insert("password".into(), password);
            }
        }
        Ok(Response::new(pb::CredentialsResponse {
            uid: claim.uid.clone(),
            kind: claim.kind().as_str().into(),
            generation: claim.credentials.generation,
            values,
            in_force: claim.status.observed_credentials == claim.credentials.generation
                && claim.status.phase == claims::Phase::Ready,
        }))
    }
}
