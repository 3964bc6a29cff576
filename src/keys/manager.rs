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
use super::material::{self, GeneratedKey, ImportError, MaterialError, PublicJwk, SigningKey};
use super::rotation::{self, Action, KeyMeta, Policy, RotationError, Trigger};
use super::{KeyError, KeyLifecycle, KeyState, MasterKey, MasterKeys, NewKeyState, SigningAlg};
use crate::audit::{Actor, Entry, Event};
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

/// Key operations bound to a store, master keys and a policy.
#[derive(Clone)]
pub struct KeyManager {
    store: Store,
    /// Every master key this process holds; the one matching the store's
    /// check value, read at each change, seals (see [`KeyManager::change`]).
    master: Arc<MasterKeys>,
    policy: Policy,
    rsa_bits: usize,
    /// Who manual changes are audited as (scheduled ones: the scheduler).
    actor: Actor,
}

/// A stored row with its public key parsed.
struct StoredKey {
    row: KeyRow,
    public: PublicJwk,
}

impl StoredKey {
    fn state(&self) -> KeyState {
        self.row.state()
    }

    fn meta(&self) -> KeyMeta {
        KeyMeta {
            kid: self.row.kid.clone(),
            alg: self.row.alg,
            state: self.state(),
            published_at: self.row.published_at,
            activated_at: self.row.lifecycle.activated_at(),
            retired_at: self.row.lifecycle.retired_at(),
        }
    }
}

