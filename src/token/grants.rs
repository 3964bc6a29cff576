//! The OAuth 2.0 operations on tokens: the `refresh_token` grant with
//! rotation and reuse detection, the `client_credentials` grant, revocation
//! (RFC 7009), introspection (RFC 7662) and logout.
//!
//! Client authentication happens before these are called (see
//! `accounts::Clients::authenticate`); they receive the authenticated
//! client, if any.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{
    AccessClaims, FIRST_PARTY_CLIENT, IssuedTokens, RefreshTokenRow, TokenError, Tokens,
    hash_refresh_token, random_token, secs,
};
use crate::accounts::{Client, GrantType, accepts_token, is_scope_token};
use crate::audit::{Actor, Entry, Event, Outcome};
use crate::store::{RefreshTokenState, RevokedJti, StoreError, UserRow};

/// Why a grant failed; the variants are RFC 6749 §5.2's error codes. The
/// display text is safe to return to clients.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// `invalid_grant`: the refresh token is unknown, spent, revoked,
    /// expired, presented by a registered client, or its user can no longer
    /// use it.
    #[error("{0}")]
    InvalidGrant(&'static str),
    /// `unauthorized_client`: the client may not use this grant type.
    #[error("this client is not allowed to use the {0} grant")]
    UnauthorizedClient(GrantType),
    /// `invalid_scope`: malformed, or beyond what may be granted.
    #[error("{0}")]
    InvalidScope(&'static str),
    /// Issuing failed (no signing key, signing error).
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What introspection (RFC 7662) found.
#[derive(Debug, Clone)]
pub enum Introspection {
    /// Not a token that is valid now (expired, revoked, unknown, forged,
    /// garbage): `{"active": false}` and nothing more.
    Inactive,
    /// A valid access token.
    Access(AccessClaims),
    /// A live refresh token (unspent, unrevoked, unexpired, user active).
    Refresh {
        /// The user's id.
        sub: String,
        /// The user's name.
        username: String,
        /// The client it was issued to.
        client_id: String,
        /// The scope it can grant.
        scope: String,
        /// Expiry.
        exp: i64,
        /// Issue time.
        iat: i64,
    },
}

/// The two kinds of token the endpoints accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    /// A JWT access token.
    Access,
    /// An opaque refresh token.
    Refresh,
}

impl TokenKind {
    /// Access tokens are JWS compact (three dot-separated parts); refresh
    /// tokens are base64url without dots, so the form decides, not the hint.
    fn of(token: &str) -> Self {
        if token.contains('.') {
            Self::Access
        } else {
            Self::Refresh
        }
    }
}

/// Parses a requested `scope` against what may be granted. An absent or
/// empty parameter means everything allowed (RFC 6749 §3.1: parameters
/// without a value are treated as omitted). Returns the sorted,
/// space-separated scope.
fn grant_scope(requested: Option<&str>, allowed: &BTreeSet<&str>) -> Result<String, GrantError> {
    let requested = requested.map(str::trim).filter(|s| !s.is_empty());
    let Some(requested) = requested else {
        return Ok(allowed.iter().copied().collect::<Vec<_>>().join(" "));
    };
    let mut granted = BTreeSet::new();
    for scope in requested.split(' ').filter(|s| !s.is_empty()) {
        if !is_scope_token(scope) {
            return Err(GrantError::InvalidScope("the scope parameter is malformed"));
        }
        if !allowed.contains(scope) {
            return Err(GrantError::InvalidScope(
                "the requested scope exceeds what this client or token may be granted",
            ));
        }
        granted.insert(scope);
    }
    Ok(granted.into_iter().collect::<Vec<_>>().join(" "))
}

impl Tokens {
    /// The revoked-`jti` view (kept current by the poller in `app`).
    pub fn revocations(&self) -> &super::RevocationView {
        &self.revocations
    }

    /// Catches the user and client cutoffs and the revoked `jti`s up with
    /// the status change log (only what was committed since the version
    /// each holds), and marks the views as current.
    pub async fn follow_status(&self) -> Result<(), StoreError> {
        let now = self.clock.now();
        self.users.log().catch_up(&self.store, now).await?;
        self.clients.log().catch_up(&self.store, now).await?;
        self.revocations.catch_up(&self.store, now).await?;
        self.mark_synced();
        Ok(())
    }

    /// The log version every status view has reached.
    pub fn status_version(&self) -> i64 {
        self.users
            .log()
            .version()
            .min(self.clients.log().version())
            .min(self.revocations.log().version())
    }

    /// Records that the store was just reached and the views are current
    /// with it.
    pub fn mark_synced(&self) {
        self.synced.mark();
    }

    /// How long since the views last heard from the store.
    pub(super) fn staleness(&self) -> std::time::Duration {
        self.synced.since()
    }

    /// Deletes the refresh tokens of dead families (revoked, expired, past
    /// their absolute lifetime, or with nothing live left). Returns how many
    /// token rows went.
    pub async fn prune_refresh_tokens(&self) -> Result<u64, StoreError> {
        let now = self.clock.now();
        self.store
            .prune_refresh_families(now, self.family_started_after(now))
            .await
    }

    /// Forgets status entries (cutoffs, revoked `jti`s) that refuse nothing
    /// unexpired any more, in memory and in the store. Returns how many rows
    /// the store dropped.
    pub async fn prune_status(&self) -> Result<u64, StoreError> {
        let now = self.clock.now();
        self.users.log().prune(now);
        self.clients.log().prune(now);
        self.revocations.prune(now);
        self.store.prune_status_changes(now).await
    }

    /// `grant_type=client_credentials`: a token for the client itself
    /// (`sub` = `client_id` = the client id, no user, no roles, no refresh
    /// token), scoped to `scope` if given, else to everything it may have.
    /// `client_ip`: for the audit trail.
    pub async fn client_credentials(
        &self,
        client: &Client,
        scope: Option<&str>,
        client_ip: Option<IpAddr>,
    ) -> Result<IssuedTokens, GrantError> {
        if !client.allows(GrantType::ClientCredentials) {
            return Err(GrantError::UnauthorizedClient(GrantType::ClientCredentials));
        }
        let allowed: BTreeSet<&str> = client.scopes.iter().map(String::as_str).collect();
        let scope = grant_scope(scope, &allowed)?;
        let mut now = self.clock.now();
        if now <= client.tokens_valid_after {
            // The secret was rotated earlier in this very second, and a
            // token with this `iat` would be refused: wait for the next one.
            tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
            now = self.clock.now().max(client.tokens_valid_after + 1);
        }
        let claims = AccessClaims {
            scope,
            ..self.new_claims(now, &client.id, &client.id, client.audience.as_deref())
        };
        let access_token = self.sign(&claims)?;
        let actor = Actor::new(client.id.clone(), client_ip);
        let entry = Entry::new(Event::TokenIssued, &actor, &client.id).detail(format!(
            "grant=client_credentials jti={} scope={}",
            claims.jti, claims.scope
        ));
        // No token leaves without its event logged and queued for the
        // trail (written within one group commit, docs/decisions.md); a
        // trail that is failing or behind makes the grant wait for the
        // commit, and a store that cannot take the event answers 503, as
        // a grant that writes would.
        self.audit.record_queued(entry).await?;
        Ok(IssuedTokens {
            access_token,
            expires_in: self.policy.access_ttl.as_secs(),
            refresh_token: None,
            scope: claims.scope,
        })
    }

    /// `grant_type=refresh_token`: spends the refresh token and returns a
    /// new access token and a new refresh token of the same family.
    ///
    /// A spent or revoked token revokes its whole family, including the
    /// newest member and the access tokens issued with them (reuse
    /// detection). Roles are read from the user again; a deleted or disabled
    /// user, or one whose tokens were revoked, gets `invalid_grant`.
    ///
    /// Only `/login` issues refresh tokens (`client_credentials` never does,
    /// RFC 6749 §4.4.3), so every refresh token is first-party and needs no
    /// client authentication; a registered client presenting one gets
    /// `invalid_grant` (or `unauthorized_client` if it may not use the
    /// grant at all).
    /// `csrf`: the cookie transport's CSRF binding claim for the new access
    /// token, if any; `client_ip`: for the audit trail.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        client: Option<&Client>,
        scope: Option<&str>,
        csrf: Option<String>,
        client_ip: Option<IpAddr>,
    ) -> Result<IssuedTokens, GrantError> {
        const UNKNOWN: &str = "the refresh token is invalid";
        if let Some(client) = client
            && !client.allows(GrantType::RefreshToken)
        {
            return Err(GrantError::UnauthorizedClient(GrantType::RefreshToken));
        }
        if refresh_token.is_empty() || refresh_token.len() > super::MAX_TOKEN_BYTES {
            return Err(GrantError::InvalidGrant(UNKNOWN));
        }
        let presented = hash_refresh_token(refresh_token);
        let Some(RefreshTokenState {
            row,
            used_at,
            revoked_at,
            family_started_at,
        }) = self.store.find_refresh_token(&presented).await?
        else {
            return Err(GrantError::InvalidGrant(UNKNOWN));
        };
        if used_at.is_some() || revoked_at.is_some() {
            self.revoke_family_after_reuse(&row, client_ip).await?;
            return Err(GrantError::InvalidGrant(
                "the refresh token was already used or has been revoked; its whole family is now revoked",
            ));
        }
        if client.is_some() || row.client_id != FIRST_PARTY_CLIENT {
            return Err(GrantError::InvalidGrant(
                "the refresh token was not issued to this client",
            ));
        }
        let now = self.clock.now();
        if row.expires_at <= now {
            return Err(GrantError::InvalidGrant("the refresh token has expired"));
        }
        if family_started_at <= self.family_started_after(now) {
            return Err(GrantError::InvalidGrant(
                "the session has reached its maximum lifetime; log in again",
            ));
        }
        let user = self.live_user(&row).await?.ok_or(GrantError::InvalidGrant(
            "the refresh token's user no longer exists, is disabled or has had their tokens revoked",
        ))?;
        let allowed: BTreeSet<&str> = row.scope.split(' ').filter(|s| !s.is_empty()).collect();
        let scope = grant_scope(scope, &allowed)?;
        let claims = AccessClaims {
            scope,
            roles: user.roles.clone(),
            username: Some(user.username.clone()),
            csrf,
            ..self.new_claims(now, &user.id, FIRST_PARTY_CLIENT, None)
        };
        let access_token = self.sign(&claims)?;
        let new_refresh = random_token()?;
        let child = RefreshTokenRow {
            token_hash: hash_refresh_token(&new_refresh),
            family_id: row.family_id.clone(),
            user_id: row.user_id.clone(),
            client_id: row.client_id.clone(),
            // The new refresh token can grant what the old one could
            // (RFC 6749 §6), even when this access token is narrower.
            scope: row.scope.clone(),
            access_jti: claims.jti.clone(),
            issued_at: now,
            expires_at: self.refresh_expiry(now, family_started_at),
            access_expires_at: claims.exp,
        };
        let actor = Actor::new(user.id.clone(), client_ip);
        let entry = Entry::new(Event::TokenIssued, &actor, &user.username).detail(format!(
            "grant=refresh_token jti={} family={} scope={}",
            claims.jti, row.family_id, claims.scope
        ));
        if !self
            .store
            .rotate_refresh_token(&presented, now, &child, &self.audit.prepare(&entry))
            .await?
        {
            // Another request spent it between our read and our update.
            self.revoke_family_after_reuse(&row, client_ip).await?;
            return Err(GrantError::InvalidGrant(
                "the refresh token was already used or has been revoked; its whole family is now revoked",
            ));
        }
        entry.log();
        Ok(IssuedTokens {
            access_token,
            expires_in: self.policy.access_ttl.as_secs(),
            refresh_token: Some(new_refresh),
            scope: claims.scope,
        })
    }

    /// The refresh token's user, if they may still use it.
    async fn live_user(&self, row: &RefreshTokenRow) -> Result<Option<UserRow>, GrantError> {
        let Some(user_id) = &row.user_id else {
            return Ok(None);
        };
        let user = self.store.find_user_by_id(user_id).await?;
        Ok(user.filter(|u| accepts_token(u.disabled, u.tokens_valid_after, row.issued_at)))
    }

    async fn revoke_family_after_reuse(
        &self,
        row: &RefreshTokenRow,
        client_ip: Option<IpAddr>,
    ) -> Result<(), GrantError> {
        // Whoever presented it is unknown; the family's user is the subject.
        let subject = row.user_id.as_deref().unwrap_or(&row.client_id);
        let entry = Entry::new(
            Event::RefreshTokenReuse,
            &Actor::new("unknown", client_ip),
            subject,
        )
        .outcome(Outcome::Refused)
        .detail(format!(
            "spent or revoked refresh token presented; family={} revoked",
            row.family_id
        ));
        self.revoke_family(&row.family_id, Some(&entry)).await?;
        entry.log();
        Ok(())
    }

    /// Revokes a refresh family and the access tokens issued with it, in
    /// the store (with `audit`, if any) and at once in this instance's view.
    async fn revoke_family(
        &self,
        family_id: &str,
        audit: Option<&Entry>,
    ) -> Result<(), GrantError> {
        let record = audit.map(|e| self.audit.prepare(e));
        let revoked = self
            .store
            .revoke_refresh_family(family_id, self.revocation_times(), record.as_ref())
            .await?;
        self.revocations.add(&revoked, secs(self.policy.leeway));
        Ok(())
    }

    async fn revoke_jti(&self, jti: &str, exp: i64, audit: &Entry) -> Result<(), GrantError> {
        let entry = RevokedJti {
            jti: jti.to_owned(),
            expires_at: exp,
        };
        self.store
            .revoke_access_token(&entry, secs(self.policy.leeway), &self.audit.prepare(audit))
            .await?;
        self.revocations
            .add(std::slice::from_ref(&entry), secs(self.policy.leeway));
        audit.log();
        Ok(())
    }

    /// RFC 7009 revocation by an authenticated client. An access token it
    /// was issued goes on the revocation list until it expires. Refresh
    /// tokens are all first-party (from `/login`; use logout for those), so
    /// a registered client never holds one. Unknown, invalid and expired
    /// tokens, and tokens issued to another client, are left alone: the
    /// endpoint answers 200 either way. Returns whether anything changed.
    /// `client_ip`: for the audit trail.
    pub async fn revoke(
        &self,
        token: &str,
        client: &Client,
        client_ip: Option<IpAddr>,
    ) -> Result<bool, GrantError> {
        if token.is_empty() || token.len() > super::MAX_TOKEN_BYTES {
            return Ok(false);
        }
        match TokenKind::of(token) {
            TokenKind::Refresh => Ok(false),
            TokenKind::Access => {
                // Signature and issuer must check out; status need not.
                let Ok(claims) = self.verify(token, false) else {
                    return Ok(false);
                };
                if claims.client_id != client.id {
                    return Ok(false);
                }
                let actor = Actor::new(client.id.clone(), client_ip);
                let entry = Entry::new(Event::TokenRevoked, &actor, &claims.sub)
                    .detail(format!("kind=access jti={}", claims.jti));
                self.revoke_jti(&claims.jti, claims.exp, &entry).await?;
                Ok(true)
            }
        }
    }

    /// RFC 7662 introspection: what the token is, if it is valid now.
    /// Access tokens are checked against the in-memory views only (any
    /// audience); refresh tokens are looked up in the store.
    pub async fn introspect(&self, token: &str) -> Result<Introspection, GrantError> {
        if token.is_empty() || token.len() > super::MAX_TOKEN_BYTES {
            return Ok(Introspection::Inactive);
        }
        match TokenKind::of(token) {
            TokenKind::Access => Ok(self
                .validate_any_audience(token)
                .map_or(Introspection::Inactive, Introspection::Access)),
            TokenKind::Refresh => {
                let Some(state) = self
                    .store
                    .find_refresh_token(&hash_refresh_token(token))
                    .await?
                else {
                    return Ok(Introspection::Inactive);
                };
                let row = state.row;
                let live = state.used_at.is_none()
                    && state.revoked_at.is_none()
                    && row.expires_at > self.clock.now();
                // Every refresh token is first-party (see `refresh`).
                if !live || row.client_id != FIRST_PARTY_CLIENT {
                    return Ok(Introspection::Inactive);
                }
                let Some(user) = self.live_user(&row).await? else {
                    return Ok(Introspection::Inactive);
                };
                Ok(Introspection::Refresh {
                    sub: user.id,
                    username: user.username,
                    client_id: row.client_id,
                    scope: row.scope,
                    exp: row.expires_at,
                    iat: row.issued_at,
                })
            }
        }
    }

    /// Logout: revokes this (validated) access token and the refresh family
    /// it was issued with, if any. `client_ip`: for the audit trail.
    pub async fn logout(
        &self,
        claims: &AccessClaims,
        client_ip: Option<IpAddr>,
    ) -> Result<(), GrantError> {
        let actor = Actor::new(claims.sub.clone(), client_ip);
        let subject = claims.username.as_deref().unwrap_or(&claims.sub);
        let entry = Entry::new(Event::Logout, &actor, subject)
            .detail(format!("client_id={} jti={}", claims.client_id, claims.jti));
        self.revoke_jti(&claims.jti, claims.exp, &entry).await?;
        if let Some(family) = self.store.refresh_family_of(&claims.jti).await? {
            self.revoke_family(&family, None).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_narrow_within_what_is_allowed() {
        let allowed: BTreeSet<&str> = ["read", "write"].into_iter().collect();
        assert_eq!(grant_scope(None, &allowed).unwrap(), "read write");
        assert_eq!(grant_scope(Some(""), &allowed).unwrap(), "read write");
        assert_eq!(
            grant_scope(Some("write read"), &allowed).unwrap(),
            "read write"
        );
        assert_eq!(
            grant_scope(Some("write  write"), &allowed).unwrap(),
            "write"
        );
        assert!(matches!(
            grant_scope(Some("read admin"), &allowed),
            Err(GrantError::InvalidScope(_))
        ));
        assert!(matches!(
            grant_scope(Some("re\"ad"), &allowed),
            Err(GrantError::InvalidScope(_))
        ));
        assert_eq!(grant_scope(None, &BTreeSet::new()).unwrap(), "");
    }

    #[test]
    fn token_kind_by_form() {
        assert_eq!(TokenKind::of("a.b.c"), TokenKind::Access);
        assert_eq!(TokenKind::of("abcDEF-_"), TokenKind::Refresh);
    }
}
