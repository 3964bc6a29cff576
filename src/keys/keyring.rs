//! The in-memory keyring: the signer, the verification keys by `kid`, and the
//! JWKS body with its ETag, built once per keyset change.
//!
//! Requests read an `Arc<Keyring>` snapshot; a reload swaps the whole
//! snapshot, so signing and verification never touch the database and never
//! see a half-updated keyset.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::{KeyState, PublicJwk, SigningAlg, SigningKey};
use crate::verifier::{KeySource, VerificationKey, VerifyError};

/// A public key the server accepts tokens from.
pub struct VerifyingKey {
    /// The only algorithm tokens under this key may use.
    pub alg: SigningAlg,
    /// Its lifecycle state.
    pub state: KeyState,
    /// Prepared for the token check the verifier library and the server share.
    key: Arc<VerificationKey>,
}

impl VerifyingKey {
    /// Prepares a published key for verification.
    pub fn new(alg: SigningAlg, state: KeyState, decoding: jsonwebtoken::DecodingKey) -> Self {
        Self {
            alg,
            state,
            key: Arc::new(VerificationKey::new(decoding, alg.jwt_algorithm())),
        }
    }
}

/// The serialized JWKS and its strong ETag.
#[derive(Debug, Clone)]
pub struct Jwks {
    /// `{"keys":[…]}` as served.
    pub body: Bytes,
    /// Quoted strong validator derived from the body.
    pub etag: String,
}

impl Jwks {
    /// Serializes the published keys once.
    pub fn build<'a>(keys: impl IntoIterator<Item = &'a PublicJwk>) -> Self {
        let keys: Vec<&PublicJwk> = keys.into_iter().collect();
        let body = serde_json::to_vec(&serde_json::json!({ "keys": keys }))
            .unwrap_or_else(|_| b"{\"keys\":[]}".to_vec());
        let digest = Sha256::digest(&body);
        let etag = format!("\"{}\"", B64.encode(&digest[..16]));
        Self {
            body: Bytes::from(body),
            etag,
        }
    }
}

/// One consistent view of the keyset.
pub struct Keyring {
    /// The store's keyset version this snapshot was built from.
    pub version: i64,
    /// When the signer started signing (for the key-age metric).
    pub signer_activated_at: Option<i64>,
    /// When the published keyset will next change on its own (rotation or
    /// prune); the JWKS is never cached past it.
    pub next_change_at: Option<i64>,
    signer: Option<Arc<SigningKey>>,
    verifying: HashMap<String, VerifyingKey>,
    jwks: Jwks,
}

impl Keyring {
    /// An empty keyring (nothing signs, nothing verifies).
    pub fn empty() -> Self {
        Self {
            version: -1,
            signer_activated_at: None,
            next_change_at: None,
            signer: None,
            verifying: HashMap::new(),
            jwks: Jwks::build([]),
        }
    }

    /// Assembles a snapshot.
    pub fn new(
        version: i64,
        signer: Option<Arc<SigningKey>>,
        signer_activated_at: Option<i64>,
        verifying: HashMap<String, VerifyingKey>,
        jwks: Jwks,
        next_change_at: Option<i64>,
    ) -> Self {
        Self {
            version,
            signer_activated_at,
            next_change_at,
            signer,
            verifying,
            jwks,
        }
    }

    /// The key new tokens are signed with, if any.
    pub fn signer(&self) -> Option<&Arc<SigningKey>> {
        self.signer.as_ref()
    }

    /// The published key with this `kid`.
    pub fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey> {
        self.verifying.get(kid)
    }

    /// The algorithms of the published keys (what verifiers must accept),
    /// sorted and without duplicates.
    pub fn algorithms(&self) -> Vec<SigningAlg> {
        let mut algs: Vec<SigningAlg> = self
            .verifying
            .values()
            .filter(|k| k.state.is_published())
            .map(|k| k.alg)
            .collect();
        algs.sort_by_key(|a| a.as_str());
        algs.dedup();
        algs
    }

    /// The JWKS as served.
    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }
}

/// The server's own routes validate against the published keys of one
/// snapshot (`next` keys included: another instance may already sign with
/// one). keyturn's tokens always name their key, so a missing `kid` is an
/// unknown key.
impl KeySource for Keyring {
    fn key(&self, kid: Option<&str>) -> Result<Arc<VerificationKey>, VerifyError> {
        kid.and_then(|kid| self.verifying.get(kid))
            .map(|k| Arc::clone(&k.key))
            .ok_or(VerifyError::UnknownKey)
    }
}

/// Shared, swappable keyring: readers take the whole snapshot without a
/// lock, a reload swaps it atomically.
#[derive(Clone)]
pub struct KeyringHandle(Arc<ArcSwap<Keyring>>);

impl Default for KeyringHandle {
    fn default() -> Self {
        Self(Arc::new(ArcSwap::from_pointee(Keyring::empty())))
    }
}

impl KeyringHandle {
    /// The current snapshot.
    pub fn get(&self) -> Arc<Keyring> {
        self.0.load_full()
    }

    /// Replaces the snapshot.
    pub fn set(&self, keyring: Keyring) {
        self.0.store(Arc::new(keyring));
    }
}
