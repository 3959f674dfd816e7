//! Reorganisation: merge, re-parent and rename, planned before they are
//! applied. A plan lists every object that moves and every quota that
//! changes; applying it loses nothing and keeps old ids resolvable.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Level, Quota, Tenant, TenantSpec, TenantState};
use crate::registry::{Changeset, Draft, Registry};
use crate::validate::validate_spec;

/// Where merged tenants go.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MergeTarget {
    /// Into a tenant that exists.
    Existing(String),
    /// Into a tenant created by the merge (its quota is the sources' sum).
    New(TenantSpec),
}

/// A reorganisation of the administrative map.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Reorg {
    Merge {
        sources: Vec<String>,
        into: MergeTarget,
    },
    Reparent {
        tenant: String,
        parent: String,
    },
    Rename {
        from: String,
        to: String,
    },
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MoveKind {
    Child,
    Claim,
    Subscription,
    /// An old id that will resolve to the new place.
    Alias,
    /// The tenant itself (re-parented or renamed).
    Tenant,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub kind: MoveKind,
    pub id: String,
    pub from: String,
    pub to: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct QuotaChange {
    pub tenant: String,
    pub quota_before: Option<Quota>,
    pub quota_after: Option<Quota>,
    pub allocated_before: Option<Quota>,
    pub allocated_after: Option<Quota>,
}

/// What a reorganisation will do; `changeset` is what applying it writes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub summary: String,
    pub moves: Vec<Move>,
    pub quotas: Vec<QuotaChange>,
    pub changeset: Changeset,
}

impl Registry {
    /// Plans a reorganisation without changing anything.
    pub fn plan(&self, reorg: &Reorg) -> Result<Plan> {
        let mut moves = Vec::new();
        let (summary, changeset) = match reorg {
            Reorg::Merge { sources, into } => self.plan_merge(sources, into, &mut moves)?,
            Reorg::Reparent { tenant, parent } => self.plan_reparent(tenant, parent, &mut moves)?,
            Reorg::Rename { from, to } => self.plan_rename(from, to, &mut moves)?,
        };
        let mut quotas = Vec::new();
        let touched: BTreeSet<&String> = changeset
            .removals
            .iter()
            .chain(changeset.upserts.iter().map(|t| &t.id))
            .collect();
        for id in touched {
            let before = self.get(id);
            let after = changeset.upserts.iter().find(|t| &t.id == id);
            let (qb, qa) = (before.map(|t| t.quota), after.map(|t| t.quota));
            let (ab, aa) = (before.map(|t| t.allocated), after.map(|t| t.allocated));
            if qb != qa || ab != aa {
                quotas.push(QuotaChange {
                    tenant: id.clone(),
                    quota_before: qb,
                    quota_after: qa,
                    allocated_before: ab,
                    allocated_after: aa,
                });
            }
        }
        Ok(Plan {
            summary,
            moves,
            quotas,
            changeset,
        })
    }

    fn current(&self, id: &str) -> Result<&Tenant> {
        let t = self.find(id)?;
        if t.id != id {
            return Err(Error::UseCurrentId {
                id: id.to_string(),
                current: t.id.clone(),
            });
        }
        Ok(t)
    }

    /// Checks an existing merge target: not a source, of the sources'
    /// level, active, and not below a source. Its id.
    fn merge_into_existing(
        &self,
        id: &str,
        level: Level,
        seen: &BTreeSet<String>,
        src: &[Tenant],
    ) -> Result<String> {
        let t = self.current(id)?;
        if seen.contains(&t.id) {
            return Err(Error::MergeIntoSelf { id: t.id.clone() });
        }
        if t.level != level {
            return Err(Error::MergeLevel {
                id: t.id.clone(),
                found: t.level,
                level,
            });
        }
        if t.state != TenantState::Active {
            return Err(Error::NotActive {
                id: t.id.clone(),
                state: t.state,
            });
        }
        for s in src {
            if self.is_ancestor_or_self(&s.id, &t.id) {
                return Err(Error::Cycle {
                    id: s.id.clone(),
                    parent: t.id.clone(),
                });
            }
        }
        Ok(t.id.clone())
    }

