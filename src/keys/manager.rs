//! Key operations on the store: applying the lifecycle decided by
//! `rotation` (first keys, scheduled and manual rotation, revocation,
//! import, pruning), loading the keyring, listing.
//!
//! Every change is computed from one read of the keyset and applied in one
//! transaction that succeeds only if nobody changed the keyset in between
//! (`Store::apply_key_changes`), so a crash leaves the old keyset or the new
//! one, and of several instances exactly one performs each rotation.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::keyring::{Jwks, Keyring, VerifyingKey};
use super::material::{self, GeneratedKey, PublicJwk, SigningKey};
use super::rotation::{self, Action, KeyMeta, Policy, RotationError, Trigger};
use super::{KeyError, KeyState, MasterKey, SigningAlg};
use crate::store::{KeyChange, KeyRow, Store, StoreError};

/// What operators see of a key: never private material.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// Signing algorithm.
    pub alg: SigningAlg,
    /// Lifecycle state.
    pub state: KeyState,
    /// Generated or imported.
    pub created_at: DateTime<Utc>,
    /// First published in the JWKS.
    pub published_at: DateTime<Utc>,
    /// Started signing.
    pub activated_at: Option<DateTime<Utc>>,
    /// Stopped signing.
    pub retired_at: Option<DateTime<Utc>>,
    /// Revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// For retired keys: when they leave the JWKS.
    pub prune_at: Option<DateTime<Utc>>,
}

/// The keyset as operators see it.
#[derive(Debug, Clone)]
pub struct KeysetInfo {
    /// Every key, oldest first.
    pub keys: Vec<KeyInfo>,
    /// When the next rotation will happen.
    pub next_rotation_at: Option<DateTime<Utc>>,
}

/// What one scheduler pass did.
#[derive(Debug, Default)]
pub struct ScheduledRun {
    /// Applied changes.
    pub actions: Vec<Action>,
    /// A due rotation waits for its successor's prepublish time.
    pub postponed_until: Option<i64>,
}

/// Key operations bound to a store, a master key and a policy.
#[derive(Clone)]
pub struct KeyManager {
    store: Store,
    master: Arc<MasterKey>,
    policy: Policy,
    rsa_bits: usize,
}

/// A stored row, decoded.
struct StoredKey {
    row: KeyRow,
    alg: SigningAlg,
    state: KeyState,
    public: PublicJwk,
}

impl StoredKey {
    fn meta(&self) -> KeyMeta {
        KeyMeta {
            kid: self.row.kid.clone(),
            alg: self.alg,
            state: self.state,
            published_at: self.row.published_at,
            activated_at: self.row.activated_at,
            retired_at: self.row.retired_at,
        }
    }
}

fn decode_row(row: KeyRow) -> Result<StoredKey, KeyError> {
    let alg: SigningAlg = row.alg.parse()?;
    let state: KeyState = row.state.parse()?;
    let public: PublicJwk = serde_json::from_str(&row.public_jwk)
        .map_err(|e| KeyError::Corrupt(format!("public JWK of {}: {e}", row.kid)))?;
    if public.kid != row.kid || public.thumbprint() != row.kid {
        return Err(KeyError::Corrupt(format!(
            "key {} does not match its thumbprint",
            row.kid
        )));
    }
    Ok(StoredKey {
        row,
        alg,
        state,
        public,
    })
}

