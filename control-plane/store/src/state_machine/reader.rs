//! Reads for the API: objects, pages, watch history, the audit chain.

use crate::keys;
use rocksdb::{Direction, IteratorMode};

use ndc_core::Registry;

use super::*;
use crate::codec::decode;
use crate::db::{be, cf, from_be, CF_EVENTS, CF_KV, CF_SM};
use ndc_core::claims::Claim;
use ndc_core::domain::{AuditHead, AuditRecord};

use crate::audit::{verify_chain, VerifyReport};
use crate::error::{Error, Result};

/// One page of a prefix listing.
#[derive(Debug, Clone)]
pub struct ListPage {
    pub items: Vec<(String, StoredObject)>,
    /// The store revision the page was read at.
    pub revision: u64,
    /// Set when more keys remain: pass it back as `start_after`.
    pub more: bool,
}

impl StoreReader {
    /// Refuses a read while a snapshot install is under way on this node:
    /// its objects are then part old, part new.
    fn settled(&self, snap: &rocksdb::Snapshot<'_>) -> Result<()> {
        if snap
            .get_cf(cf(&self.db, CF_SM), super::snapshot::KEY_INSTALLING)?
            .is_some()
        {
            return Err(Error::Installing);
        }
        Ok(())
    }

    /// The store's revision as `snap` sees it.
    fn revision_at(&self, snap: &rocksdb::Snapshot<'_>) -> Result<u64> {
        Ok(match snap.get_cf(cf(&self.db, CF_SM), KEY_REVISION)? {
            Some(b) => decode("revision", &b)?,
            None => 0,
        })
    }

    /// Runs `f` on the tenants as last applied.
    pub fn with_registry<T>(&self, f: impl FnOnce(&Registry) -> T) -> Result<T> {
        let d = self
            .domain
            .read()
            .map_err(|_| Error::Join("domain state lock poisoned".into()))?;
        Ok(f(&d.registry))
    }

    /// Audit records from `from_seq` on, at most `limit` (0: all).
    pub fn audit_records(&self, from_seq: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let start = keys::audit_key(from_seq.max(1));
        let page = self.list(keys::AUDIT_PREFIX, None, 0)?;
        let mut out = Vec::new();
        for (k, o) in page.items {
            if k < start {
                continue;
            }
            if limit > 0 && out.len() == limit {
                break;
            }
            out.push(serde_json::from_slice(&o.value).map_err(|e| Error::Decode {
                what: "audit record",
                reason: e.to_string(),
            })?);
        }
        Ok(out)
    }

    /// Checks the whole audit chain as this node stores it.
    pub fn verify_audit(&self) -> Result<VerifyReport> {
        let page = self.list(keys::AUDIT_PREFIX, None, 0)?;
        let records: Vec<(String, Vec<u8>)> =
            page.items.into_iter().map(|(k, o)| (k, o.value)).collect();
        let (head, _) = self.get(keys::AUDIT_HEAD_KEY)?;
        let head: Option<AuditHead> = match head {
            Some(o) => Some(serde_json::from_slice(&o.value).map_err(|e| Error::Decode {
                what: "audit head",
                reason: e.to_string(),
            })?),
            None => None,
        };
        Ok(verify_chain(&records, head.as_ref()))
    }

    /// One claim by uid, with the revision it was read at.
    pub fn claim(&self, uid: &str) -> Result<(Option<Claim>, u64)> {
        let (o, revision) = self.get(&keys::claim_key(uid))?;
        Ok((o.map(|o| decode_claim(&o.value)).transpose()?, revision))
    }

    /// About how many objects the store holds (RocksDB's estimate: cheap,
    /// and within a few percent once the data has been compacted).
    pub fn estimated_objects(&self) -> Result<u64> {
        Ok(self
            .db
            .property_int_value_cf(cf(&self.db, CF_KV), "rocksdb.estimate-num-keys")?
            .unwrap_or(0))
    }

    /// The claims of the tenants `ids` whose uid sorts after `start_after`,
    /// in uid order, read at one revision: `take` is called on each claim
    /// and its mod revision, and returns false to stop. The uids come from
    /// the tenants in memory, so only those claims are read, however many
    /// others there are. Returns the revision.
    pub fn claims_of(
        &self,
        ids: &std::collections::BTreeSet<String>,
        start_after: &str,
        mut take: impl FnMut(Claim, u64) -> bool,
    ) -> Result<u64> {
        let (uids, snap) = {
            // Under the read lock, the tenants and the objects agree: apply
            // holds the write lock across both.
            let d = self
                .domain
                .read()
                .map_err(|_| Error::Join("domain state lock poisoned".into()))?;
            let mut uids: Vec<String> = ids
                .iter()
                .filter_map(|id| d.registry.get(id))
                .flat_map(|t| t.claims.iter())
                .filter(|u| u.as_str() > start_after)
                .cloned()
                .collect();
            uids.sort();
            (uids, self.db.snapshot())
        };
        self.settled(&snap)?;
        let revision = self.revision_at(&snap)?;
        let kv = cf(&self.db, CF_KV);
        for chunk in uids.chunks(1024) {
            let keys: Vec<String> = chunk.iter().map(|u| keys::claim_key(u)).collect();
            for got in snap.multi_get_cf(keys.iter().map(|k| (kv, k.as_bytes()))) {
                if let Some(bytes) = got? {
                    let o: StoredObject = decode("object", &bytes)?;
                    if !take(decode_claim(&o.value)?, o.mod_revision) {
                        return Ok(revision);
                    }
                }
            }
        }
        Ok(revision)
    }

