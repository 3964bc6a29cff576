//! Access and refresh tokens: issuing them (SPEC §3), the OAuth grants,
//! revocation and introspection (`grants`), and validating access tokens on
//! the server's own routes.
//!
//! Validation pins the algorithm to the key (`kid` → key → alg), never to the
//! token's own header, and consults only in-memory views (keyring, user
//! status, client status, revoked `jti`s), never the database. Calls `keys`,
//! `accounts` and `store`.

mod grants;
mod revocation;

pub use grants::{GrantError, Introspection};
pub use revocation::RevocationView;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::accounts::{ClientView, FIRST_PARTY_CLIENT_ID, User, UserStatusView};
use crate::clock::SharedClock;
use crate::keys::{KeyError, KeyringHandle};
use crate::store::{RefreshTokenRow, Store, StoreError};

/// `client_id` of tokens issued by `POST /login`.
pub const FIRST_PARTY_CLIENT: &str = FIRST_PARTY_CLIENT_ID;
/// JWS `typ` of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Claims of a keyturn access token (SPEC §3).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Stable user id, or the client id for client tokens.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Expiry (Unix seconds).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Unique token id.
    pub jti: String,
    /// The OAuth client.
    pub client_id: String,
    /// Space-separated scopes, possibly empty.
    pub scope: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Username, for user tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// What a successful login or grant returns.
#[derive(Debug)]
pub struct IssuedTokens {
    /// The signed access token.
    pub access_token: String,
    /// Its lifetime in seconds.
    pub expires_in: u64,
    /// Opaque refresh token, when the grant gives one.
    pub refresh_token: Option<String>,
    /// Granted scope.
    pub scope: String,
}

/// Why a token was refused or could not be issued. The display text is safe
/// to return to clients: it never echoes the token or key material.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not a well-formed JWS with the expected claims.
    #[error("the token is malformed")]
    Malformed,
    /// The `kid` is not a published key.
    #[error("the token's signing key is unknown")]
    UnknownKey,
    /// The header's `alg` is not the key's algorithm.
    #[error("the token's algorithm is not allowed for its key")]
    WrongAlgorithm,
    /// The header's `typ` is not `at+jwt`.
    #[error("the token is not an access token")]
    WrongType,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// Past `exp` (plus leeway).
    #[error("the token has expired")]
    Expired,
    /// Before `nbf`/`iat` (minus leeway).
    #[error("the token is not yet valid")]
    NotYetValid,
    /// Another issuer.
    #[error("the token was issued by another issuer")]
    WrongIssuer,
    /// Another audience.
    #[error("the token is not meant for this audience")]
    WrongAudience,
    /// Revoked (logout, password change, disabled or deleted user).
    #[error("the token has been revoked")]
    Revoked,
    /// No key can sign right now.
    #[error("no signing key is available")]
    NoSigningKey,
    /// Signing failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Token settings.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// `iss`.
    pub issuer: String,
    /// Default `aud`.
    pub audience: String,
    /// Access token lifetime.
    pub access_ttl: Duration,
    /// Refresh token lifetime.
    pub refresh_ttl: Duration,
    /// Accepted clock skew.
    pub leeway: Duration,
}

/// Issues and validates tokens.
#[derive(Clone)]
pub struct Tokens {
    keyring: KeyringHandle,
    users: UserStatusView,
    clients: ClientView,
    revocations: RevocationView,
    store: Store,
    clock: SharedClock,
    policy: TokenPolicy,
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// 256 random bits, base64url: an opaque refresh token.
fn random_token() -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TokenError::Key(KeyError::Generation("no system randomness".into())))?;
    Ok(B64.encode(bytes))
}

/// The stored form of a refresh token: base64url SHA-256.
pub fn hash_refresh_token(token: &str) -> String {
    B64.encode(Sha256::digest(token.as_bytes()))
}

impl Tokens {
    /// Binds issuing and validation to the live keyring and the user and
    /// client views; the revocation view starts empty (see
    /// [`Tokens::reload_revocations`]).
    pub fn new(
        keyring: KeyringHandle,
        users: UserStatusView,
        clients: ClientView,
        store: Store,
        clock: SharedClock,
        policy: TokenPolicy,
    ) -> Self {
        Self {
            keyring,
            users,
            clients,
            revocations: RevocationView::default(),
            store,
            clock,
            policy,
        }
    }

