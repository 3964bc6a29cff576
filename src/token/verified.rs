//! Access tokens this instance has verified, so that the next request with
//! the same token skips the signature and the claims parse.
//!
//! A client uses one access token for many calls during its lifetime, and
//! the RS256 signature check is most of what a protected route costs
//! (13 µs of the 38 µs `/profile` took, docs/benchmarks.md). The cache
//! holds the claims of tokens that passed the whole check, keyed by the
//! SHA-256 of the token exactly as presented: any other bytes (a tampered
//! payload, another signature) are another key and go through the full
//! check. What can change for the same bytes is re-checked on every hit:
//! the time rules (`exp`, `nbf`, `iat` against now) by the caller, the
//! token's status (revocation, user and client cutoffs) after it, and the
//! keyring: every entry belongs to the keyring snapshot it was verified
//! under, so a rotation, a revoked key or a key dropped empties the cache.
//! Only tokens that passed are inserted, so garbage cannot fill it; it is
//! bounded, and a full cache drops an entry to take a new one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sha2::{Digest as _, Sha256};

use super::AccessClaims;
use crate::keys::Keyring;

/// Most tokens kept (about 400 bytes each).
pub const MAX_VERIFIED: usize = 10_000;

/// The SHA-256 of a token as presented.
pub type TokenKey = [u8; 32];

/// Claims of verified tokens, for one keyring snapshot at a time.
#[derive(Default)]
pub struct VerifiedTokens {
    state: RwLock<State>,
}

#[derive(Default)]
struct State {
    /// The snapshot the entries were verified under (held, so its address
    /// cannot be reused by another one).
    keyring: Option<Arc<Keyring>>,
    entries: HashMap<TokenKey, Verified>,
}

struct Verified {
    claims: AccessClaims,
    /// Verified with the check of this server's own audience (the check of
    /// any audience accepts it too; the converse does not hold).
    own_audience: bool,
}

impl std::fmt::Debug for VerifiedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedTokens").finish_non_exhaustive()
    }
}

impl VerifiedTokens {
    /// The cache key of `token`.
    pub fn key(token: &str) -> TokenKey {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The claims of the token with `key` if it passed the check under
    /// `keyring` (and, with `own_audience`, the audience check too).
    pub fn get(
        &self,
        key: &TokenKey,
        keyring: &Arc<Keyring>,
        own_audience: bool,
    ) -> Option<AccessClaims> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        if !state
            .keyring
            .as_ref()
            .is_some_and(|held| Arc::ptr_eq(held, keyring))
        {
            return None;
        }
        state
            .entries
            .get(key)
            .filter(|entry| entry.own_audience || !own_audience)
            .map(|entry| entry.claims.clone())
    }

    /// Remembers that the token with `key` passed the check under `keyring`.
    pub fn insert(
        &self,
        key: TokenKey,
        keyring: &Arc<Keyring>,
        own_audience: bool,
        claims: &AccessClaims,
    ) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if !state
            .keyring
            .as_ref()
            .is_some_and(|held| Arc::ptr_eq(held, keyring))
        {
            state.entries.clear();
            state.keyring = Some(Arc::clone(keyring));
        }
        if state.entries.len() >= MAX_VERIFIED && !state.entries.contains_key(&key) {
            let evicted = state.entries.keys().next().copied();
            if let Some(evicted) = evicted {
                state.entries.remove(&evicted);
            }
        }
        let own_audience = own_audience
            || state
                .entries
                .get(&key)
                .is_some_and(|entry| entry.own_audience);
        state.entries.insert(
            key,
            Verified {
                claims: claims.clone(),
                own_audience,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(jti: &str) -> AccessClaims {
        AccessClaims {
            iss: "https://issuer.example".into(),
            sub: "user-1".into(),
            aud: "keyturn".into(),
            exp: 2_000,
            iat: 1_000,
            nbf: 1_000,
            jti: jti.into(),
            client_id: "first-party".into(),
            scope: String::new(),
            roles: vec!["user".into()],
            username: Some("alice".into()),
            csrf: None,
        }
    }

    fn len(cache: &VerifiedTokens) -> usize {
        cache.state.read().unwrap().entries.len()
    }

    #[test]
    fn entries_belong_to_their_keyring_snapshot() {
        let cache = VerifiedTokens::default();
        let (first, second) = (Arc::new(Keyring::empty()), Arc::new(Keyring::empty()));
        let key = VerifiedTokens::key("a.b.c");
        cache.insert(key, &first, true, &claims("j1"));
        assert_eq!(cache.get(&key, &first, true).unwrap().jti, "j1");
        assert!(VerifiedTokens::key("a.b.d") != key);
        assert!(
            cache
                .get(&VerifiedTokens::key("a.b.d"), &first, true)
                .is_none()
        );
        // An equal keyring is still another snapshot: a rotation or a
        // revocation always makes a new one.
        assert!(cache.get(&key, &second, true).is_none());
        cache.insert(VerifiedTokens::key("x.y.z"), &second, true, &claims("j2"));
        assert_eq!(len(&cache), 1, "the first snapshot's entries are gone");
        assert!(cache.get(&key, &first, true).is_none());
    }

    #[test]
    fn a_token_checked_for_any_audience_does_not_pass_the_own_audience_check() {
        let cache = VerifiedTokens::default();
        let keyring = Arc::new(Keyring::empty());
        let key = VerifiedTokens::key("a.b.c");
        cache.insert(key, &keyring, false, &claims("j1"));
        assert!(cache.get(&key, &keyring, true).is_none());
        assert!(cache.get(&key, &keyring, false).is_some());
        cache.insert(key, &keyring, true, &claims("j1"));
        cache.insert(key, &keyring, false, &claims("j1"));
        assert!(
            cache.get(&key, &keyring, true).is_some(),
            "never downgraded"
        );
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = VerifiedTokens::default();
        let keyring = Arc::new(Keyring::empty());
        for n in 0..MAX_VERIFIED + 50 {
            let token = format!("t.{n}.s");
            cache.insert(VerifiedTokens::key(&token), &keyring, true, &claims(&token));
        }
        assert_eq!(len(&cache), MAX_VERIFIED);
        let newest = VerifiedTokens::key(&format!("t.{}.s", MAX_VERIFIED + 49));
        assert!(cache.get(&newest, &keyring, true).is_some());
    }
}