    /// Checks a new merge target (a valid spec of the sources' level, no
    /// quota of its own, a free id and code, a parent outside the sources)
    /// and adds it to the draft. Its id.
    fn merge_into_new(
        &self,
        spec: &TenantSpec,
        level: Level,
        seen: &BTreeSet<String>,
        draft: &mut Draft,
    ) -> Result<String> {
        let spec = validate_spec(spec.clone())?;
        if !spec.quota.is_zero() {
            return Err(Error::MergeTargetQuota);
        }
        if spec.level != level {
            return Err(Error::MergeLevel {
                id: spec.id.clone(),
                found: spec.level,
                level,
            });
        }
        self.check_id_free(&spec.id)?;
        // The new tenant may take over a code of a tenant it absorbs.
        self.check_code_free(spec.level, spec.admin_code.as_deref(), seen)?;
        let parent = match &spec.parent {
            Some(p) => Some(
                self.find(p)
                    .map_err(|_| Error::ParentNotFound { parent: p.clone() })?
                    .id
                    .clone(),
            ),
            None => None,
        };
        if let Some(p) = &parent {
            if seen.contains(p) {
                return Err(Error::Cycle {
                    id: spec.id.clone(),
                    parent: p.clone(),
                });
            }
        }
        self.check_parent(draft, spec.level, parent.as_deref())?;
        let mut t = crate::model::Tenant::from_spec(spec);
        t.parent = parent;
        let id = t.id.clone();
        draft.insert(t);
        Ok(id)
    }

    fn plan_merge(
        &self,
        sources: &[String],
        into: &MergeTarget,
        moves: &mut Vec<Move>,
    ) -> Result<(String, Changeset)> {
        if sources.is_empty() {
            return Err(Error::MergeEmpty);
        }
        let mut seen = BTreeSet::new();
        let mut src: Vec<Tenant> = Vec::new();
        for s in sources {
            let t = self.current(s)?;
            if !seen.insert(t.id.clone()) {
                return Err(Error::MergeDuplicate { id: t.id.clone() });
            }
            src.push(t.clone());
        }
        let level = src[0].level;
        for t in &src {
            if t.level != level {
                return Err(Error::MergeLevel {
                    id: t.id.clone(),
                    found: t.level,
                    level,
                });
            }
        }
        let mut draft = Draft::new(self);
        let target_id = match into {
            MergeTarget::Existing(id) => self.merge_into_existing(id, level, &seen, &src)?,
            MergeTarget::New(spec) => self.merge_into_new(spec, level, &seen, &mut draft)?,
        };

        let mut added = Quota::default();
        for s in &src {
            added = added
                .checked_add(&s.quota)
                .ok_or_else(|| Error::QuotaOverflow {
                    id: target_id.clone(),
                })?;
            // The source's allocation leaves its parent...
            draft.move_allocation(s.parent.as_deref(), None, &s.quota)?;
            for c in self.children(&s.id) {
                moves.push(Move {
                    kind: MoveKind::Child,
                    id: c.id.clone(),
                    from: s.id.clone(),
                    to: target_id.clone(),
                });
                draft.edit(&c.id)?.parent = Some(target_id.clone());
            }
            for (kind, set) in [
                (MoveKind::Claim, &s.claims),
                (MoveKind::Subscription, &s.subscriptions),
            ] {
                for item in set {
                    moves.push(Move {
                        kind,
                        id: item.clone(),
                        from: s.id.clone(),
                        to: target_id.clone(),
                    });
                }
            }
            for old in std::iter::once(&s.id).chain(s.aliases.iter()) {
                moves.push(Move {
                    kind: MoveKind::Alias,
                    id: old.clone(),
                    from: s.id.clone(),
                    to: target_id.clone(),
                });
            }
            let t = draft.edit(&target_id)?;
            t.quota = t
                .quota
                .checked_add(&s.quota)
                .ok_or_else(|| Error::QuotaOverflow {
                    id: target_id.clone(),
                })?;
            t.allocated =
                t.allocated
                    .checked_add(&s.allocated)
                    .ok_or_else(|| Error::QuotaOverflow {
                        id: target_id.clone(),
                    })?;
            t.used = t
                .used
                .checked_add(&s.used)
                .ok_or_else(|| Error::QuotaOverflow {
                    id: target_id.clone(),
                })?;
            t.claims.extend(s.claims.iter().cloned());
            t.subscriptions.extend(s.subscriptions.iter().cloned());
            t.aliases.insert(s.id.clone());
            t.aliases.extend(s.aliases.iter().cloned());
            draft.remove(&s.id);
        }
        // ...and arrives at the target's parent.
        let target_parent = draft.get(&target_id).and_then(|t| t.parent.clone());
        draft.move_allocation(None, target_parent.as_deref(), &added)?;
        if let Some(p) = &target_parent {
            draft.check_room(p, &added)?;
        }
        let names: Vec<&str> = src.iter().map(|s| s.id.as_str()).collect();
        let summary = format!("merge {} into {target_id}", names.join(", "));
        Ok((summary, draft.finish()))
    }