fn timestamp(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

fn rfc3339(secs: i64) -> String {
    timestamp(secs).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl From<RotationError> for KeyError {
    fn from(err: RotationError) -> Self {
        match err {
            RotationError::TooEarly { earliest } => Self::RotationTooEarly {
                earliest: rfc3339(earliest),
            },
            RotationError::NotFound => Self::NotFound,
        }
    }
}

impl KeyManager {
    /// A manager applying `policy`, generating RSA keys of `rsa_bits`.
    pub fn new(store: Store, master: Arc<MasterKey>, policy: Policy, rsa_bits: usize) -> Self {
        Self {
            store,
            master,
            policy,
            rsa_bits,
        }
    }

    /// The lifecycle policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    async fn keyset(&self) -> Result<(i64, Vec<StoredKey>), KeyError> {
        let (version, rows) = self.store.keyset().await?;
        let keys = rows.into_iter().map(decode_row).collect::<Result<_, _>>()?;
        Ok((version, keys))
    }

    /// Generates one key off the async reactor and seals its private half.
    async fn generate(&self) -> Result<GeneratedKey, KeyError> {
        let (alg, bits) = (self.policy.alg, self.rsa_bits);
        tokio::task::spawn_blocking(move || material::generate(alg, bits))
            .await
            .map_err(|e| KeyError::Generation(e.to_string()))?
    }

    fn new_row(
        &self,
        alg: SigningAlg,
        generated: &GeneratedKey,
        state: KeyState,
        now: i64,
    ) -> Result<KeyRow, KeyError> {
        let kid = generated.public.kid.clone();
        Ok(KeyRow {
            sealed_private: Some(self.master.seal(&kid, &generated.pkcs8)?),
            public_jwk: serde_json::to_string(&generated.public)
                .map_err(|e| KeyError::Corrupt(e.to_string()))?,
            kid,
            alg: alg.as_str().to_owned(),
            state: state.as_str().to_owned(),
            created_at: now,
            published_at: now,
            activated_at: (state == KeyState::Current).then_some(now),
            retired_at: None,
            revoked_at: None,
        })
    }

    /// Turns planned actions into row changes (generating keys as needed).
    async fn changes_for(
        &self,
        now: i64,
        keys: &[StoredKey],
        actions: &[Action],
    ) -> Result<Vec<KeyChange>, KeyError> {
        let row = |kid: &str| {
            keys.iter()
                .find(|k| k.row.kid == kid)
                .map(|k| k.row.clone())
                .ok_or(KeyError::NotFound)
        };
        let mut changes = Vec::with_capacity(actions.len());
        for action in actions {
            changes.push(match action {
                Action::Generate(state) => {
                    let generated = self.generate().await?;
                    KeyChange::Insert(self.new_row(self.policy.alg, &generated, *state, now)?)
                }
                Action::Promote(kid) => {
                    let mut r = row(kid)?;
                    r.state = KeyState::Current.as_str().into();
                    r.activated_at = Some(now);
                    KeyChange::Update(r)
                }
                Action::Retire(kid) => {
                    let mut r = row(kid)?;
                    r.state = KeyState::Retired.as_str().into();
                    r.retired_at = Some(now);
                    KeyChange::Update(r)
                }
                Action::Revoke(kid) => {
                    let mut r = row(kid)?;
                    r.state = KeyState::Revoked.as_str().into();
                    r.revoked_at = Some(now);
                    // The private half is destroyed, not just hidden.
                    r.sealed_private = None;
                    KeyChange::Update(r)
                }
                Action::Prune(kid) | Action::Drop(kid) => KeyChange::Delete(kid.clone()),
            });
        }
        Ok(changes)
    }

    /// Reads the keyset, decides with `decide`, applies in one conditional
    /// transaction; retries if another writer got there first.
    async fn change<F>(&self, now: i64, decide: F) -> Result<Vec<Action>, KeyError>
    where
        F: Fn(&[KeyMeta]) -> Result<(Vec<Action>, Vec<KeyChange>), KeyError>,
    {
        for _ in 0..5 {
            let (version, keys) = self.keyset().await?;
            let metas: Vec<KeyMeta> = keys.iter().map(StoredKey::meta).collect();
            let (actions, extra) = decide(&metas)?;
            if actions.is_empty() && extra.is_empty() {
                return Ok(actions);
            }
            let mut changes = extra;
            changes.extend(self.changes_for(now, &keys, &actions).await?);
            match self.store.apply_key_changes(version, &changes).await {
                Ok(()) => {
                    // The planned actions' changes come last, one each.
                    let planned = &changes[changes.len() - actions.len()..];
                    for (action, change) in actions.iter().zip(planned) {
                        audit(action, change);
                    }
                    return Ok(actions);
                }
                Err(StoreError::Conflict) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(KeyError::Busy)
    }

    /// The scheduler's pass (also run at start-up): first keys, a due
    /// rotation (postponed while the successor is too fresh), a successor,
    /// pruning.
    pub async fn run_scheduled(&self, now: i64) -> Result<ScheduledRun, KeyError> {
        let postponed = std::sync::Mutex::new(None);
        let actions = self
            .change(now, |metas| {
                let plan = rotation::plan(now, metas, &self.policy, Trigger::Scheduled)?;
                if let Ok(mut p) = postponed.lock() {
                    *p = plan.postponed_until;
                }
                Ok((plan.actions, Vec::new()))
            })
            .await?;
        let postponed_until = postponed.lock().ok().and_then(|p| *p);
        Ok(ScheduledRun {
            actions,
            postponed_until,
        })
    }

    /// Rotates now (operator request). Without `force`, refuses while the
    /// successor has been published for less than the prepublish time.
    pub async fn rotate(&self, now: i64, force: bool) -> Result<Vec<Action>, KeyError> {
        self.change(now, |metas| {
            let plan = rotation::plan(now, metas, &self.policy, Trigger::Manual { force })?;
            Ok((plan.actions, Vec::new()))
        })
        .await
    }

    /// Emergency revocation: removes `kid` from the JWKS and destroys its
    /// private half; promotes or generates a signer if it was signing.
    pub async fn revoke(&self, kid: &str, now: i64) -> Result<Vec<Action>, KeyError> {
        self.change(now, |metas| {
            Ok((rotation::plan_revoke(kid, metas, &self.policy)?, Vec::new()))
        })
        .await
    }

    /// Adds an operator-supplied key (PEM) as the `next` key of its
    /// algorithm, replacing a generated successor that never signed. It
    /// signs after the usual prepublish time, at the next rotation.
    pub async fn import(&self, pem: &str, now: i64) -> Result<String, KeyError> {
        let (alg, generated) = material::import_pem(pem)?;
        if alg != self.policy.alg {
            return Err(KeyError::Import(format!(
                "the key is {alg} but KEYTURN_SIGNING_ALG is {}; it would never sign",
                self.policy.alg
            )));
        }
        // Refuse a key that does not load, before it reaches the store.
        SigningKey::from_pkcs8(alg, &generated.pkcs8, generated.public.clone())?;
        let row = self.new_row(alg, &generated, KeyState::Next, now)?;
        let kid = row.kid.clone();
        self.change(now, |metas| {
            if metas.iter().any(|k| k.kid == kid) {
                return Err(KeyError::Import("this key is already in the keyset".into()));
            }
            let replaced = metas
                .iter()
                .filter(|k| k.state == KeyState::Next && k.alg == alg)
                .map(|k| Action::Drop(k.kid.clone()))
                .collect();
            Ok((replaced, vec![KeyChange::Insert(row.clone())]))
        })
        .await?;
        tracing::info!(audit = "key_imported", kid = %kid, alg = %alg, "imported key as next");
        Ok(kid)
    }

    /// Builds a keyring snapshot from the store: opens the signer's private
    /// key, prepares every published public key, serializes the JWKS.
    pub async fn load_keyring(&self, now: i64) -> Result<Keyring, KeyError> {
        let (version, keys) = self.keyset().await?;
        let mut verifying = HashMap::new();
        for key in keys.iter().filter(|k| k.state.is_published()) {
            // Next keys verify too: another instance may already have promoted
            // one and signed with it before this snapshot is refreshed.
            verifying.insert(
                key.row.kid.clone(),
                VerifyingKey::new(key.alg, key.state, key.public.decoding_key()?),
            );
        }
        let metas: Vec<KeyMeta> = keys.iter().map(StoredKey::meta).collect();
        let signer = match rotation::signer(&metas, &self.policy) {
            Some(meta) => {
                let key = keys
                    .iter()
                    .find(|k| k.row.kid == meta.kid)
                    .ok_or(KeyError::NotFound)?;
                let sealed = key.row.sealed_private.as_deref().ok_or_else(|| {
                    KeyError::Corrupt(format!("current key {} has no private half", key.row.kid))
                })?;
                let pkcs8 = self.master.open(&key.row.kid, sealed)?;
                Some(Arc::new(SigningKey::from_pkcs8(
                    key.alg,
                    &pkcs8,
                    key.public.clone(),
                )?))
            }
            None => None,
        };
        Ok(Keyring::new(
            version,
            signer,
            rotation::signer(&metas, &self.policy).and_then(|k| k.activated_at),
            verifying,
            published_jwks(&keys),
            rotation::next_change_at(now, &metas, &self.policy),
        ))
    }

    /// Every key with its state and timestamps, and the next rotation.
    pub async fn list(&self, now: i64) -> Result<KeysetInfo, KeyError> {
        let (_, keys) = self.keyset().await?;
        let metas: Vec<KeyMeta> = keys.iter().map(StoredKey::meta).collect();
        let next_rotation_at = rotation::next_rotation_at(now, &metas, &self.policy);
        let retire_after = self.policy.retire_after;
        Ok(KeysetInfo {
            keys: keys
                .into_iter()
                .map(|k| KeyInfo {
                    prune_at: (k.state == KeyState::Retired)
                        .then(|| k.row.retired_at.map(|t| timestamp(t + retire_after)))
                        .flatten(),
                    kid: k.row.kid,
                    alg: k.alg,
                    state: k.state,
                    created_at: timestamp(k.row.created_at),
                    published_at: timestamp(k.row.published_at),
                    activated_at: k.row.activated_at.map(timestamp),
                    retired_at: k.row.retired_at.map(timestamp),
                    revoked_at: k.row.revoked_at.map(timestamp),
                })
                .collect(),
            next_rotation_at: next_rotation_at.map(timestamp),
        })
    }

    /// The public JWKS as served, built from the store (for the CLI).
    pub async fn jwks(&self) -> Result<Jwks, KeyError> {
        Ok(published_jwks(&self.keyset().await?.1))
    }
}

/// One structured audit line per applied lifecycle change.
fn audit(action: &Action, change: &KeyChange) {
    let alg = match change {
        KeyChange::Insert(row) | KeyChange::Update(row) => row.alg.as_str(),
        KeyChange::Delete(_) => "",
    };
    match action {
        Action::Generate(state) => {
            let kid = match change {
                KeyChange::Insert(row) => row.kid.as_str(),
                _ => "",
            };
            tracing::info!(audit = "key_generated", kid, alg, state = %state, "generated signing key");
        }
        Action::Promote(kid) => {
            tracing::info!(audit = "key_promoted", kid = %kid, alg, "key is now current (rotation)");
        }
        Action::Retire(kid) => {
            tracing::info!(audit = "key_retired", kid = %kid, alg, "key retired; still published");
        }
        Action::Prune(kid) => {
            tracing::info!(audit = "key_pruned", kid = %kid, "retired key pruned; private half destroyed");
        }
        Action::Drop(kid) => {
            tracing::info!(audit = "key_dropped", kid = %kid, "unused next key removed");
        }
        Action::Revoke(kid) => {
            tracing::warn!(audit = "key_revoked", kid = %kid, alg, "key revoked; removed from the JWKS");
        }
    }
}

/// The JWKS of the published keys: current first (clients that take the
/// first key get the signer), then next, then retired.
fn published_jwks(keys: &[StoredKey]) -> Jwks {
    let mut published: Vec<&StoredKey> = keys.iter().filter(|k| k.state.is_published()).collect();
    published.sort_by_key(|k| match k.state {
        KeyState::Current => 0,
        KeyState::Next => 1,
        _ => 2,
    });
    Jwks::build(published.into_iter().map(|k| &k.public))
}
