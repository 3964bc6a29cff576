//! The in-memory set of revoked access-token `jti`s, so validation never
//! queries the database.
//!
//! Revocations made by this instance are added at once; the others (the
//! CLI, other instances) arrive through the status change log, which the
//! poller follows incrementally. An entry is kept until the token's `exp`
//! plus leeway, after which the token is refused as expired anyway.

use crate::accounts::StatusView;
use crate::store::{ChangeKind, RevokedJti, StatusEntry, Store, StoreError};

/// Revoked `jti` → the token's `exp`.
#[derive(Clone)]
pub struct RevocationView(StatusView);

impl Default for RevocationView {
    fn default() -> Self {
        Self(StatusView::new(ChangeKind::Jti))
    }
}

impl RevocationView {
    /// Whether this `jti` has been revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.0.get(jti).is_some()
    }

    /// The log behind it.
    pub fn log(&self) -> &StatusView {
        &self.0
    }

    /// Adds entries revoked by this instance (already committed), each kept
    /// until its `exp` plus `leeway`.
    pub fn add(&self, revoked: &[RevokedJti], leeway: i64) {
        let entries: Vec<StatusEntry> = revoked
            .iter()
            .map(|r| StatusEntry {
                subject: r.jti.clone(),
                at: r.expires_at,
                until: r.expires_at.saturating_add(leeway),
            })
            .collect();
        self.0.add(&entries);
    }

    /// Drops entries that no longer matter at `now`.
    pub fn prune(&self, now: i64) {
        self.0.prune(now);
    }

    /// Applies what the log gained since this view's version.
    pub async fn catch_up(&self, store: &Store, now: i64) -> Result<(), StoreError> {
        self.0.catch_up(store, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_prune() {
        let view = RevocationView::default();
        view.add(
            &[
                RevokedJti {
                    jti: "a".into(),
                    expires_at: 100,
                },
                RevokedJti {
                    jti: "b".into(),
                    expires_at: 200,
                },
            ],
            30,
        );
        assert!(view.is_revoked("a") && view.is_revoked("b"));
        assert!(!view.is_revoked("c"));
        view.prune(129);
        assert!(view.is_revoked("a"), "kept through the leeway");
        view.prune(130);
        assert!(!view.is_revoked("a") && view.is_revoked("b"));
    }
}
