//! The set of tenants with its indexes, and the checks that need more than
//! one tenant: hierarchy, uniqueness and quota conservation at every depth.
//!
//! Every check returns a [`Changeset`] without changing anything; the caller
//! (the replicated state machine) persists it and then calls
//! [`Registry::apply`]. So a refused request leaves no trace.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Level, Quota, Tenant, TenantPatch, TenantSpec, TenantState};
use crate::validate::{normalize_name, validate_labels, validate_security_level, validate_spec};

/// The tenants to write and the ids to remove, in that order of effect:
/// removals first, then upserts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Changeset {
    pub removals: Vec<String>,
    pub upserts: Vec<Tenant>,
    /// Ids of deleted tenants (and their old ids), never to be given again:
    /// an audit trail or a leftover role must not point at a new agency.
    #[serde(default)]
    pub retired_ids: Vec<String>,
}

/// All tenants, indexed by id, old id, administrative code and parent.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    tenants: BTreeMap<String, Tenant>,
    aliases: BTreeMap<String, String>,
    codes: BTreeMap<(Level, String), String>,
    children: BTreeMap<String, BTreeSet<String>>,
    retired: BTreeSet<String>,
}

/// Tenants being changed by one request, read through to the registry.
pub(crate) struct Draft<'a> {
    pub(crate) reg: &'a Registry,
    pub(crate) changed: BTreeMap<String, Tenant>,
    pub(crate) removed: BTreeSet<String>,
}

impl<'a> Draft<'a> {
    pub(crate) fn new(reg: &'a Registry) -> Self {
        Self {
            reg,
            changed: BTreeMap::new(),
            removed: BTreeSet::new(),
        }
    }

    /// The tenant as this draft sees it (changed, or as stored).
    pub(crate) fn get(&self, id: &str) -> Option<&Tenant> {
        if self.removed.contains(id) {
            return None;
        }
        self.changed.get(id).or_else(|| self.reg.tenants.get(id))
    }

    /// A mutable copy of a tenant in the draft.
    pub(crate) fn edit(&mut self, id: &str) -> Result<&mut Tenant> {
        if !self.changed.contains_key(id) {
            let t = self
                .get(id)
                .cloned()
                .ok_or_else(|| Error::NotFound { id: id.to_string() })?;
            self.changed.insert(id.to_string(), t);
        }
        self.changed
            .get_mut(id)
            .ok_or_else(|| Error::NotFound { id: id.to_string() })
    }

    pub(crate) fn remove(&mut self, id: &str) {
        self.changed.remove(id);
        self.removed.insert(id.to_string());
    }

    pub(crate) fn insert(&mut self, t: Tenant) {
        self.removed.remove(&t.id);
        self.changed.insert(t.id.clone(), t);
    }

    /// Moves `amount` of allocation off `from` and onto `to` (either may be
    /// absent for a top-level tenant).
    pub(crate) fn move_allocation(
        &mut self,
        from: Option<&str>,
        to: Option<&str>,
        amount: &Quota,
    ) -> Result<()> {
        if from == to {
            return Ok(());
        }
        if let Some(f) = from {
            let t = self.edit(f)?;
            t.allocated = t
                .allocated
                .checked_sub(amount)
                .ok_or_else(|| Error::QuotaOverflow { id: f.to_string() })?;
        }
        if let Some(p) = to {
            let t = self.edit(p)?;
            t.allocated = t
                .allocated
                .checked_add(amount)
                .ok_or_else(|| Error::QuotaOverflow { id: p.to_string() })?;
        }
        Ok(())
    }