    /// Every claim whose uid sorts after `start_after`, in uid order, read
    /// at one revision and one at a time: `take` is called on each claim and
    /// its mod revision, and returns false to stop. Returns the revision.
    pub fn scan_claims(
        &self,
        start_after: &str,
        mut take: impl FnMut(Claim, u64) -> bool,
    ) -> Result<u64> {
        let snap = self.db.snapshot();
        self.settled(&snap)?;
        let revision = self.revision_at(&snap)?;
        let prefix = keys::CLAIMS_PREFIX.as_bytes();
        let after = keys::claim_key(start_after);
        let from = if start_after.is_empty() {
            prefix
        } else {
            after.as_bytes()
        };
        for item in snap.iterator_cf(
            cf(&self.db, CF_KV),
            IteratorMode::From(from, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            if !start_after.is_empty() && k.as_ref() == after.as_bytes() {
                continue;
            }
            let o: StoredObject = decode("object", &v)?;
            if !take(decode_claim(&o.value)?, o.mod_revision) {
                break;
            }
        }
        Ok(revision)
    }

    /// The current and the compacted revision.
    pub fn revisions(&self) -> Result<(u64, u64)> {
        let r = read_revisions(&self.db)?;
        Ok((r.current, r.compacted))
    }

    pub fn get(&self, key: &str) -> Result<(Option<StoredObject>, u64)> {
        let snap = self.db.snapshot();
        self.settled(&snap)?;
        let obj = match snap.get_cf(cf(&self.db, CF_KV), key.as_bytes())? {
            Some(bytes) => Some(decode("object", &bytes)?),
            None => None,
        };
        let revision = self.revision_at(&snap)?;
        Ok((obj, revision))
    }

    /// Objects whose key starts with `prefix`, after `start_after` if given,
    /// at most `limit` (0: no limit), all read at one revision.
    pub fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<ListPage> {
        let snap = self.db.snapshot();
        self.settled(&snap)?;
        let revision = self.revision_at(&snap)?;
        let start = match start_after {
            Some(s) if s.as_bytes() >= prefix.as_bytes() => s.as_bytes().to_vec(),
            _ => prefix.as_bytes().to_vec(),
        };
        let mut items = Vec::new();
        let mut more = false;
        for item in snap.iterator_cf(
            cf(&self.db, CF_KV),
            IteratorMode::From(&start, Direction::Forward),
        ) {
            let (k, v) = item?;
            if !k.starts_with(prefix.as_bytes()) {
                break;
            }
            if start_after.is_some_and(|s| k.as_ref() == s.as_bytes()) {
                continue;
            }
            if limit > 0 && items.len() == limit {
                more = true;
                break;
            }
            let key = String::from_utf8(k.to_vec()).map_err(|e| Error::Decode {
                what: "object key",
                reason: e.to_string(),
            })?;
            items.push((key, decode("object", &v)?));
        }
        Ok(ListPage {
            items,
            revision,
            more,
        })
    }

    /// Live notices from now on. Subscribe before reading history so nothing
    /// falls between the two.
    pub fn subscribe(&self) -> broadcast::Receiver<WatchBatch> {
        self.notices.subscribe()
    }

    /// The recorded changes at revisions `from..=to`, oldest first, at most
    /// `max_revisions` of them. Fails with [`Error::Compacted`] when `from` is
    /// at or below the compacted revision.
    pub fn history(
        &self,
        from: u64,
        to: u64,
        max_revisions: usize,
    ) -> Result<Vec<(u64, Vec<Event>)>> {
        let snap = self.db.snapshot();
        self.settled(&snap)?;
        let compacted: u64 = match snap.get_cf(cf(&self.db, CF_SM), KEY_COMPACTED)? {
            Some(b) => decode("compacted revision", &b)?,
            None => 0,
        };
        if from <= compacted {
            return Err(Error::Compacted {
                requested: from,
                oldest: compacted + 1,
            });
        }
        let mut out = Vec::new();
        for item in snap.iterator_cf(
            cf(&self.db, CF_EVENTS),
            IteratorMode::From(&be(from), Direction::Forward),
        ) {
            let (k, v) = item?;
            let rev = from_be(&k)?;
            if rev > to || out.len() >= max_revisions {
                break;
            }
            out.push((rev, decode("events", &v)?));
        }
        Ok(out)
    }
}

fn decode_claim(bytes: &[u8]) -> Result<Claim> {
    serde_json::from_slice(bytes).map_err(|e| Error::Decode {
        what: "claim",
        reason: e.to_string(),
    })
}
