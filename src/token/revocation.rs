//! The in-memory list of revoked access-token `jti`s, so validation never
//! queries the database.
//!
//! Revocations made by this instance are added at once; the poller reloads
//! the list when the store's `revocations` counter moves (the CLI or another
//! instance revoked something). An entry is kept until the token's `exp`
//! plus leeway, after which the token is refused as expired anyway.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::store::{RevokedJti, Store, StoreError};

/// Revoked `jti` → the token's `exp`.
#[derive(Clone, Default)]
pub struct RevocationView {
    inner: Arc<ArcSwap<Revoked>>,
}

#[derive(Default, Clone)]
struct Revoked {
    version: i64,
    jtis: HashMap<String, i64>,
}

impl RevocationView {
    /// Whether this `jti` has been revoked.
    pub fn is_revoked(&self, jti: &str) -> bool {
        self.inner.load().jtis.contains_key(jti)
    }

    /// The store version this view reflects.
    pub fn version(&self) -> i64 {
        self.inner.load().version
    }

    /// Applies `change` to a copy and swaps it in; readers never wait, and
    /// concurrent writers retry on the newest copy, so none is lost.
    fn update(&self, change: impl Fn(&mut Revoked)) {
        self.inner.rcu(|current| {
            let mut next = Revoked::clone(current);
            change(&mut next);
            next
        });
    }

    /// Adds entries revoked by this instance (already committed).
    pub fn add(&self, revoked: &[RevokedJti]) {
        self.update(|r| {
            for entry in revoked {
                r.jtis.insert(entry.jti.clone(), entry.expires_at);
            }
        });
    }

    /// Drops entries whose token expired at or before `cutoff`.
    pub fn prune(&self, cutoff: i64) {
        self.update(|r| r.jtis.retain(|_, exp| *exp > cutoff));
    }

    /// Reloads the entries still live after `cutoff` from the store.
    ///
    /// Entries already known are kept (while live) even if the rows read
    /// predate them: the list only grows until expiry, so a reload racing
    /// with a local revocation can never forget it.
    pub async fn reload(&self, store: &Store, cutoff: i64) -> Result<(), StoreError> {
        let version = store.versions().await?.revocations;
        let rows = store.revoked_jtis(cutoff).await?;
        self.update(|r| {
            r.jtis.retain(|_, exp| *exp > cutoff);
            for row in &rows {
                r.jtis.insert(row.jti.clone(), row.expires_at);
            }
            r.version = version;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_prune() {
        let view = RevocationView::default();
        view.add(&[
            RevokedJti {
                jti: "a".into(),
                expires_at: 100,
            },
            RevokedJti {
                jti: "b".into(),
                expires_at: 200,
            },
        ]);
        assert!(view.is_revoked("a") && view.is_revoked("b"));
        assert!(!view.is_revoked("c"));
        view.prune(100);
        assert!(!view.is_revoked("a") && view.is_revoked("b"));
    }
}
