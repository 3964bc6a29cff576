//! Access and refresh tokens: issuing them (SPEC §3), the OAuth grants,
//! revocation and introspection (`grants`), and validating access tokens on
//! the server's own routes.
//!
//! Validation pins the algorithm to the key (`kid` → key → alg), never to the
//! token's own header, and consults only in-memory views (keyring, user
//! status, client status, revoked `jti`s), never the database. Calls `keys`,
//! `accounts` and `store`.

mod grants;
mod login;
mod revocation;
mod verified;

pub use grants::{GrantError, Introspection};
pub use login::{Login, LoginError};
pub use revocation::RevocationView;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::{SecureRandom as _, SystemRandom};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::accounts::{CutoffView, FIRST_PARTY_CLIENT_ID, User};
use crate::audit::{Actor, AuditLog, Entry, Event};
use crate::clock::SharedClock;
use crate::keys::{KeyError, KeyringHandle};
use crate::store::{RefreshTokenRow, RevocationTimes, Store, StoreError};
use crate::verifier::{BuildError, Claims, Validator, VerifierBuilder, VerifyError};
use verified::VerifiedTokens;

/// `client_id` of tokens issued by `POST /login`.
pub const FIRST_PARTY_CLIENT: &str = FIRST_PARTY_CLIENT_ID;
/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Claims every keyturn access token must carry to be accepted by the
/// server's own routes (a resource server may require the same with
/// [`VerifierBuilder::required_claims`]).
pub const REQUIRED_CLAIMS: [&str; 7] = ["exp", "iat", "nbf", "sub", "iss", "aud", "jti"];

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
    /// Cookie transport only: base64url(SHA-256(CSRF value)), the value the
    /// `X-CSRF-Token` header must hash to (SPEC §5a).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf: Option<String>,
}

