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
pub use material::{
    ImportError, JwkKey, MaterialError, OkpCurve, PublicJwk, SignError, SigningKey,
};
pub use scheduler::KeyScheduler;
pub use seal::{MasterKey, MasterKeyError, MasterKeys, NEW_MASTER_KEY_FILE, SealedKey};

use std::fmt;
use std::str::FromStr;

/// A name (of a state or an algorithm) keyturn does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownName {
    /// What was being named (`key state`, `signing algorithm`).
    pub kind: &'static str,
    /// The name, truncated.
    pub value: String,
}

impl UnknownName {
    fn new(kind: &'static str, value: &str) -> Self {
        Self {
            kind,
            value: value.chars().take(16).collect(),
        }
    }
}

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
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RS256" => Ok(Self::Rs256),
            "EdDSA" => Ok(Self::EdDsa),
            other => Err(UnknownName::new("signing algorithm", other)),
        }
    }
}

/// Where a key is in its lifecycle (SPEC §4): the name of a
/// [`KeyLifecycle`] variant, for plans, listings and logs.
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
        match self {
            Self::Next | Self::Current | Self::Retired => true,
            Self::Revoked => false,
        }
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyState {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "next" => Ok(Self::Next),
            "current" => Ok(Self::Current),
            "retired" => Ok(Self::Retired),
            "revoked" => Ok(Self::Revoked),
            other => Err(UnknownName::new("key state", other)),
        }
    }
}

/// The state a key is generated in: it either signs at once (first start,
/// forced rotation without a successor) or waits as the successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NewKeyState {
    /// Published, waiting to sign.
    Next,
    /// Signing at once.
    Current,
}

impl From<NewKeyState> for KeyState {
    fn from(state: NewKeyState) -> Self {
        match state {
            NewKeyState::Next => Self::Next,
            NewKeyState::Current => Self::Current,
        }
    }
}

impl fmt::Display for NewKeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        KeyState::from(*self).fmt(f)
    }
}

/// A stored key's lifecycle. Each variant holds only what a key in that
/// state may hold: a revoked key has no private half, a current key always
/// has one and an activation time. Times are Unix seconds.
///
/// A revoked key with a private half does not compile:
///
/// ```compile_fail
/// use keyturn::keys::{KeyLifecycle, SealedKey};
/// let _ = KeyLifecycle::Revoked {
///     sealed: SealedKey::from_stored(vec![1]),
///     activated_at: None,
///     retired_at: None,
///     revoked_at: 0,
/// };
/// ```
///
/// while one without it does:
///
/// ```
/// use keyturn::keys::KeyLifecycle;
/// let revoked = KeyLifecycle::Revoked { activated_at: None, retired_at: None, revoked_at: 0 };
/// assert!(revoked.sealed().is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLifecycle {
    /// Published, not yet signing.
    Next {
        /// The sealed private half.
        sealed: SealedKey,
    },
    /// Signing.
    Current {
        /// The sealed private half.
        sealed: SealedKey,
        /// When it started signing.
        activated_at: i64,
    },
    /// Published, no longer signing.
    Retired {
        /// The sealed private half (destroyed with the row when pruned).
        sealed: SealedKey,
        /// When it started signing.
        activated_at: i64,
        /// When it stopped signing.
        retired_at: i64,
    },
    /// Out of the JWKS; its private half is destroyed.
    Revoked {
        /// When it started signing, if it ever did.
        activated_at: Option<i64>,
        /// When it stopped signing, if it was retired before.
        retired_at: Option<i64>,
        /// When it was revoked.
        revoked_at: i64,
    },
}

impl KeyLifecycle {
    /// A new key in `state`, generated (or imported) at `now`.
    pub fn new(state: NewKeyState, sealed: SealedKey, now: i64) -> Self {
        match state {
            NewKeyState::Next => Self::Next { sealed },
            NewKeyState::Current => Self::Current {
                sealed,
                activated_at: now,
            },
        }
    }

    /// The state's name.
    pub fn state(&self) -> KeyState {
        match self {
            Self::Next { .. } => KeyState::Next,
            Self::Current { .. } => KeyState::Current,
            Self::Retired { .. } => KeyState::Retired,
            Self::Revoked { .. } => KeyState::Revoked,
        }
    }

    /// The sealed private half; `None` only for a revoked key.
    pub fn sealed(&self) -> Option<&SealedKey> {
        match self {
            Self::Next { sealed } | Self::Current { sealed, .. } | Self::Retired { sealed, .. } => {
                Some(sealed)
            }
            Self::Revoked { .. } => None,
        }
    }

    /// When the key started signing.
    pub fn activated_at(&self) -> Option<i64> {
        match self {
            Self::Next { .. } => None,
            Self::Current { activated_at, .. } | Self::Retired { activated_at, .. } => {
                Some(*activated_at)
            }
            Self::Revoked { activated_at, .. } => *activated_at,
        }
    }

    /// When the key stopped signing.
    pub fn retired_at(&self) -> Option<i64> {
        match self {
            Self::Next { .. } | Self::Current { .. } => None,
            Self::Retired { retired_at, .. } => Some(*retired_at),
            Self::Revoked { retired_at, .. } => *retired_at,
        }
    }

    /// When the key was revoked.
    pub fn revoked_at(&self) -> Option<i64> {
        match self {
            Self::Revoked { revoked_at, .. } => Some(*revoked_at),
            _ => None,
        }
    }

