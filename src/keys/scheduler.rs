//! This instance's live keyring and the key schedule around it: scheduled
//! rotation and pruning, manual rotation and revocation, and keeping the
//! keyring in step with the store when the CLI or another instance changed
//! the keyset. The lifecycle itself is decided by `rotation::plan`; this is
//! the thin loop body around it.
//!
//! Calls `KeyManager` and `metrics`; never imports `http`, `app` or `token`.

use std::sync::{Arc, Mutex};

use super::rotation::Action;
use super::{KeyError, KeyManager, KeyringHandle};
use crate::audit::Actor;
use crate::clock::SharedClock;
use crate::metrics::Metrics;

/// The key schedule of one running server.
#[derive(Clone)]
pub struct KeyScheduler {
    manager: KeyManager,
    keyring: KeyringHandle,
    metrics: Arc<Metrics>,
    clock: SharedClock,
    /// The postponement last logged, so a waiting rotation is logged once.
    announced_postponement: Arc<Mutex<Option<i64>>>,
    /// The store version whose reload last failed, so a failure that lasts
    /// (a master key this process lacks) is one log line, not one a second.
    failed_reload: Arc<Mutex<Option<i64>>>,
}

impl KeyScheduler {
    /// Drives `keyring` from `manager`'s store.
    pub fn new(
        manager: KeyManager,
        keyring: KeyringHandle,
        metrics: Arc<Metrics>,
        clock: SharedClock,
    ) -> Self {
        Self {
            manager,
            keyring,
            metrics,
            clock,
            announced_postponement: Arc::default(),
            failed_reload: Arc::default(),
        }
    }

    /// The same schedule, manual rotations and revocations audited as made
    /// by `actor`.
    pub fn acting(&self, actor: Actor) -> Self {
        Self {
            manager: self.manager.acting(actor),
            ..self.clone()
        }
    }

    /// At start-up: the first keys, or the one rotation a server that was
    /// down has missed, then the keyring. Errors are returned, not logged:
    /// a server that cannot sign must not start.
    pub async fn start(&self) -> Result<(), KeyError> {
        let run = self.manager.run_scheduled(self.clock.now()).await?;
        self.after_change(&run.actions).await
    }

    /// Applies the schedule now (rotation when due, pruning of expired
    /// retired keys). Returns the time a due rotation was postponed to,
    /// because the next key has not been published long enough; a new
    /// postponement is logged once.
    pub async fn run_scheduled(&self) -> Option<i64> {
        let postponed = match self.manager.run_scheduled(self.clock.now()).await {
            Ok(run) => {
                self.count(&run.actions);
                run.postponed_until
            }
            Err(err) => {
                tracing::error!(error = %err, "scheduled key maintenance failed");
                None
            }
        };
        let mut announced = self
            .announced_postponement
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if postponed != *announced {
            if let Some(until) = postponed {
                tracing::warn!(
                    until = %chrono::DateTime::from_timestamp(until, 0).unwrap_or_default(),
                    "rotation due but postponed: the next key has not been published \
                     for KEYTURN_KEY_PREPUBLISH yet"
                );
            }
            *announced = postponed;
        }
        postponed
    }

    /// Reloads the keyring when the store's keyset version is not the one
    /// it was built from (a change by the CLI or another instance).
    pub async fn follow_store(&self, store_version: i64) {
        if store_version == self.keyring.get().version {
            return;
        }
        let result = self.reload().await;
        let mut failed = self
            .failed_reload
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match result {
            Ok(version) => {
                *failed = None;
                tracing::info!(version, "keyset changed; keyring reloaded");
            }
            Err(err) => {
                if *failed != Some(store_version) {
                    tracing::error!(
                        error = %err,
                        "keyring reload failed; serving the keys already in memory"
                    );
                }
                *failed = Some(store_version);
            }
        }
    }

    /// Rotates now (see [`KeyManager::rotate`]); this instance signs with
    /// the new key at once, others within their next poll.
    pub async fn rotate(&self, force: bool) -> Result<(), KeyError> {
        let actions = self.manager.rotate(self.clock.now(), force).await?;
        self.after_change(&actions).await
    }

    /// Revokes a key (see [`KeyManager::revoke`]); it leaves this
    /// instance's JWKS and keyring at once.
    pub async fn revoke(&self, kid: &str) -> Result<(), KeyError> {
        let actions = self.manager.revoke(kid, self.clock.now()).await?;
        self.after_change(&actions).await
    }

    async fn after_change(&self, actions: &[Action]) -> Result<(), KeyError> {
        self.count(actions);
        self.reload().await.map(drop)
    }

    async fn reload(&self) -> Result<i64, KeyError> {
        let keyring = self.manager.load_keyring(self.clock.now()).await?;
        let version = keyring.version;
        self.keyring.set(keyring);
        Ok(version)
    }

    fn count(&self, actions: &[Action]) {
        let count = |f: fn(&Action) -> bool| actions.iter().filter(|a| f(a)).count() as u64;
        self.metrics.key_changes(
            count(|a| matches!(a, Action::Promote(_))),
            count(|a| matches!(a, Action::Revoke(_))),
            count(|a| matches!(a, Action::Prune(_))),
        );
    }
}