/// The non-standard claims the server reads back besides the verifier's.
#[derive(Debug, Default, Deserialize)]
struct ExtraClaims {
    #[serde(default)]
    csrf: Option<String>,
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
    /// Refused by the token check the server shares with the verifier
    /// library (signature, type, issuer, audience, times, shape).
    #[error(transparent)]
    Invalid(#[from] VerifyError),
    /// Revoked (logout, password change, disabled or deleted user).
    #[error("the token has been revoked")]
    Revoked,
    /// The user changed (password, disable, roles, delete) between the
    /// password check and the start of the session: the check no longer
    /// holds, so no session starts. Same text as a failed login.
    #[error("invalid username or password")]
    UserChanged,
    /// Whether the token was revoked cannot be known: this server has not
    /// reached the store for longer than it may serve from memory.
    #[error("token status is temporarily unavailable")]
    StatusUnknown,
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
    /// Refresh token lifetime (each token, from its issue).
    pub refresh_ttl: Duration,
    /// A refresh family's lifetime from its login, however often it is
    /// refreshed.
    pub refresh_absolute_ttl: Duration,
    /// A user's live refresh families (sessions, one per login) beyond this
    /// are revoked, oldest first, when they log in again: refreshing in a
    /// loop or logging in from a script cannot grow the store without
    /// bound (`KEYTURN_REFRESH_SESSIONS_PER_USER`).
    pub refresh_sessions_per_user: u32,
    /// Accepted clock skew.
    pub leeway: Duration,
    /// How long token checks may answer from views that have not heard
    /// from the store (`KEYTURN_MAX_STALENESS`).
    pub max_staleness: Duration,
}

/// A monotonic moment, read on every token check without a lock:
/// milliseconds since a fixed origin, in an atomic.
struct LastSync {
    origin: std::time::Instant,
    millis: std::sync::atomic::AtomicU64,
}

impl LastSync {
    fn now() -> Self {
        Self {
            origin: std::time::Instant::now(),
            millis: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn elapsed_millis(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn mark(&self) {
        self.millis
            .fetch_max(self.elapsed_millis(), std::sync::atomic::Ordering::Relaxed);
    }

    fn since(&self) -> Duration {
        let then = self.millis.load(std::sync::atomic::Ordering::Relaxed);
        Duration::from_millis(self.elapsed_millis().saturating_sub(then))
    }
}

/// Issues and validates tokens.
#[derive(Clone)]
pub struct Tokens {
    keyring: KeyringHandle,
    users: CutoffView,
    clients: CutoffView,
    revocations: RevocationView,
    /// When the views last heard from the store (see [`Tokens::mark_synced`]).
    synced: Arc<LastSync>,
    store: Store,
    clock: SharedClock,
    policy: TokenPolicy,
    audit: AuditLog,
    /// The shared token check, for tokens meant for this server's audience.
    own_audience: Validator,
    /// The same for any audience (introspection: a client's tokens may name
    /// its own API).
    any_audience: Validator,
    /// Tokens that passed the check, so a token used again skips its
    /// signature (see `token::verified`).
    verified: Arc<VerifiedTokens>,
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
    /// client cutoffs; the revocation view starts empty (see
    /// [`Tokens::follow_status`]).
    pub fn new(
        keyring: KeyringHandle,
        users: CutoffView,
        clients: CutoffView,
        store: Store,
        clock: SharedClock,
        policy: TokenPolicy,
    ) -> Result<Self, BuildError> {
        let rules = VerifierBuilder::default()
            .issuer(policy.issuer.clone())
            .leeway(policy.leeway)
            .required_claims(REQUIRED_CLAIMS)
            .max_token_size(MAX_TOKEN_BYTES);
        Ok(Self {
            keyring,
            users,
            clients,
            revocations: RevocationView::default(),
            synced: Arc::new(LastSync::now()),
            audit: AuditLog::new(store.clone(), clock.clone()),
            store,
            clock,
            own_audience: rules
                .clone()
                .audience([policy.audience.clone()])
                .build_validator()?,
            any_audience: rules.danger_accept_any_audience().build_validator()?,
            verified: Arc::default(),
            policy,
        })
    }

    /// Issues an access token and a refresh token (new family) for a user;
    /// `csrf` is the cookie transport's CSRF binding claim, if any.
    pub async fn issue_for_user(
        &self,
        user: &User,
        client_id: &str,
        scope: &str,
        csrf: Option<String>,
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
            csrf,
            ..self.new_claims(now, &user.id, client_id, None)
        };
        let access_token = self.sign(&claims)?;
        let refresh_token = random_token()?;
        let family = RefreshTokenRow {
            token_hash: hash_refresh_token(&refresh_token),
            family_id: uuid::Uuid::new_v4().to_string(),
            user_id: Some(user.id.clone()),
            client_id: client_id.to_owned(),
            scope: scope.to_owned(),
            access_jti: claims.jti.clone(),
            issued_at: now,
            expires_at: self.refresh_expiry(now, now),
            access_expires_at: claims.exp,
        };
        let revoked = self
            .store
            .start_refresh_family(
                &family,
                user.tokens_valid_after,
                i64::from(self.policy.refresh_sessions_per_user),
                self.family_started_after(now),
                self.revocation_times(),
            )
            .await?
            .ok_or(TokenError::UserChanged)?;
        if !revoked.is_empty() {
            self.revocations.add(&revoked, secs(self.policy.leeway));
            let actor = Actor::new(user.id.clone(), None);
            let entry = Entry::new(Event::SessionsRevoked, &actor, &user.username).detail(format!(
                "oldest sessions over the per-user cap revoked at login; {} access tokens",
                revoked.len()
            ));
            self.audit.record(entry).await;
        }
        Ok(IssuedTokens {
            access_token,
            expires_in: self.policy.access_ttl.as_secs(),
            refresh_token: Some(refresh_token),
            scope: claims.scope,
        })
    }

    /// Expiry of a refresh token issued at `now` in a family that began at
    /// `family_started_at`: its own lifetime, cut at the family's end.
    fn refresh_expiry(&self, now: i64, family_started_at: i64) -> i64 {
        let own = now.saturating_add(secs(self.policy.refresh_ttl));
        let family_end = family_started_at.saturating_add(secs(self.policy.refresh_absolute_ttl));
        own.min(family_end)
    }

    /// Families that began at or before this have reached their absolute
    /// lifetime.
    fn family_started_after(&self, now: i64) -> i64 {
        now.saturating_sub(secs(self.policy.refresh_absolute_ttl))
    }

    /// The times a family revocation at this moment uses.
    fn revocation_times(&self) -> RevocationTimes {
        let now = self.clock.now();
        RevocationTimes {
            now,
            // Tokens whose `exp` is at or before this are refused as expired.
            live_after: now - secs(self.policy.leeway) - 1,
            legacy_access_ttl: secs(self.policy.access_ttl),
            leeway: secs(self.policy.leeway),
        }
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
            csrf: None,
        }
    }

    fn sign(&self, claims: &AccessClaims) -> Result<String, TokenError> {
        let keyring = self.keyring.get();
        let signer = keyring.signer().ok_or(TokenError::NoSigningKey)?;
        Ok(signer.sign_jwt(claims)?)
    }

    /// Validates an access token for the server's own routes: the token
    /// check shared with the verifier library, over the live keyring, then
    /// that it has not been revoked.
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

    /// What the token itself proves, by the check shared with the verifier
    /// library over the live keyring; not its status.
    fn verify(&self, token: &str, check_audience: bool) -> Result<AccessClaims, TokenError> {
        let validator = if check_audience {
            &self.own_audience
        } else {
            &self.any_audience
        };
        let keyring = self.keyring.get();
        let now = self.clock.now();
        // Only a token the check could accept is worth hashing.
        let key = (token.len() <= MAX_TOKEN_BYTES).then(|| VerifiedTokens::key(token));
        if let Some(claims) = key
            .as_ref()
            .and_then(|key| self.verified.get(key, &keyring, check_audience))
        {
            // The same bytes passed before under this keyring: only time has
            // moved since (the status is checked by the caller).
            let time = |t: i64| u64::try_from(t).ok();
            validator.check_times(
                time(claims.exp),
                time(claims.nbf),
                time(claims.iat),
                u64::try_from(now).unwrap_or(0),
            )?;
            return Ok(claims);
        }
        let claims: Claims<ExtraClaims> = validator.validate(token, &*keyring, now)?;
        let claims = AccessClaims::try_from(claims)?;
        if let Some(key) = key {
            self.verified.insert(key, &keyring, check_audience, &claims);
        }
        Ok(claims)
    }

    /// Refused when revoked: the `jti` is on the revocation list, or the
    /// token predates its user's cutoff (deleted, disabled, password
    /// changed, role removed) or its client's (deleted, secret rotated).
    /// Unknowable when the views have not heard from the store for longer
    /// than `KEYTURN_MAX_STALENESS`: a revocation made elsewhere meanwhile
    /// would be missed, so the check fails closed.
    fn check_status(&self, claims: &AccessClaims) -> Result<(), TokenError> {
        if self.staleness() > self.policy.max_staleness {
            return Err(TokenError::StatusUnknown);
        }
        if self.revocations.is_revoked(&claims.jti) {
            return Err(TokenError::Revoked);
        }
        if claims.username.is_some() && !self.users.accepts(&claims.sub, claims.iat) {
            return Err(TokenError::Revoked);
        }
        if claims.client_id != FIRST_PARTY_CLIENT
            && !self.clients.accepts(&claims.client_id, claims.iat)
        {
            return Err(TokenError::Revoked);
        }
        Ok(())
    }
}

/// The validated claims in the server's own shape. The shared check has
/// made sure the required claims are there; what is left is keyturn's own
/// token format: one `aud`, a `client_id`, times that fit in an `i64`.
impl TryFrom<Claims<ExtraClaims>> for AccessClaims {
    type Error = VerifyError;

    fn try_from(claims: Claims<ExtraClaims>) -> Result<Self, VerifyError> {
        let time = |t: Option<u64>, missing| {
            t.and_then(|t| i64::try_from(t).ok())
                .ok_or(VerifyError::Malformed(missing))
        };
        let [aud] = <[String; 1]>::try_from(claims.aud)
            .map_err(|_| VerifyError::Malformed("keyturn tokens have exactly one `aud`"))?;
        Ok(AccessClaims {
            iss: claims.iss,
            sub: claims.sub,
            aud,
            exp: time(claims.exp, "missing required claim `exp`")?,
            iat: time(claims.iat, "missing required claim `iat`")?,
            nbf: time(claims.nbf, "missing required claim `nbf`")?,
            jti: claims
                .jti
                .ok_or(VerifyError::Malformed("missing required claim `jti`"))?,
            client_id: claims
                .client_id
                .ok_or(VerifyError::Malformed("missing claim `client_id`"))?,
            scope: claims.scope,
            roles: claims.roles,
            username: claims.username,
            csrf: claims.extra.csrf,
        })
    }
}