    /// `next` → `current` at `now`; any other state is returned unchanged
    /// as the error.
    pub fn promote(self, now: i64) -> Result<Self, Self> {
        match self {
            Self::Next { sealed } => Ok(Self::Current {
                sealed,
                activated_at: now,
            }),
            other => Err(other),
        }
    }

    /// `current` → `retired` at `now`; any other state is returned
    /// unchanged as the error.
    pub fn retire(self, now: i64) -> Result<Self, Self> {
        match self {
            Self::Current {
                sealed,
                activated_at,
            } => Ok(Self::Retired {
                sealed,
                activated_at,
                retired_at: now,
            }),
            other => Err(other),
        }
    }

    /// Any published state → `revoked` at `now`, dropping the private half;
    /// an already revoked key is returned unchanged as the error.
    pub fn revoke(self, now: i64) -> Result<Self, Self> {
        if let Self::Revoked { .. } = self {
            return Err(self);
        }
        Ok(Self::Revoked {
            activated_at: self.activated_at(),
            retired_at: self.retired_at(),
            revoked_at: now,
        })
    }
}

/// A generic boxed cause, for failures of libraries whose error types are
/// not worth naming here (key generation).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Errors of the key subsystem. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Generating a key (or the randomness it needs) failed.
    #[error("key generation failed")]
    Generation(#[source] BoxError),
    /// Sealing a private key failed.
    #[error("cannot seal private key {kid}")]
    Seal {
        /// The key being sealed.
        kid: String,
    },
    /// A sealed key could not be opened (wrong master key or tampering).
    #[error("cannot decrypt private key {kid}: wrong master key or corrupted data")]
    Unseal {
        /// The key that failed.
        kid: String,
    },
    /// A stored key's material is unusable.
    #[error("corrupt key {kid}")]
    Corrupt {
        /// The key.
        kid: String,
        /// What is wrong with it.
        #[source]
        problem: MaterialError,
    },
    /// Signing a token failed.
    #[error("signing with key {kid} failed")]
    Signing {
        /// The signing key.
        kid: String,
        /// What failed.
        #[source]
        source: SignError,
    },
    /// A lifecycle change does not apply to the key's state (the plan was
    /// made from a keyset that differs from the one being changed).
    #[error("key {kid} cannot become {to}: it is {from}")]
    Transition {
        /// The key.
        kid: String,
        /// Its state.
        from: KeyState,
        /// The state it was to take.
        to: KeyState,
    },
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
    Import(ImportError),
    /// Other writers kept changing the keyset; try again.
    #[error("the keyset is being changed concurrently; try again")]
    Busy,
    /// The store's master key is none of this process's (it was changed by
    /// `keyturn keys rewrap` since this process started): it must not seal
    /// or change keys, and keeps serving what it has in memory.
    #[error(
        "the store's master key was changed (keyturn keys rewrap) and this process does not \
         hold the new one; restart it with the new master key (KEYTURN_MASTER_KEY or \
         KEYTURN_KEYS_DIR)"
    )]
    MasterKeyChanged,
    /// `keys rewrap` given the key the store is already sealed with.
    #[error("the new master key is already this store's master key; nothing done")]
    RewrapSameKey,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed() -> SealedKey {
        SealedKey::from_stored(vec![1])
    }

    #[test]
    fn transitions_follow_the_lifecycle() {
        let next = KeyLifecycle::new(NewKeyState::Next, sealed(), 1);
        assert_eq!(next, KeyLifecycle::Next { sealed: sealed() });
        let current = next.clone().promote(2).unwrap();
        assert_eq!(
            current,
            KeyLifecycle::Current {
                sealed: sealed(),
                activated_at: 2
            }
        );
        let retired = current.clone().retire(3).unwrap();
        assert_eq!(
            (
                retired.state(),
                retired.activated_at(),
                retired.retired_at()
            ),
            (KeyState::Retired, Some(2), Some(3))
        );
        let revoked = retired.clone().revoke(4).unwrap();
        assert_eq!(
            revoked,
            KeyLifecycle::Revoked {
                activated_at: Some(2),
                retired_at: Some(3),
                revoked_at: 4
            }
        );
        assert_eq!(revoked.sealed(), None);
        // What does not apply comes back unchanged.
        assert_eq!(current.clone().promote(5), Err(current.clone()));
        assert_eq!(next.clone().retire(5), Err(next.clone()));
        assert_eq!(revoked.clone().revoke(5), Err(revoked.clone()));
        assert_eq!(
            KeyLifecycle::new(NewKeyState::Current, sealed(), 7).activated_at(),
            Some(7)
        );
    }

    #[test]
    fn names_round_trip_and_unknown_ones_are_typed() {
        for state in [
            KeyState::Next,
            KeyState::Current,
            KeyState::Retired,
            KeyState::Revoked,
        ] {
            assert_eq!(state.as_str().parse::<KeyState>(), Ok(state));
        }
        for alg in [SigningAlg::Rs256, SigningAlg::EdDsa] {
            assert_eq!(alg.as_str().parse::<SigningAlg>(), Ok(alg));
        }
        let err = "Current".parse::<KeyState>().unwrap_err();
        assert_eq!(err.kind, "key state");
        assert_eq!(
            "HS256".parse::<SigningAlg>().unwrap_err().kind,
            "signing algorithm"
        );
    }
}