    fn plan_reparent(
        &self,
        tenant: &str,
        parent: &str,
        moves: &mut Vec<Move>,
    ) -> Result<(String, Changeset)> {
        let t = self.current(tenant)?.clone();
        let p = self
            .find(parent)
            .map_err(|_| Error::ParentNotFound {
                parent: parent.to_string(),
            })?
            .id
            .clone();
        if t.parent.as_deref() == Some(p.as_str()) {
            return Err(Error::SameParent {
                tenant: t.id,
                id: p,
            });
        }
        if self.is_ancestor_or_self(&t.id, &p) {
            return Err(Error::Cycle {
                id: t.id,
                parent: p,
            });
        }
        let mut draft = Draft::new(self);
        self.check_parent(&draft, t.level, Some(&p))?;
        moves.push(Move {
            kind: MoveKind::Tenant,
            id: t.id.clone(),
            from: t.parent.clone().unwrap_or_else(|| "(top level)".into()),
            to: p.clone(),
        });
        draft.edit(&t.id)?.parent = Some(p.clone());
        draft.move_allocation(t.parent.as_deref(), Some(&p), &t.quota)?;
        draft.check_room(&p, &t.quota)?;
        Ok((format!("move {} under {p}", t.id), draft.finish()))
    }

    fn plan_rename(
        &self,
        from: &str,
        to: &str,
        moves: &mut Vec<Move>,
    ) -> Result<(String, Changeset)> {
        let t = self.current(from)?.clone();
        crate::id::validate_tenant_id(to)?;
        if to == t.id {
            return Err(Error::RenameSame { id: to.to_string() });
        }
        // Taking back one of its own old ids is allowed.
        if !t.aliases.contains(to) {
            self.check_id_free(to)?;
        }
        let mut draft = Draft::new(self);
        let mut renamed = t.clone();
        renamed.id = to.to_string();
        renamed.aliases.remove(to);
        renamed.aliases.insert(t.id.clone());
        moves.push(Move {
            kind: MoveKind::Tenant,
            id: t.id.clone(),
            from: t.id.clone(),
            to: to.to_string(),
        });
        moves.push(Move {
            kind: MoveKind::Alias,
            id: t.id.clone(),
            from: t.id.clone(),
            to: to.to_string(),
        });
        for c in self.children(&t.id) {
            moves.push(Move {
                kind: MoveKind::Child,
                id: c.id.clone(),
                from: t.id.clone(),
                to: to.to_string(),
            });
            draft.edit(&c.id)?.parent = Some(to.to_string());
        }
        draft.remove(&t.id);
        draft.insert(renamed);
        Ok((format!("rename {} to {to}", t.id), draft.finish()))
    }
}