fn decode_row(row: KeyRow) -> Result<StoredKey, KeyError> {
    let corrupt = |problem| KeyError::Corrupt {
        kid: row.kid.clone(),
        problem,
    };
    let public: PublicJwk =
        serde_json::from_str(&row.public_jwk).map_err(|e| corrupt(MaterialError::PublicJwk(e)))?;
    if public.kid() != row.kid || public.alg() != row.alg {
        return Err(corrupt(MaterialError::KidMismatch));
    }
    Ok(StoredKey { row, public })
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
    pub fn new(store: Store, master: Arc<MasterKeys>, policy: Policy, rsa_bits: usize) -> Self {
        Self {
            store,
            master,
            policy,
            rsa_bits,
            actor: Actor::system(),
        }
    }

    /// The same operations, manual changes audited as made by `actor`.
    pub fn acting(&self, actor: Actor) -> Self {
        Self {
            actor,
            ..self.clone()
        }
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
            .map_err(|e| KeyError::Generation(e.into()))?
    }

    /// The master key that seals now: the one whose check value the store
    /// records. `None` when the store was moved to a master key this process
    /// does not hold (`keys rewrap` since it started). Read after the keyset
    /// version, so a rewrap committed in between makes the change conflict
    /// instead of sealing under the replaced key.
    async fn sealer(&self) -> Result<Option<&MasterKey>, KeyError> {
        let check = self.store.master_check().await?;
        Ok(check.as_deref().and_then(|c| self.master.matching(c)))
    }

    fn new_row(
        sealer: Option<&MasterKey>,
        generated: &GeneratedKey,
        state: NewKeyState,
        now: i64,
    ) -> Result<KeyRow, KeyError> {
        let kid = generated.public.kid().to_owned();
        let sealed = sealer
            .ok_or(KeyError::MasterKeyChanged)?
            .seal(&kid, &generated.pkcs8)?;
        Ok(KeyRow {
            // A struct of strings always serializes.
            public_jwk: serde_json::to_string(&generated.public)
                .map_err(|e| KeyError::Generation(e.into()))?,
            kid,
            alg: generated.public.alg(),
            created_at: now,
            published_at: now,
            lifecycle: KeyLifecycle::new(state, sealed, now),
        })
    }

    /// Turns planned actions into row changes (generating keys as needed).
    async fn changes_for(
        &self,
        now: i64,
        keys: &[StoredKey],
        actions: &[Action],
        sealer: Option<&MasterKey>,
    ) -> Result<Vec<KeyChange>, KeyError> {
        // Moves `kid` along its lifecycle with `step`, or says why not.
        let transition =
            |kid: &str,
             to: KeyState,
             step: fn(KeyLifecycle, i64) -> Result<KeyLifecycle, KeyLifecycle>| {
                let mut row = keys
                    .iter()
                    .find(|k| k.row.kid == kid)
                    .map(|k| k.row.clone())
                    .ok_or(KeyError::NotFound)?;
                row.lifecycle = step(row.lifecycle, now).map_err(|from| KeyError::Transition {
                    kid: kid.to_owned(),
                    from: from.state(),
                    to,
                })?;
                Ok::<_, KeyError>(KeyChange::Update(row))
            };
        let mut changes = Vec::with_capacity(actions.len());
        for action in actions {
            changes.push(match action {
                Action::Generate(state) => {
                    let generated = self.generate().await?;
                    KeyChange::Insert(Self::new_row(sealer, &generated, *state, now)?)
                }
                Action::Promote(kid) => transition(kid, KeyState::Current, KeyLifecycle::promote)?,
                Action::Retire(kid) => transition(kid, KeyState::Retired, KeyLifecycle::retire)?,
                // A revoked lifecycle has no private half: it is destroyed
                // (its column set to NULL), not just hidden.
                Action::Revoke(kid) => transition(kid, KeyState::Revoked, KeyLifecycle::revoke)?,
                Action::Prune(kid) | Action::Drop(kid) => KeyChange::Delete(kid.clone()),
            });
        }
        Ok(changes)
    }

    /// Reads the keyset, decides with `decide` (given the sealing key, if
    /// this process holds the store's), applies in one conditional
    /// transaction with the audit events (one per planned action, by
    /// `actor`, plus `extra`); retries if another writer got there first.
    /// A process without the store's current master key changes nothing.
    async fn change<F>(
        &self,
        now: i64,
        actor: &Actor,
        extra_events: &[Entry],
        decide: F,
    ) -> Result<Vec<Action>, KeyError>
    where
        F: Fn(&[KeyMeta], Option<&MasterKey>) -> Result<(Vec<Action>, Vec<KeyChange>), KeyError>,
    {
        for _ in 0..5 {
            let (version, keys) = self.keyset().await?;
            let sealer = self.sealer().await?;
            let metas: Vec<KeyMeta> = keys.iter().map(StoredKey::meta).collect();
            let (actions, extra) = decide(&metas, sealer)?;
            if actions.is_empty() && extra.is_empty() {
                return Ok(actions);
            }
            if sealer.is_none() {
                return Err(KeyError::MasterKeyChanged);
            }
            let mut changes = extra;
            changes.extend(self.changes_for(now, &keys, &actions, sealer).await?);
            // The planned actions' changes come last, one each.
            let planned = &changes[changes.len() - actions.len()..];
            let mut events: Vec<Entry> = actions
                .iter()
                .zip(planned)
                .map(|(action, change)| audit_entry(actor, action, change))
                .collect();
            events.extend_from_slice(extra_events);
            let records: Vec<_> = events.iter().map(|e| e.record_at(now)).collect();
            match self
                .store
                .apply_audited_key_changes(version, &changes, &records)
                .await
            {
                Ok(()) => {
                    events.iter().for_each(Entry::log);
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
            .change(now, &Actor::scheduler(), &[], |metas, _| {
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
        self.change(now, &self.actor, &[], |metas, _| {
            let plan = rotation::plan(now, metas, &self.policy, Trigger::Manual { force })?;
            Ok((plan.actions, Vec::new()))
        })
        .await
    }

    /// Emergency revocation: removes `kid` from the JWKS and destroys its
    /// private half; promotes or generates a signer if it was signing.
    pub async fn revoke(&self, kid: &str, now: i64) -> Result<Vec<Action>, KeyError> {
        self.change(now, &self.actor, &[], |metas, _| {
            Ok((rotation::plan_revoke(kid, metas, &self.policy)?, Vec::new()))
        })
        .await
    }

    /// Adds an operator-supplied key (PEM) as the `next` key of its
    /// algorithm, replacing a generated successor that never signed. It
    /// signs after the usual prepublish time, at the next rotation.
    pub async fn import(&self, pem: &str, now: i64) -> Result<String, KeyError> {
        let generated = material::import_pem(pem)?;
        let alg = generated.public.alg();
        if alg != self.policy.alg {
            return Err(KeyError::Import(ImportError::WrongAlgorithm {
                key: alg,
                policy: self.policy.alg,
            }));
        }
        // Refuse a key that does not load, before it reaches the store.
        SigningKey::from_pkcs8(&generated.pkcs8, generated.public.clone())
            .map_err(|e| KeyError::Import(ImportError::Unusable(e)))?;
        let kid = generated.public.kid().to_owned();
        let imported = Entry::new(Event::KeyImported, &self.actor, &kid)
            .detail(format!("alg={alg} state=next"));
        self.change(
            now,
            &self.actor,
            std::slice::from_ref(&imported),
            |metas, sealer| {
                if metas.iter().any(|k| k.kid == kid) {
                    return Err(KeyError::Import(ImportError::Duplicate));
                }
                let replaced = metas
                    .iter()
                    .filter(|k| k.state == KeyState::Next && k.alg == alg)
                    .map(|k| Action::Drop(k.kid.clone()))
                    .collect();
                // Sealed on each attempt: a rewrap in between changes the key.
                let row = Self::new_row(sealer, &generated, NewKeyState::Next, now)?;
                Ok((replaced, vec![KeyChange::Insert(row)]))
            },
        )
        .await?;
        Ok(kid)
    }

    /// Builds a keyring snapshot from the store: opens the signer's private
    /// key, prepares every published public key, serializes the JWKS.
    pub async fn load_keyring(&self, now: i64) -> Result<Keyring, KeyError> {
        let (version, keys) = self.keyset().await?;
        let mut verifying = HashMap::new();
        for key in keys.iter().filter(|k| k.state().is_published()) {
            // Next keys verify too: another instance may already have promoted
            // one and signed with it before this snapshot is refreshed.
            verifying.insert(
                key.row.kid.clone(),
                VerifyingKey::new(
                    key.row.alg,
                    key.state(),
                    key.public
                        .decoding_key()
                        .map_err(|problem| KeyError::Corrupt {
                            kid: key.row.kid.clone(),
                            problem,
                        })?,
                ),
            );
        }
        let metas: Vec<KeyMeta> = keys.iter().map(StoredKey::meta).collect();
        let (signer, signer_activated_at) = match rotation::signer(&metas, &self.policy) {
            Some(meta) => {
                // The signer is a current key, which always has a private half.
                let (key, sealed, activated_at) = keys
                    .iter()
                    .find_map(|k| match &k.row.lifecycle {
                        KeyLifecycle::Current {
                            sealed,
                            activated_at,
                        } if k.row.kid == meta.kid => Some((k, sealed, *activated_at)),
                        _ => None,
                    })
                    .ok_or(KeyError::NotFound)?;
                let pkcs8 = match self.master.open(&key.row.kid, sealed) {
                    Ok(pkcs8) => pkcs8,
                    Err(err) => return Err(self.unseal_failure(err).await),
                };
                let signing =
                    SigningKey::from_pkcs8(&pkcs8, key.public.clone()).map_err(|problem| {
                        KeyError::Corrupt {
                            kid: key.row.kid.clone(),
                            problem,
                        }
                    })?;
                (Some(Arc::new(signing)), Some(activated_at))
            }
            None => (None, None),
        };
        Ok(Keyring::new(
            version,
            signer,
            signer_activated_at,
            verifying,
            published_jwks(&keys),
            rotation::next_change_at(now, &metas, &self.policy),
        ))
    }

    /// Why a key this process should open does not: the store was moved to
    /// a master key it does not hold (it must be restarted with it), or, if
    /// it does hold the store's key, `err` (tampering or corruption).
    async fn unseal_failure(&self, err: KeyError) -> KeyError {
        match self.store.master_check().await {
            Ok(Some(check)) if !self.master.holds(&check) => KeyError::MasterKeyChanged,
            _ => err,
        }
    }

    /// Re-seals every sealed private key under `new` and makes `new` the
    /// store's master key (its check value replaces the old one), in one
    /// conditional transaction with its audit event; bumps the keyset
    /// version so running servers reload. Returns how many keys were
    /// re-sealed. Refuses `new` if it already is the store's key.
    pub async fn rewrap(&self, new: &MasterKey, now: i64) -> Result<usize, KeyError> {
        for _ in 0..5 {
            let (version, keys) = self.keyset().await?;
            let old_check = self
                .store
                .master_check()
                .await?
                .filter(|check| self.master.holds(check))
                .ok_or(KeyError::MasterKeyChanged)?;
            if new.matches_check(&old_check) {
                return Err(KeyError::RewrapSameKey);
            }
            let mut resealed = Vec::new();
            for key in &keys {
                if let Some(sealed) = key.row.lifecycle.sealed() {
                    let pkcs8 = self.master.open(&key.row.kid, sealed)?;
                    resealed.push((key.row.kid.clone(), new.seal(&key.row.kid, &pkcs8)?));
                }
            }
            let entry =
                Entry::new(Event::MasterKeyRewrapped, &self.actor, "master_key").detail(format!(
                    "{} private keys re-sealed under the new master key; check value replaced",
                    resealed.len()
                ));
            match self
                .store
                .rewrap_keys(
                    version,
                    &old_check,
                    &new.check_value(),
                    &resealed,
                    &[entry.record_at(now)],
                )
                .await
            {
                Ok(()) => {
                    entry.log();
                    return Ok(resealed.len());
                }
                Err(StoreError::Conflict) => continue,
                Err(err) => return Err(err.into()),
            }
        }
        Err(KeyError::Busy)
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
                .map(|StoredKey { row, .. }| {
                    let lifecycle = &row.lifecycle;
                    KeyInfo {
                        prune_at: match lifecycle {
                            KeyLifecycle::Retired { retired_at, .. } => {
                                Some(timestamp(retired_at + retire_after))
                            }
                            _ => None,
                        },
                        state: lifecycle.state(),
                        created_at: timestamp(row.created_at),
                        published_at: timestamp(row.published_at),
                        activated_at: lifecycle.activated_at().map(timestamp),
                        retired_at: lifecycle.retired_at().map(timestamp),
                        revoked_at: lifecycle.revoked_at().map(timestamp),
                        kid: row.kid,
                        alg: row.alg,
                    }
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

/// The audit event of one applied lifecycle change.
fn audit_entry(actor: &Actor, action: &Action, change: &KeyChange) -> Entry {
    let alg = match change {
        KeyChange::Insert(row) | KeyChange::Update(row) => row.alg.as_str(),
        KeyChange::Delete(_) => "",
    };
    let (event, kid, detail) = match action {
        Action::Generate(state) => {
            let kid = match change {
                KeyChange::Insert(row) => row.kid.as_str(),
                _ => "",
            };
            (Event::KeyGenerated, kid, format!("alg={alg} state={state}"))
        }
        Action::Promote(kid) => (
            Event::KeyPromoted,
            kid.as_str(),
            format!("alg={alg} now signing (rotation)"),
        ),
        Action::Retire(kid) => (
            Event::KeyRetired,
            kid.as_str(),
            format!("alg={alg} still published"),
        ),
        Action::Prune(kid) => (
            Event::KeyPruned,
            kid.as_str(),
            "its tokens expired; private half destroyed".to_owned(),
        ),
        Action::Drop(kid) => (
            Event::KeyDropped,
            kid.as_str(),
            "unused next key removed".to_owned(),
        ),
        Action::Revoke(kid) => (
            Event::KeyRevoked,
            kid.as_str(),
            format!("alg={alg} removed from the JWKS; private half destroyed"),
        ),
    };
    Entry::new(event, actor, kid).detail(detail)
}

/// The JWKS of the published keys: current first (clients that take the
/// first key get the signer), then next, then retired.
fn published_jwks(keys: &[StoredKey]) -> Jwks {
    let mut published: Vec<&StoredKey> = keys.iter().filter(|k| k.state().is_published()).collect();
    published.sort_by_key(|k| match k.state() {
        KeyState::Current => 0,
        KeyState::Next => 1,
        KeyState::Retired | KeyState::Revoked => 2,
    });
    Jwks::build(published.into_iter().map(|k| &k.public))
}