    /// Refuses the draft if a changed tenant has committed more than its
    /// quota. `requested` is what was asked of it, for the message.
    pub(crate) fn check_room(&self, id: &str, requested: &Quota) -> Result<()> {
        let t = self
            .get(id)
            .ok_or_else(|| Error::NotFound { id: id.to_string() })?;
        let committed = t
            .committed()
            .ok_or_else(|| Error::QuotaOverflow { id: id.to_string() })?;
        if let Some(resource) = committed.first_excess(&t.quota) {
            let before = committed
                .get(resource)
                .saturating_sub(requested.get(resource));
            return Err(Error::QuotaExceedsParent {
                parent: id.to_string(),
                resource,
                requested: requested.get(resource),
                available: t.quota.get(resource).saturating_sub(before),
                quota: t.quota.get(resource),
                committed: before,
            });
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> Changeset {
        Changeset {
            removals: self.removed.into_iter().collect(),
            upserts: self.changed.into_values().collect(),
            retired_ids: Vec::new(),
        }
    }
}

impl Registry {
    /// Rebuilds a registry from stored tenants.
    pub fn from_tenants(tenants: impl IntoIterator<Item = Tenant>) -> Self {
        Self::from_parts(tenants, std::iter::empty())
    }

    /// Rebuilds a registry from stored tenants and the ids of deleted ones.
    pub fn from_parts(
        tenants: impl IntoIterator<Item = Tenant>,
        retired: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut r = Registry {
            retired: retired.into_iter().collect(),
            ..Registry::default()
        };
        for t in tenants {
            r.index(&t);
            r.tenants.insert(t.id.clone(), t);
        }
        r
    }

    fn index(&mut self, t: &Tenant) {
        for a in &t.aliases {
            self.aliases.insert(a.clone(), t.id.clone());
        }
        if let Some(c) = &t.admin_code {
            self.codes.insert((t.level, c.clone()), t.id.clone());
        }
        if let Some(p) = &t.parent {
            self.children
                .entry(p.clone())
                .or_default()
                .insert(t.id.clone());
        }
    }

    fn unindex(&mut self, t: &Tenant) {
        for a in &t.aliases {
            if self.aliases.get(a) == Some(&t.id) {
                self.aliases.remove(a);
            }
        }
        if let Some(c) = &t.admin_code {
            if self.codes.get(&(t.level, c.clone())) == Some(&t.id) {
                self.codes.remove(&(t.level, c.clone()));
            }
        }
        if let Some(p) = &t.parent {
            if let Some(set) = self.children.get_mut(p) {
                set.remove(&t.id);
                if set.is_empty() {
                    self.children.remove(p);
                }
            }
        }
    }

    /// Applies a changeset produced by one of the checks.
    pub fn apply(&mut self, cs: &Changeset) {
        self.retired.extend(cs.retired_ids.iter().cloned());
        for id in &cs.removals {
            if let Some(old) = self.tenants.remove(id) {
                self.unindex(&old);
            }
        }
        for t in &cs.upserts {
            if let Some(old) = self.tenants.remove(&t.id) {
                self.unindex(&old);
            }
            self.index(t);
            self.tenants.insert(t.id.clone(), t.clone());
        }
    }

    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Tenant> {
        self.tenants.values()
    }

    pub fn get(&self, id: &str) -> Option<&Tenant> {
        self.tenants.get(id)
    }

    /// The tenant with this id, or the one an old id now points to.
    pub fn resolve(&self, id_or_alias: &str) -> Option<&Tenant> {
        self.tenants.get(id_or_alias).or_else(|| {
            self.aliases
                .get(id_or_alias)
                .and_then(|id| self.tenants.get(id))
        })
    }

    /// Like [`Registry::resolve`], as a result.
    pub fn find(&self, id_or_alias: &str) -> Result<&Tenant> {
        self.resolve(id_or_alias).ok_or_else(|| Error::NotFound {
            id: id_or_alias.to_string(),
        })
    }

    /// Direct children, in id order.
    pub fn children(&self, id: &str) -> impl Iterator<Item = &Tenant> {
        self.children
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|c| self.tenants.get(c))
    }

    /// The tenant and everything below it, parents before children.
    pub fn subtree(&self, id: &str) -> Vec<&Tenant> {
        let mut out = Vec::new();
        let mut stack = vec![id.to_string()];
        while let Some(cur) = stack.pop() {
            if let Some(t) = self.tenants.get(&cur) {
                out.push(t);
                let mut kids: Vec<String> = self
                    .children
                    .get(&cur)
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect();
                kids.reverse();
                stack.extend(kids);
            }
        }
        out
    }

    /// Whether `ancestor` is `id` or above it.
    pub fn is_ancestor_or_self(&self, ancestor: &str, id: &str) -> bool {
        let mut cur = Some(id.to_string());
        let mut steps = 0;
        while let Some(c) = cur {
            if c == ancestor {
                return true;
            }
            steps += 1;
            if steps > self.tenants.len() + 1 {
                return false;
            }
            cur = self.tenants.get(&c).and_then(|t| t.parent.clone());
        }
        false
    }

    /// Refuses an id that is taken, as an id or as an old id.
    pub(crate) fn check_id_free(&self, id: &str) -> Result<()> {
        if self.tenants.contains_key(id) {
            return Err(Error::AlreadyExists { id: id.to_string() });
        }
        if let Some(target) = self.aliases.get(id) {
            return Err(Error::AliasTaken {
                id: id.to_string(),
                target: target.clone(),
            });
        }
        if self.retired.contains(id) {
            return Err(Error::IdRetired { id: id.to_string() });
        }
        Ok(())
    }

    /// Whether `id` belonged to a tenant that was deleted.
    pub fn is_retired_id(&self, id: &str) -> bool {
        self.retired.contains(id)
    }

    /// Refuses a code held by another tenant of the level, other than those
    /// in `leaving` (tenants that the same request removes).
    pub(crate) fn check_code_free(
        &self,
        level: Level,
        code: Option<&str>,
        leaving: &BTreeSet<String>,
    ) -> Result<()> {
        if let Some(c) = code {
            if let Some(by) = self.codes.get(&(level, c.to_string())) {
                if !leaving.contains(by) {
                    return Err(Error::CodeTaken {
                        code: c.to_string(),
                        level,
                        by: by.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The parent rules for a tenant of `level` under `parent`.
    pub(crate) fn check_parent(
        &self,
        draft: &Draft<'_>,
        level: Level,
        parent: Option<&str>,
    ) -> Result<()> {
        match (level.parent_level(), parent) {
            (Some(expected), None) => Err(Error::ParentMissing { level, expected }),
            (_, None) => Ok(()),
            (expected, Some(p)) => {
                let pt = draft.get(p).ok_or_else(|| Error::ParentNotFound {
                    parent: p.to_string(),
                })?;
                // A central body may sit under another central body.
                let expected = expected.unwrap_or(Level::Central);
                if pt.level != expected {
                    return Err(Error::ParentWrongLevel {
                        parent: p.to_string(),
                        found: pt.level,
                        level,
                        expected,
                    });
                }
                if pt.state != TenantState::Active {
                    return Err(Error::ParentInactive {
                        parent: p.to_string(),
                        state: pt.state,
                    });
                }
                Ok(())
            }
        }
    }

    /// Admits a new tenant.
    pub fn check_create(&self, spec: TenantSpec) -> Result<Changeset> {
        let spec = validate_spec(spec)?;
        self.check_id_free(&spec.id)?;
        self.check_code_free(spec.level, spec.admin_code.as_deref(), &BTreeSet::new())?;
        let mut draft = Draft::new(self);
        // A parent given by an old id means its current tenant.
        let parent = match &spec.parent {
            Some(p) => Some(
                self.find(p)
                    .map_err(|_| Error::ParentNotFound { parent: p.clone() })?
                    .id
                    .clone(),
            ),
            None => None,
        };
        self.check_parent(&draft, spec.level, parent.as_deref())?;
        let mut tenant = Tenant::from_spec(spec);
        tenant.parent = parent.clone();
        let quota = tenant.quota;
        draft.insert(tenant);
        if let Some(p) = &parent {
            draft.move_allocation(None, Some(p), &quota)?;
            draft.check_room(p, &quota)?;
        }
        Ok(draft.finish())
    }

    /// Changes a tenant's name, quota, labels, state, protection or
    /// security level.
    pub fn check_update(&self, id: &str, patch: TenantPatch) -> Result<Changeset> {
        let current = self.find(id)?.clone();
        let mut draft = Draft::new(self);
        let mut t = current.clone();
        if let Some(name) = &patch.display_name {
            t.display_name = normalize_name(name)?;
        }
        if let Some(labels) = patch.labels {
            validate_labels(&labels)?;
            t.labels = labels;
        }
        if let Some(level) = patch.security_level {
            validate_security_level(level)?;
            t.security_level = level;
        }
        if let Some(p) = patch.deletion_protection {
            t.deletion_protection = p;
        }
        if let Some(state) = patch.state {
            if state == TenantState::Active && t.state != TenantState::Active {
                if let Some(p) = &t.parent {
                    let pt = self.find(p)?;
                    if pt.state != TenantState::Active {
                        return Err(Error::ParentInactive {
                            parent: p.clone(),
                            state: pt.state,
                        });
                    }
                }
            }
            if state == TenantState::Retired {
                let count = self.children(&t.id).count();
                if count > 0 {
                    return Err(Error::HasChildren {
                        id: t.id.clone(),
                        count,
                    });
                }
            }
            t.state = state;
        }
        let new_quota = patch.quota.unwrap_or(t.quota);
        let committed = t
            .committed()
            .ok_or_else(|| Error::QuotaOverflow { id: t.id.clone() })?;
        if let Some(resource) = committed.first_excess(&new_quota) {
            return Err(Error::QuotaBelowCommitted {
                id: t.id.clone(),
                resource,
                quota: new_quota.get(resource),
                committed: committed.get(resource),
            });
        }
        let old_quota = t.quota;
        t.quota = new_quota;
        draft.insert(t.clone());
        if let Some(p) = &t.parent {
            let pt = draft.edit(p)?;
            let allocated = pt
                .allocated
                .checked_sub(&old_quota)
                .and_then(|a| a.checked_add(&new_quota))
                .ok_or_else(|| Error::QuotaOverflow { id: p.clone() })?;
            pt.allocated = allocated;
            let grow = new_quota.checked_sub(&old_quota).unwrap_or_default();
            draft.check_room(p, &grow)?;
        }
        Ok(draft.finish())
    }

    /// Removes a tenant that has no children, claims or subscriptions and
    /// no deletion protection.
    pub fn check_delete(&self, id: &str) -> Result<Changeset> {
        let t = self.find(id)?;
        if t.id != id {
            return Err(Error::UseCurrentId {
                id: id.to_string(),
                current: t.id.clone(),
            });
        }
        if t.deletion_protection {
            return Err(Error::Protected { id: id.to_string() });
        }
        let count = self.children(id).count();
        if count > 0 {
            return Err(Error::HasChildren {
                id: id.to_string(),
                count,
            });
        }
        let held = t.claims.len() + t.subscriptions.len();
        if held > 0 {
            return Err(Error::HasClaims {
                id: id.to_string(),
                count: held,
            });
        }
        let mut draft = Draft::new(self);
        let quota = t.quota;
        let parent = t.parent.clone();
        let retired: Vec<String> = std::iter::once(id.to_string())
            .chain(t.aliases.iter().cloned())
            .collect();
        draft.remove(id);
        draft.move_allocation(parent.as_deref(), None, &quota)?;
        let mut cs = draft.finish();
        cs.retired_ids = retired;
        Ok(cs)
    }

    /// Records a claim and what it uses against the tenant's own quota.
    pub fn check_add_claim(&self, tenant: &str, claim: &str, usage: &Quota) -> Result<Changeset> {
        let t = self.find(tenant)?;
        if t.state != TenantState::Active {
            return Err(Error::NotActive {
                id: t.id.clone(),
                state: t.state,
            });
        }
        if t.claims.contains(claim) {
            return Err(Error::ClaimExists {
                tenant: t.id.clone(),
                claim: claim.to_string(),
            });
        }
        let mut draft = Draft::new(self);
        let id = t.id.clone();
        let e = draft.edit(&id)?;
        e.used = e
            .used
            .checked_add(usage)
            .ok_or_else(|| Error::QuotaOverflow { id: id.clone() })?;
        e.claims.insert(claim.to_string());
        let e = e.clone();
        let committed = e
            .committed()
            .ok_or_else(|| Error::QuotaOverflow { id: id.clone() })?;
        if let Some(resource) = committed.first_excess(&e.quota) {
            let before = committed.get(resource) - usage.get(resource);
            return Err(Error::QuotaExceeded {
                tenant: id,
                resource,
                requested: usage.get(resource),
                available: e.quota.get(resource).saturating_sub(before),
                quota: e.quota.get(resource),
            });
        }
        Ok(draft.finish())
    }

    /// Releases a claim and what it used.
    pub fn check_remove_claim(
        &self,
        tenant: &str,
        claim: &str,
        usage: &Quota,
    ) -> Result<Changeset> {
        let t = self.find(tenant)?;
        if !t.claims.contains(claim) {
            return Err(Error::ClaimNotFound {
                tenant: t.id.clone(),
                claim: claim.to_string(),
            });
        }
        let mut draft = Draft::new(self);
        let id = t.id.clone();
        let e = draft.edit(&id)?;
        e.used = e
            .used
            .checked_sub(usage)
            .ok_or_else(|| Error::QuotaOverflow { id: id.clone() })?;
        e.claims.remove(claim);
        Ok(draft.finish())
    }

    /// Checks every rule over the whole registry; the first broken one is
    /// returned. Used by tests and by audits of a stored state.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        let mut codes = BTreeSet::new();
        for t in self.tenants.values() {
            match (&t.parent, t.level.parent_level()) {
                (None, Some(_)) => return Err(format!("{} ({}) has no parent", t.id, t.level)),
                (Some(p), _) => {
                    let pt = self
                        .tenants
                        .get(p)
                        .ok_or_else(|| format!("{}'s parent {p} is missing", t.id))?;
                    let want = t.level.parent_level().unwrap_or(Level::Central);
                    if pt.level != want {
                        return Err(format!("{}'s parent {p} has level {}", t.id, pt.level));
                    }
                    if self.is_ancestor_or_self(&t.id, p) {
                        return Err(format!("{} is in a cycle", t.id));
                    }
                }
                (None, None) => {}
            }
            let mut sum = Quota::default();
            for c in self.children(&t.id) {
                sum = sum.checked_add(&c.quota).ok_or("overflow")?;
            }
            if sum != t.allocated {
                return Err(format!(
                    "{}: allocated {:?} but children hold {:?}",
                    t.id, t.allocated, sum
                ));
            }
            let committed = t.committed().ok_or("overflow")?;
            if let Some(r) = committed.first_excess(&t.quota) {
                return Err(format!("{}: committed {} above quota", t.id, r));
            }
            if let Some(c) = &t.admin_code {
                if !codes.insert((t.level, c.clone())) {
                    return Err(format!("code {c} used twice at level {}", t.level));
                }
            }
            for a in &t.aliases {
                if self.tenants.contains_key(a) {
                    return Err(format!("alias {a} of {} is also a tenant id", t.id));
                }
            }
        }
        for (a, target) in &self.aliases {
            if !self.tenants.contains_key(target) {
                return Err(format!("alias {a} points to missing {target}"));
            }
        }
        Ok(())
    }
}