    /// Issues an access token and a refresh token (new family) for a user.
    pub async fn issue_for_user(
        &self,
        user: &User,
        client_id: &str,
        scope: &str,
    ) -> Result<IssuedTokens, TokenError> {
        let mut now = self.clock.now();
        if now <= user.tokens_valid_after {
            // The user's tokens were revoked earlier in this very second, and
            // a token with this `iat` would be refused: wait for the next one.
            tokio::time::sleep(Duration::from_millis(1000)).await;
            now = self.clock.now().max(user.tokens_valid_after + 1);
        }
        let claims = AccessClaims {
            scope: scope.to_owned(),
            roles: user.roles.clone(),
            username: Some(user.username.clone()),
            ..self.new_claims(now, &user.id, client_id, None)
        };
        let access_token = self.sign(&claims)?;
        let refresh_token = random_token()?;
        self.store
            .insert_refresh_token(&RefreshTokenRow {
                token_hash: hash_refresh_token(&refresh_token),
                family_id: uuid::Uuid::new_v4().to_string(),
                user_id: Some(user.id.clone()),
                client_id: client_id.to_owned(),
                scope: scope.to_owned(),
                access_jti: claims.jti.clone(),
                issued_at: now,
                expires_at: now + secs(self.policy.refresh_ttl),
            })
            .await?;
        Ok(IssuedTokens {
            access_token,
            expires_in: self.policy.access_ttl.as_secs(),
            refresh_token: Some(refresh_token),
            scope: claims.scope,
        })
    }

    /// Claims of a new access token issued at `now` to `sub` through
    /// `client_id`: the policy's issuer and lifetime, a fresh `jti`, the
    /// given audience or the default one; no scope, roles or username yet.
    pub(crate) fn new_claims(
        &self,
        now: i64,
        sub: &str,
        client_id: &str,
        audience: Option<&str>,
    ) -> AccessClaims {
        AccessClaims {
            iss: self.policy.issuer.clone(),
            sub: sub.to_owned(),
            aud: audience.unwrap_or(&self.policy.audience).to_owned(),
            exp: now + secs(self.policy.access_ttl),
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            client_id: client_id.to_owned(),
            scope: String::new(),
            roles: Vec::new(),
            username: None,
        }
    }

    fn sign(&self, claims: &AccessClaims) -> Result<String, TokenError> {
        let keyring = self.keyring.get();
        let signer = keyring.signer().ok_or(TokenError::NoSigningKey)?;
        Ok(signer.sign_jwt(claims)?)
    }

    /// Validates an access token for the server's own routes: signature,
    /// type, issuer, audience, times, and that it has not been revoked.
    pub fn validate(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let claims = self.verify(token, true)?;
        self.check_status(&claims)?;
        Ok(claims)
    }

    /// As [`Tokens::validate`], for tokens meant for any audience (a
    /// client's tokens may name its own API): introspection.
    pub fn validate_any_audience(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let claims = self.verify(token, false)?;
        self.check_status(&claims)?;
        Ok(claims)
    }

    /// Refused when revoked: the `jti` is on the revocation list, the user
    /// is gone, disabled or changed their password after issue, or the
    /// client was deleted.
    fn check_status(&self, claims: &AccessClaims) -> Result<(), TokenError> {
        if self.revocations.is_revoked(&claims.jti) {
            return Err(TokenError::Revoked);
        }
        if claims.username.is_some() && !self.users.accepts(&claims.sub, claims.iat) {
            return Err(TokenError::Revoked);
        }
        let leeway = secs(self.policy.leeway);
        if claims.client_id != FIRST_PARTY_CLIENT
            && !self.clients.accepts(&claims.client_id, claims.iat, leeway)
        {
            return Err(TokenError::Revoked);
        }
        Ok(())
    }

    /// Checks what the token itself proves: a published key's signature,
    /// `typ`, issuer, (optionally) audience and times. Not its status.
    fn verify(&self, token: &str, check_audience: bool) -> Result<AccessClaims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE)
                || t.eq_ignore_ascii_case("application/at+jwt")
        });
        let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
        let keyring = self.keyring.get();
        let key = keyring.verifying_key(kid).ok_or(TokenError::UnknownKey)?;
        // The key decides the algorithm; the header must agree with it.
        if header.alg != key.alg.jwt_algorithm() {
            return Err(TokenError::WrongAlgorithm);
        }
        let mut validation = jsonwebtoken::Validation::new(key.alg.jwt_algorithm());
        // Time is checked below against the injectable clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.policy.issuer]);
        if check_audience {
            validation.set_audience(&[&self.policy.audience]);
        } else {
            validation.validate_aud = false;
        }
        let data = jsonwebtoken::decode::<AccessClaims>(token, &key.decoding, &validation)
            .map_err(|err| {
                use jsonwebtoken::errors::ErrorKind;
                match err.kind() {
                    ErrorKind::InvalidSignature => TokenError::BadSignature,
                    ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                    ErrorKind::InvalidAudience => TokenError::WrongAudience,
                    ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
                    _ => TokenError::Malformed,
                }
            })?;
        // Checked after the signature so forged headers learn nothing more.
        if !typ_ok {
            return Err(TokenError::WrongType);
        }
        let claims = data.claims;
        let now = self.clock.now();
        let leeway = secs(self.policy.leeway);
        if now > claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if now.saturating_add(leeway) < claims.nbf || now.saturating_add(leeway) < claims.iat {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}
