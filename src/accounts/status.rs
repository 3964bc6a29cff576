//! In-memory views of the store's status change log (see
//! `store::changes`): which users' and clients' tokens are cut off, which
//! `jti`s are revoked. Checking a token never queries the database.
//!
//! Bounded by time, not by users: an entry matters only while a token it
//! refuses could still be unexpired, so a view holds what changed within
//! the last access-token lifetime (plus leeway) and forgets the rest. A
//! subject with no entry has had nothing revoked, so a user created a
//! moment ago on another instance is accepted at once. Refreshing is
//! incremental: the entries committed after the version the view holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::store::{ChangeKind, StatusEntry, Store, StoreError};

/// The entries of one [`ChangeKind`]: subject → the newest `at` (a cutoff,
/// or a revoked token's `exp`) and until when it matters.
#[derive(Clone)]
pub struct StatusView {
    kind: ChangeKind,
    inner: Arc<ArcSwap<Entries>>,
    /// Counts the changes applied (not the prunes), so what was read from
    /// the store about these subjects can tell it may be out of date.
    generation: Arc<AtomicU64>,
}

#[derive(Default, Clone)]
struct Entries {
    version: i64,
    at: HashMap<String, Times>,
}

#[derive(Clone, Copy)]
struct Times {
    at: i64,
    until: i64,
}

impl StatusView {
    /// An empty view of `kind`, at version 0 (its first catch-up reads
    /// every live entry).
    pub fn new(kind: ChangeKind) -> Self {
        Self {
            kind,
            inner: Arc::default(),
            generation: Arc::default(),
        }
    }

    /// Grows with every change applied to the view (this instance's own
    /// and the log's), never with a prune: a cache of what the store said
    /// about these subjects is current while this has not moved since it
    /// was read.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The newest `at` recorded for `subject`.
    pub fn get(&self, subject: &str) -> Option<i64> {
        self.inner.load().at.get(subject).map(|t| t.at)
    }

    /// The log version this view has caught up to.
    pub fn version(&self) -> i64 {
        self.inner.load().version
    }

    /// How many entries it holds (what memory it costs).
    pub fn len(&self) -> usize {
        self.inner.load().at.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies `change` to a copy and swaps it in: readers never wait, and
    /// concurrent writers retry on the newest copy, so none is lost.
    fn update(&self, change: impl Fn(&mut Entries)) {
        self.inner.rcu(|current| {
            let mut next = Entries::clone(current);
            change(&mut next);
            next
        });
    }

    /// Adds entries this instance has just committed, so they apply here
    /// at once; the log brings them again later, harmlessly. Neither time
    /// of an entry ever moves back.
    pub fn add(&self, entries: &[StatusEntry]) {
        self.update(|e| {
            for entry in entries {
                merge(&mut e.at, entry);
            }
        });
        if !entries.is_empty() {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Forgets entries whose `until` is at or before `now`: they can no
    /// longer refuse an unexpired token.
    pub fn prune(&self, now: i64) {
        self.update(|e| e.at.retain(|_, t| t.until > now));
    }

    /// Reads the entries committed since this view's version that still
    /// matter at `now`, and applies them.
    pub async fn catch_up(&self, store: &Store, now: i64) -> Result<(), StoreError> {
        let changes = store.status_changes(self.kind, self.version(), now).await?;
        self.update(|e| {
            for entry in &changes.entries {
                merge(&mut e.at, entry);
            }
            e.version = e.version.max(changes.version);
        });
        if !changes.entries.is_empty() {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }
}

fn merge(entries: &mut HashMap<String, Times>, entry: &StatusEntry) {
    match entries.get_mut(&entry.subject) {
        Some(known) => {
            known.at = known.at.max(entry.at);
            known.until = known.until.max(entry.until);
        }
        None => {
            entries.insert(
                entry.subject.clone(),
                Times {
                    at: entry.at,
                    until: entry.until,
                },
            );
        }
    }
}

/// Per-subject token cutoffs (users or clients): a token issued at or
/// before its subject's cutoff is refused.
#[derive(Clone)]
pub struct CutoffView(StatusView);

impl CutoffView {
    /// The cutoffs of users (password change, disable, role removal,
    /// revoke-all, delete).
    pub fn users() -> Self {
        Self(StatusView::new(ChangeKind::User))
    }

    /// The cutoffs of client ids (secret rotation, delete).
    pub fn clients() -> Self {
        Self(StatusView::new(ChangeKind::Client))
    }

    /// Whether a token of `subject` issued at `iat` is still acceptable:
    /// strictly after the cutoff, with no leeway (a token minted in the
    /// very second of a change may predate it). No cutoff: nothing revoked.
    pub fn accepts(&self, subject: &str, iat: i64) -> bool {
        self.0.get(subject).is_none_or(|cutoff| iat > cutoff)
    }

    /// Applies a cutoff this instance has just committed, kept `retention`
    /// past it (as the store keeps it).
    pub fn cut_off(&self, subject: &str, cutoff: i64, retention: i64) {
        self.0.add(&[StatusEntry {
            subject: subject.to_owned(),
            at: cutoff,
            until: cutoff.saturating_add(retention),
        }]);
    }

    /// The log behind it.
    pub fn log(&self) -> &StatusView {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cutoff(at: i64) -> StatusEntry {
        StatusEntry {
            subject: "u".into(),
            at,
            until: at + 930,
        }
    }

    #[test]
    fn a_subject_without_a_cutoff_is_accepted_and_cutoffs_only_move_forward() {
        let view = CutoffView::users();
        assert!(view.accepts("new-user", 1), "unknown: nothing revoked");
        view.log().add(&[cutoff(100)]);
        assert!(
            !view.accepts("u", 100),
            "the cutoff's own second is refused"
        );
        assert!(view.accepts("u", 101));
        view.log().add(&[cutoff(50)]);
        assert!(
            !view.accepts("u", 100),
            "an older cutoff does not revive tokens"
        );
        view.log().prune(1029);
        assert!(!view.accepts("u", 100), "kept until `until`");
        view.log().prune(1030);
        assert!(view.accepts("u", 100) && view.log().is_empty());
    }
}
