//! Signing keys: their states, material, sealing at rest, and the in-memory
//! keyring the server signs and verifies with.
//!
//! Owns the key lifecycle's vocabulary (SPEC §4) and its schedule
//! (`scheduler`). Calls `store` for persistence and `metrics` for counts;
//! never imports `http`, `cli`, `app` or `token`.

mod keyring;
mod manager;
mod material;
pub mod rotation;
mod scheduler;
mod seal;

pub use keyring::{Jwks, Keyring, KeyringHandle, VerifyingKey};
pub use manager::{KeyInfo, KeyManager, KeysetInfo, ScheduledRun};
pub use material::{PublicJwk, SigningKey};
pub use scheduler::KeyScheduler;
pub use seal::{MasterKey, MasterKeyError};

use std::fmt;
use std::str::FromStr;

/// A JWS algorithm keyturn signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// Ed25519.
    EdDsa,
}

impl SigningAlg {
    /// The JOSE name (`RS256`, `EdDSA`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// The matching `jsonwebtoken` algorithm, for verification.
    pub fn jwt_algorithm(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SigningAlg {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RS256" => Ok(Self::Rs256),
            "EdDSA" => Ok(Self::EdDsa),
            other => Err(KeyError::UnsupportedAlgorithm(
                other.chars().take(16).collect(),
            )),
        }
    }
}

/// Where a key is in its lifecycle (SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Published, not yet signing.
    Next,
    /// Signing (one per algorithm in use).
    Current,
    /// Published, no longer signing; kept until its tokens expire.
    Retired,
    /// Removed from the JWKS at once; its tokens are refused.
    Revoked,
}

impl KeyState {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Current => "current",
            Self::Retired => "retired",
            Self::Revoked => "revoked",
        }
    }

    /// Whether keys in this state appear in the JWKS.
    pub fn is_published(self) -> bool {
        !matches!(self, Self::Revoked)
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyState {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "next" => Ok(Self::Next),
            "current" => Ok(Self::Current),
            "retired" => Ok(Self::Retired),
            "revoked" => Ok(Self::Revoked),
            other => Err(KeyError::Corrupt(format!("unknown key state {other:?}"))),
        }
    }
}

/// Errors of the key subsystem. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// An algorithm keyturn does not sign with.
    #[error("unsupported signing algorithm {0:?} (use RS256 or EdDSA)")]
    UnsupportedAlgorithm(String),
    /// Generating a key failed.
    #[error("key generation failed: {0}")]
    Generation(String),
    /// A sealed key could not be opened (wrong master key or tampering).
    #[error("cannot decrypt private key {kid}: wrong master key or corrupted data")]
    Unseal {
        /// The key that failed.
        kid: String,
    },
    /// A stored key is inconsistent.
    #[error("corrupt key data: {0}")]
    Corrupt(String),
    /// A manual rotation before the next key has been published long enough.
    #[error(
        "rotation too early: the next key may sign from {earliest} (use force to rotate anyway)"
    )]
    RotationTooEarly {
        /// RFC 3339 time from which rotation is allowed.
        earliest: String,
    },
    /// No such key (or already revoked).
    #[error("no such key")]
    NotFound,
    /// A key file to import is unusable.
    #[error("cannot import key: {0}")]
    Import(String),
    /// Other writers kept changing the keyset; try again.
    #[error("the keyset is being changed concurrently; try again")]
    Busy,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}
