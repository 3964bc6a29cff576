//! Key operations on the store: first-start generation, loading the keyring,
//! listing. The rotation policy (issue #3) will live beside this.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::keyring::{Jwks, Keyring, VerifyingKey};
use super::material::{self, PublicJwk, SigningKey};
use super::{KeyError, KeyState, MasterKey, SigningAlg};
use crate::store::{KeyRow, Store};

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
}

/// Key operations bound to a store and a master key.
#[derive(Clone)]
pub struct KeyManager {
    store: Store,
    master: Arc<MasterKey>,
    alg: SigningAlg,
    rsa_bits: usize,
}

/// A stored row, decoded.
struct StoredKey {
    row: KeyRow,
    alg: SigningAlg,
    state: KeyState,
    public: PublicJwk,
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

impl KeyManager {
    /// A manager that generates `alg` keys of `rsa_bits` (RSA only).
    pub fn new(store: Store, master: Arc<MasterKey>, alg: SigningAlg, rsa_bits: usize) -> Self {
        Self {
            store,
            master,
            alg,
            rsa_bits,
        }
    }

    /// The algorithm new tokens are signed with.
    pub fn signing_alg(&self) -> SigningAlg {
        self.alg
    }

    async fn stored_keys(&self) -> Result<Vec<StoredKey>, KeyError> {
        self.store
            .list_keys()
            .await?
            .into_iter()
            .map(decode_row)
            .collect()
    }

    /// Generates one key off the async reactor and seals its private half.
    async fn generate_row(&self, state: KeyState, now: i64) -> Result<KeyRow, KeyError> {
        let (alg, bits) = (self.alg, self.rsa_bits);
        let generated = tokio::task::spawn_blocking(move || material::generate(alg, bits))
            .await
            .map_err(|e| KeyError::Generation(e.to_string()))??;
        let kid = generated.public.kid.clone();
        let sealed = self.master.seal(&kid, &generated.pkcs8)?;
        let public_jwk = serde_json::to_string(&generated.public)
            .map_err(|e| KeyError::Corrupt(e.to_string()))?;
        Ok(KeyRow {
            kid,
            alg: alg.as_str().to_owned(),
            state: state.as_str().to_owned(),
            public_jwk,
            sealed_private: Some(sealed),
            created_at: now,
            published_at: now,
            activated_at: (state == KeyState::Current).then_some(now),
            retired_at: None,
            revoked_at: None,
        })
    }

    /// Makes sure the configured algorithm has a key that signs and a `next`
    /// key waiting. On first start there is nothing to pre-publish against, so
    /// the first key signs at once; every later key waits its turn.
    pub async fn ensure_keyset(&self, now: i64) -> Result<(), KeyError> {
        let keys = self.stored_keys().await?;
        let has = |state| keys.iter().any(|k| k.alg == self.alg && k.state == state);
        let any_current = keys.iter().any(|k| k.state == KeyState::Current);
        let mut new_rows = Vec::new();
        if !any_current {
            new_rows.push(self.generate_row(KeyState::Current, now).await?);
        }
        if !has(KeyState::Next) {
            new_rows.push(self.generate_row(KeyState::Next, now).await?);
        }
        if !new_rows.is_empty() {
            self.store.insert_keys(&new_rows).await?;
            for row in &new_rows {
                tracing::info!(
                    audit = "key_generated",
                    kid = %row.kid,
                    alg = %row.alg,
                    state = %row.state,
                    "generated signing key"
                );
            }
        }
        Ok(())
    }

    /// Builds a keyring snapshot from the store: opens the signer's private
    /// key, prepares every published public key, serializes the JWKS.
    pub async fn load_keyring(&self) -> Result<Keyring, KeyError> {
        let version = self.store.versions().await?.keys;
        let keys = self.stored_keys().await?;
        let mut verifying = HashMap::new();
        for key in &keys {
            if !key.state.is_published() {
                continue;
            }
            // Next keys verify too: another instance may already have promoted
            // one and signed with it before this snapshot is refreshed.
            verifying.insert(
                key.row.kid.clone(),
                VerifyingKey {
                    alg: key.alg,
                    state: key.state,
                    decoding: key.public.decoding_key()?,
                },
            );
        }
        let jwks = published_jwks(&keys);
        // Prefer the configured algorithm's current key; during an algorithm
        // change the old one keeps signing until the new one is promoted.
        let signer_row = keys
            .iter()
            .filter(|k| k.state == KeyState::Current)
            .max_by_key(|k| (k.alg == self.alg, k.row.activated_at));
        let signer = match signer_row {
            Some(key) => {
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
        Ok(Keyring::new(version, signer, verifying, jwks))
    }

    /// Every key with its state and timestamps, oldest first.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        Ok(self
            .stored_keys()
            .await?
            .into_iter()
            .map(|k| KeyInfo {
                kid: k.row.kid,
                alg: k.alg,
                state: k.state,
                created_at: timestamp(k.row.created_at),
                published_at: timestamp(k.row.published_at),
                activated_at: k.row.activated_at.map(timestamp),
                retired_at: k.row.retired_at.map(timestamp),
                revoked_at: k.row.revoked_at.map(timestamp),
            })
            .collect())
    }

    /// The public JWKS as served, built from the store (for the CLI).
    pub async fn jwks(&self) -> Result<Jwks, KeyError> {
        Ok(published_jwks(&self.stored_keys().await?))
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
