//! Validate keyturn (or any standard issuer's) access tokens from a JWKS,
//! by `kid`, without a shared secret.
//!
//! A resource server builds one [`Verifier`] at start-up, from the issuer's
//! URL (RFC 8414 / OpenID discovery finds the `jwks_uri`) or straight from a
//! JWKS URL, and calls [`Verifier::verify`] for every request:
//!
//! ```no_run
//! use keyturn::verifier::{Claims, Verifier};
//!
//! # async fn run(token: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::builder()
//!     .issuer_url("http://127.0.0.1:8080")
//!     .audience(["keyturn"])
//!     .build()
//!     .await?;
//!
//! let claims: Claims = verifier.verify(token).await?;
//! println!("{} may {:?}", claims.sub, claims.scopes().collect::<Vec<_>>());
//! if !claims.has_role("admin") {
//!     // answer 403
//! }
//! # Ok(()) }
//! ```
//!
//! What it checks, in order: size (8 KiB by default), shape (three
//! base64url parts), header (`alg` allowed — never `none` or HMAC —, `typ`
//! is `at+jwt`, no `crit`), the key named by `kid` (and the header `alg` must
//! be that key's algorithm), the signature, then the claims (`exp`, `nbf`,
//! `iat` with leeway; `iss`; `aud`; required claims). `jku`, `jwk`, `x5u` and
//! `x5c` headers are never followed.
//!
//! Keys are cached by `kid`, refreshed in the background when the JWKS
//! `max-age` runs out; an unknown `kid` triggers at most one coalesced,
//! rate-limited refetch; cached keys keep working while the JWKS endpoint is
//! down, up to a maximum staleness. See `docs/verifier.md`.
//!
//! This module imports nothing from the rest of the crate: it is what the
//! `verifier` feature ships to resource servers.

#![deny(missing_docs)]

pub mod clock;
pub mod csrf;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod jwks_cache;
#[cfg(feature = "poem")]
pub mod poem;
mod validate;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{BuildError, VerifyError};
/// Signature algorithms, as used by [`VerifierBuilder::algorithms`].
pub use jsonwebtoken::Algorithm;
/// JSON Web Key types, for [`VerifierBuilder::build_from_jwks`].
pub use jsonwebtoken::jwk::{Jwk, JwkSet};
pub use validate::{KeySource, Validator, VerificationKey};

use jwks_cache::{CacheOptions, JwksCache};
use validate::{Policy, Required, is_hmac, normalise_typ};

/// Tokens longer than this are refused before any decoding, by default.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The claims of a verified access token.
///
/// The standard claims keyturn issues (SPEC §3, RFC 9068) are fields; any
/// other claims go to `extra`, typed by the caller: `Claims` (`E = ()`)
/// ignores them, `Claims<serde_json::Value>` keeps them all, and
/// `Claims<MyClaims>` deserializes them into your own struct (whose fields
/// must not reuse the standard names below — those are consumed here).
///
/// Absent string claims are empty and absent lists are empty; the
/// verifier's required claims (`exp`, `iat`, `sub` by default) are
/// guaranteed present.
///
/// ```
/// use keyturn::verifier::Claims;
///
/// #[derive(serde::Deserialize)]
/// struct Tenant { tenant: String }
///
/// let claims: Claims<Tenant> = serde_json::from_str(
///     r#"{"sub":"u1","aud":"api","scope":"reports:read orders:write",
///         "roles":["admin"],"tenant":"acme"}"#,
/// ).unwrap();
/// assert_eq!(claims.aud, ["api"]);
/// assert!(claims.has_scope("reports:read"));
/// assert!(claims.has_role("admin"));
/// assert_eq!(claims.extra.tenant, "acme");
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Claims<E = ()> {
    /// Issuer (`iss`).
    #[serde(default)]
    pub iss: String,
    /// Subject (`sub`): the user id, or the client id for client tokens.
    #[serde(default)]
    pub sub: String,
    /// Audiences (`aud`, a string or an array in the token).
    #[serde(default, deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    /// Expiry (`exp`), seconds since the Unix epoch.
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub exp: Option<u64>,
    /// Issued at (`iat`), seconds since the Unix epoch.
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub iat: Option<u64>,
    /// Not before (`nbf`), seconds since the Unix epoch.
    #[serde(
        default,
        deserialize_with = "numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub nbf: Option<u64>,
    /// Unique token id (`jti`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// The OAuth client the token was issued to (`first-party` for keyturn's `/login`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Space-separated scopes (may be empty); see [`Claims::scopes`].
    #[serde(default)]
    pub scope: String,
    /// Roles (empty when absent).
    #[serde(default)]
    pub roles: Vec<String>,
    /// The user's name, for user tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Every other claim, deserialized as `E`.
    #[serde(flatten)]
    pub extra: E,
}

impl<E> Claims<E> {
    /// The scopes, split on whitespace.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split_ascii_whitespace()
    }

    /// Whether `scope` contains `wanted` (exact, case-sensitive match).
    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scopes().any(|s| s == wanted)
    }

    /// Whether `roles` contains `wanted` (exact, case-sensitive match).
    pub fn has_role(&self, wanted: &str) -> bool {
        self.roles.iter().any(|r| r == wanted)
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    })
}

/// A JWT NumericDate: a non-negative integer, or a float (rounded down).
fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    struct Visitor;
    impl serde::de::Visitor<'_> for Visitor {
        type Value = Option<u64>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a non-negative NumericDate")
        }
        fn visit_u64<Er: serde::de::Error>(self, v: u64) -> Result<Self::Value, Er> {
            Ok(Some(v))
        }
        fn visit_i64<Er: serde::de::Error>(self, v: i64) -> Result<Self::Value, Er> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| Er::custom("negative NumericDate"))
        }
        fn visit_f64<Er: serde::de::Error>(self, v: f64) -> Result<Self::Value, Er> {
            if v.is_finite() && (0.0..1.0e19).contains(&v) {
                // Checked finite and in range just above, so the cast is exact enough.
                Ok(Some(v.floor() as u64))
            } else {
                Err(Er::custom("NumericDate out of range"))
            }
        }
        fn visit_unit<Er: serde::de::Error>(self) -> Result<Self::Value, Er> {
            Ok(None)
        }
    }
    d.deserialize_any(Visitor)
}

/// Where the keys come from.
#[derive(Debug, Clone)]
enum Source {
    None,
    Issuer(String),
    Jwks(String),
}

/// The expected audience.
#[derive(Debug, Clone)]
enum AudienceRule {
    /// `audience(..)`: at least one must be in `aud` (an empty list is a
    /// build error, never "any").
    AnyOf(Vec<String>),
    /// `danger_accept_any_audience()`.
    Any,
}

/// Which key-source URLs are trusted beyond the default (`https://`, or
/// `http://` on a loopback host; the discovered `jwks_uri` on the
/// issuer's origin).
#[derive(Debug, Clone, Copy, Default)]
struct UrlRules {
    plain_http: bool,
    foreign_jwks_origin: bool,
}

/// The expected issuer.
#[derive(Debug, Clone)]
enum IssuerRule {
    /// From discovery (the metadata's `issuer`), else required.
    Default,
    Exact(String),
    Any,
}

/// Configures and builds a [`Verifier`]; start with [`Verifier::builder`].
///
/// Defaults: algorithms RS256 and EdDSA, `typ` `at+jwt`, leeway 30 s,
/// required claims `exp`, `iat`, `sub`, tokens up to 8 KiB, JWKS fetch
/// timeout 5 s and size limit 1 MiB, refresh interval the JWKS `max-age`
/// clamped to 30 s – 1 h (300 s without one), unknown-`kid` refetch at
/// most every 10 s, failed fetches retried after `min` doubling up to
/// 5 min, cached keys usable up to 15 min past their `max-age` while the
/// JWKS endpoint fails, all times from the system clock (see
/// [`clock`](Self::clock)).
///
/// Refused at build time ([`BuildError`]): an `http://` issuer or JWKS URL
/// on a non-loopback host, a discovered `jwks_uri` on another origin than
/// the issuer, an empty audience list, a zero refresh bound — each unless
/// the loudly named `danger_…` method says otherwise, where one exists.
#[derive(Debug, Clone)]
#[must_use]
pub struct VerifierBuilder {
    source: Source,
    issuer: IssuerRule,
    audience: Option<AudienceRule>,
    urls: UrlRules,
    cookie_transport: bool,
    leeway: Duration,
    algorithms: Vec<Algorithm>,
    required: Vec<String>,
    typ: Option<String>,
    max_token_bytes: usize,
    cache: CacheOptions,
    client: Option<reqwest::Client>,
    clock: Arc<dyn Clock>,
}

impl Default for VerifierBuilder {
    fn default() -> Self {
        VerifierBuilder {
            source: Source::None,
            issuer: IssuerRule::Default,
            audience: None,
            urls: UrlRules::default(),
            cookie_transport: false,
            leeway: Duration::from_secs(30),
            algorithms: vec![Algorithm::RS256, Algorithm::EdDSA],
            required: vec!["exp".into(), "iat".into(), "sub".into()],
            typ: Some("at+jwt".into()),
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            cache: CacheOptions::default(),
            client: None,
            clock: Arc::new(SystemClock),
        }
    }
}

impl VerifierBuilder {
    /// Trust the issuer at this URL: its RFC 8414 metadata
    /// (`/.well-known/oauth-authorization-server`, then OpenID's
    /// `/.well-known/openid-configuration`) gives the `jwks_uri`, and its
    /// `issuer` becomes the expected `iss` unless [`issuer`](Self::issuer)
    /// says otherwise.
    pub fn issuer_url(mut self, url: impl Into<String>) -> Self {
        self.source = Source::Issuer(url.into());
        self
    }

    /// Fetch keys from this JWKS URL directly (no discovery); then
    /// [`issuer`](Self::issuer) is required.
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.source = Source::Jwks(url.into());
        self
    }

    /// The exact `iss` tokens must carry.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = IssuerRule::Exact(issuer.into());
        self
    }

    /// Accept any `iss`. Only for a JWKS that a single issuer uses.
    pub fn danger_accept_any_issuer(mut self) -> Self {
        self.issuer = IssuerRule::Any;
        self
    }

    /// The audiences this resource server answers to: a token is accepted
    /// when its `aud` names at least one of them. An empty list (or an empty
    /// name) is a build error, never "any audience".
    pub fn audience<I, S>(mut self, audiences: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.audience = Some(AudienceRule::AnyOf(
            audiences.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// Accept tokens for any audience (RFC 9068 says resource servers must
    /// check `aud`; use only when the issuer serves this one API).
    pub fn danger_accept_any_audience(mut self) -> Self {
        self.audience = Some(AudienceRule::Any);
        self
    }

    /// Accept `http://` issuer, JWKS and discovered `jwks_uri` URLs on any
    /// host. Without it only loopback hosts (`127.0.0.0/8`, `::1`,
    /// `localhost`) may be plain HTTP: over plain HTTP anyone on the path
    /// can swap the keys and forge every token.
    pub fn danger_accept_plain_http(mut self) -> Self {
        self.urls.plain_http = true;
        self
    }

    /// Accept a discovered `jwks_uri` on another origin (scheme, host,
    /// port) than the issuer URL. By default it must share the issuer's
    /// origin, so metadata that points elsewhere is refused.
    pub fn danger_accept_jwks_on_other_origin(mut self) -> Self {
        self.urls.foreign_jwks_origin = true;
        self
    }

    /// poem integration: also take the access token from the
    /// `keyturn_access` cookie, with the CSRF rule for unsafe methods (see
    /// [`poem::BearerAuth::cookie_transport`](crate::verifier::poem)).
    /// Applies to the extractor and every middleware using this verifier.
    pub fn cookie_transport(mut self) -> Self {
        self.cookie_transport = true;
        self
    }

    /// Clock skew accepted on `exp`, `nbf` and `iat` (whole seconds).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Allowed signature algorithms (default RS256 and EdDSA). `none` cannot
    /// be expressed and HMAC algorithms are dropped: a JWKS verifier never
    /// accepts shared-secret signatures.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Claims that must be present: any of `exp`, `iat`, `nbf`, `sub`,
    /// `iss`, `aud`, `jti` (default `exp`, `iat`, `sub`). `iss` and `aud`
    /// are always checked when an issuer/audience is expected.
    pub fn required_claims<I, S>(mut self, claims: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.required = claims.into_iter().map(Into::into).collect();
        self
    }

    /// The header `typ` tokens must carry (default `at+jwt`, RFC 9068; the
    /// `application/` prefix and letter case are ignored). `None` skips the
    /// check, for issuers that send plain `JWT` access tokens.
    pub fn typ(mut self, typ: Option<&str>) -> Self {
        self.typ = typ.map(|t| normalise_typ(t).to_owned());
        self
    }

    /// Refuse tokens longer than this many bytes before decoding (default 8 KiB).
    pub fn max_token_size(mut self, bytes: usize) -> Self {
        self.max_token_bytes = bytes;
        self
    }

    /// Timeout of each discovery or JWKS request (default 5 s).
    pub fn http_timeout(mut self, timeout: Duration) -> Self {
        self.cache.http_timeout = timeout;
        self
    }

    /// Largest accepted discovery or JWKS response body (default 1 MiB).
    pub fn max_jwks_size(mut self, bytes: usize) -> Self {
        self.cache.max_body_bytes = bytes;
        self
    }

    /// Bounds of the background refresh interval: the JWKS `max-age` is
    /// clamped to `[min, max]` (default 30 s – 1 h). `min` is also the first
    /// retry interval after a failed fetch, doubling on each further failure
    /// up to 5 min (or `max`, if lower). Zero is a build error: it would
    /// refetch as often as the refresher looks.
    pub fn refresh_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.cache.min_refresh = min;
        self.cache.max_refresh = max;
        self
    }

    /// Minimum time between two refetches caused by unknown `kid`s (default
    /// 10 s). Zero is a build error: every token with a made-up `kid` would
    /// then cost the issuer a JWKS fetch (single-flight coalesces only the
    /// ones that arrive together).
    pub fn unknown_kid_cooldown(mut self, cooldown: Duration) -> Self {
        self.cache.unknown_kid_cooldown = cooldown;
        self
    }

    /// How long past their `max-age` cached keys keep working while the JWKS
    /// endpoint fails (default 15 min); after that every verification fails
    /// with [`VerifyError::JwksUnavailable`]. This bounds how long a key the
    /// issuer revoked can outlive the revocation when fetches fail or are
    /// blocked: at most the refresh interval plus this.
    pub fn max_staleness(mut self, staleness: Duration) -> Self {
        self.cache.max_staleness = staleness;
        self
    }

    /// Use this HTTP client (proxies, custom roots…) instead of a default one.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Read every time from this clock instead of the system clock: token
    /// times (`exp`, `nbf`, `iat`) and the JWKS cache's (`max-age`
    /// freshness, maximum staleness, unknown-`kid` cooldown, retry after a
    /// failed fetch). Tests move a [`ManualClock`] instead of sleeping; the
    /// background refresh notices a moved clock within a second.
    ///
    /// The cache counts in the clock's whole seconds: the `Duration`
    /// options ([`refresh_bounds`](Self::refresh_bounds),
    /// [`unknown_kid_cooldown`](Self::unknown_kid_cooldown),
    /// [`max_staleness`](Self::max_staleness)) are rounded up to whole
    /// seconds (500 ms acts as 1 s; zero stays zero).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Discover the issuer if needed, fetch the JWKS once and start the
    /// background refresh (on the current tokio runtime).
    ///
    /// Fails if the metadata or the JWKS cannot be fetched now, so a
    /// misconfiguration shows at start-up.
    pub async fn build(self) -> Result<Verifier, BuildError> {
        let client = match &self.client {
            Some(c) => c.clone(),
            None => default_client(&self.cache)?,
        };
        if matches!(self.source, Source::None) {
            return Err(BuildError::MissingKeySource);
        }
        // The options are checked before any request goes out (discovery
        // will supply the issuer, so a placeholder stands in for it here).
        self.policy(matches!(self.source, Source::Issuer(_)).then(String::new))?;
        let (jwks_url, discovered_issuer) = match &self.source {
            Source::None => return Err(BuildError::MissingKeySource),
            Source::Jwks(url) => (check_url(url, self.urls)?.to_string(), None),
            Source::Issuer(url) => {
                let (issuer, jwks) = discover(&client, url, &self.cache, self.urls).await?;
                (jwks, Some(issuer))
            }
        };
        let validator = Validator::new(self.policy(discovered_issuer)?);
        let cache = JwksCache::fetch_new(
            client,
            jwks_url,
            self.cache.clone(),
            Arc::clone(&self.clock),
        )
        .await
        .map_err(|e| BuildError::Jwks(e.to_string()))?;
        let cache = Arc::new(cache);
        let refresher = jwks_cache::spawn_refresher(&cache);
        Ok(Verifier {
            inner: Arc::new(Inner {
                validator,
                cache,
                clock: self.clock,
                refresher,
                cookie_transport: self.cookie_transport,
            }),
        })
    }

    /// Build over a fixed key set: no HTTP, no refresh (tests, benches,
    /// offline tools, keys distributed by other means). Needs
    /// [`issuer`](Self::issuer) and [`audience`](Self::audience).
    ///
    /// ```
    /// use keyturn::verifier::{JwkSet, Verifier};
    ///
    /// let jwks: JwkSet = serde_json::from_str(r#"{"keys":[{"kty":"OKP","crv":"Ed25519",
    ///     "x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"k1","use":"sig"}]}"#)?;
    /// let verifier = Verifier::builder()
    ///     .issuer("https://auth.example.com")
    ///     .audience(["api"])
    ///     .build_from_jwks(&jwks)?;
    /// assert_eq!(verifier.key_ids(), ["k1"]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build_from_jwks(self, jwks: &JwkSet) -> Result<Verifier, BuildError> {
        let validator = self.build_validator()?;
        let cache = JwksCache::from_static(jwks, Arc::clone(&self.clock))
            .map_err(|e| BuildError::Jwks(e.to_string()))?;
        Ok(Verifier {
            inner: Arc::new(Inner {
                validator,
                cache: Arc::new(cache),
                clock: self.clock,
                refresher: None,
                cookie_transport: self.cookie_transport,
            }),
        })
    }

    /// Only the rules, for a caller that holds its own keys (a
    /// [`KeySource`]) and its own clock: keyturn's own routes validate this
    /// way over the server's keyring. Needs [`issuer`](Self::issuer) and
    /// [`audience`](Self::audience); the key-source and fetch options are
    /// not used.
    pub fn build_validator(&self) -> Result<Validator, BuildError> {
        Ok(Validator::new(self.policy(None)?))
    }

    fn policy(&self, discovered_issuer: Option<String>) -> Result<Policy, BuildError> {
        let issuer = match (&self.issuer, discovered_issuer) {
            (IssuerRule::Exact(iss), _) => Some(iss.clone()),
            (IssuerRule::Any, _) => None,
            (IssuerRule::Default, Some(iss)) => Some(iss),
            (IssuerRule::Default, None) => return Err(BuildError::MissingIssuer),
        };
        let audiences = match &self.audience {
            None => return Err(BuildError::MissingAudience),
            Some(AudienceRule::Any) => Vec::new(),
            Some(AudienceRule::AnyOf(list)) if list.is_empty() => {
                return Err(BuildError::EmptyAudience);
            }
            Some(AudienceRule::AnyOf(list)) if list.iter().any(|a| a.trim().is_empty()) => {
                return Err(BuildError::InvalidOption(
                    "audience: an audience name is empty".into(),
                ));
            }
            Some(AudienceRule::AnyOf(list)) => list.clone(),
        };
        let mut algorithms = Vec::new();
        for alg in &self.algorithms {
            if is_hmac(*alg) {
                tracing::warn!(
                    ?alg,
                    "HMAC algorithms are never accepted by a JWKS verifier"
                );
            } else if !algorithms.contains(alg) {
                algorithms.push(*alg);
            }
        }
        if algorithms.is_empty() {
            return Err(BuildError::InvalidOption(
                "algorithms: no asymmetric algorithm allowed".into(),
            ));
        }
        if self.max_token_bytes == 0 {
            return Err(BuildError::InvalidOption(
                "max_token_size must be positive".into(),
            ));
        }
        if self.cache.min_refresh.is_zero() || self.cache.max_refresh.is_zero() {
            return Err(BuildError::InvalidOption(
                "refresh_bounds: zero would refetch the JWKS as often as it is looked at".into(),
            ));
        }
        if self.cache.unknown_kid_cooldown.is_zero() {
            return Err(BuildError::InvalidOption(
                "unknown_kid_cooldown: zero would refetch the JWKS for every token with an unknown kid"
                    .into(),
            ));
        }
        if self.cache.min_refresh > self.cache.max_refresh {
            return Err(BuildError::InvalidOption(
                "refresh_bounds: min is greater than max".into(),
            ));
        }
        Ok(Policy {
            issuer,
            audiences,
            leeway: self.leeway.as_secs(),
            algorithms,
            required: Required::parse(&self.required)?,
            typ: self.typ.clone(),
            max_token_bytes: self.max_token_bytes,
        })
    }
}

/// A key-source URL we may fetch: `https://`, or `http://` on a loopback
/// host (or anywhere, with `danger_accept_plain_http`).
fn check_url(url: &str, rules: UrlRules) -> Result<reqwest::Url, BuildError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| BuildError::InvalidOption(format!("`{url}` is not a URL: {e}")))?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if rules.plain_http || is_loopback(&parsed) => Ok(parsed),
        "http" => Err(BuildError::InsecureUrl(format!(
            "`{url}` is plain HTTP to a non-loopback host (use https://, or danger_accept_plain_http())"
        ))),
        _ => Err(BuildError::InvalidOption(format!(
            "`{url}` is not an http(s) URL"
        ))),
    }
}

/// `127.0.0.0/8`, `::1` or `localhost` (the only hosts where plain HTTP
/// cannot be read or changed on the way).
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// At most 3 redirects, each to the origin of the request it answers (a
/// JWKS or metadata request is never sent to another host, nor downgraded
/// from https); any other redirect is not followed, and its 3xx fails the
/// fetch.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt
            .previous()
            .last()
            .is_some_and(|from| from.origin() == attempt.url().origin());
        if same_origin && attempt.previous().len() <= 3 {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

fn default_client(opts: &CacheOptions) -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .timeout(opts.http_timeout)
        .connect_timeout(opts.http_timeout)
        .redirect(redirect_policy())
        .user_agent(concat!("keyturn-verifier/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| BuildError::InvalidOption(format!("HTTP client: {e}")))
}

/// RFC 8414 then OpenID discovery; returns (issuer, jwks_uri).
async fn discover(
    client: &reqwest::Client,
    issuer_url: &str,
    opts: &CacheOptions,
    rules: UrlRules,
) -> Result<(String, String), BuildError> {
    #[derive(Deserialize)]
    struct Metadata {
        issuer: String,
        jwks_uri: String,
    }
    let base = check_url(issuer_url, rules)?;
    let path = base.path().trim_end_matches('/');
    let mut rfc8414 = base.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    let mut oidc = base.clone();
    oidc.set_path(&format!("{path}/.well-known/openid-configuration"));
    let mut last_error = String::new();
    for url in [rfc8414, oidc] {
        let attempt = async {
            let mut response = client
                .get(url.clone())
                .timeout(opts.http_timeout)
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("HTTP status {}", response.status().as_u16()));
            }
            let body = jwks_cache::read_limited(&mut response, opts.max_body_bytes)
                .await
                .map_err(|e| e.to_string())?;
            serde_json::from_slice::<Metadata>(&body).map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(meta) => {
                // RFC 8414 §3.3: the metadata must be about the issuer we asked for.
                if meta.issuer.trim_end_matches('/') != issuer_url.trim_end_matches('/') {
                    return Err(BuildError::Discovery(format!(
                        "{url} names issuer `{}`, not `{issuer_url}`",
                        meta.issuer
                    )));
                }
                let jwks = check_url(&meta.jwks_uri, rules)
                    .map_err(|e| BuildError::Discovery(format!("jwks_uri: {e}")))?;
                if !rules.foreign_jwks_origin && jwks.origin() != base.origin() {
                    return Err(BuildError::Discovery(format!(
                        "jwks_uri `{}` is not on the issuer's origin (danger_accept_jwks_on_other_origin() allows it)",
                        meta.jwks_uri
                    )));
                }
                return Ok((meta.issuer, meta.jwks_uri));
            }
            Err(e) => last_error = format!("{url}: {e}"),
        }
    }
    Err(BuildError::Discovery(last_error))
}

struct Inner {
    validator: Validator,
    cache: Arc<JwksCache>,
    clock: Arc<dyn Clock>,
    refresher: Option<tokio::task::AbortHandle>,
    /// Whether the poem integration also reads the `keyturn_access` cookie.
    #[cfg_attr(not(feature = "poem"), allow(dead_code))]
    cookie_transport: bool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = &self.refresher {
            task.abort();
        }
    }
}

/// Validates access tokens against an issuer's JWKS.
///
/// Cheap to clone (one `Arc`): share one per issuer across the whole
/// server. Dropping the last clone stops the background refresh.
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("jwks_url", &self.inner.cache.url())
            .field("policy", self.inner.validator.policy())
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Start configuring a verifier.
    pub fn builder() -> VerifierBuilder {
        VerifierBuilder::default()
    }

    /// The JWKS URL keys come from (`None` for [`VerifierBuilder::build_from_jwks`]).
    pub fn jwks_url(&self) -> Option<&str> {
        self.inner.cache.url()
    }

    /// The expected `iss` (`None` if any issuer is accepted).
    pub fn issuer(&self) -> Option<&str> {
        self.inner.validator.policy().issuer.as_deref()
    }

    /// Whether both are clones of one verifier (the same keys and rules).
    pub fn same_as(&self, other: &Verifier) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The `kid`s of the keys currently cached.
    pub fn key_ids(&self) -> Vec<String> {
        self.inner.cache.key_ids()
    }

    /// Fetch the JWKS now (coalesced with any fetch in progress; ignores the
    /// unknown-`kid` cooldown). On failure the cached keys stay in use.
    pub async fn refresh(&self) -> Result<(), VerifyError> {
        match self.inner.cache.refresh_if_due(None).await {
            None => Ok(()),
            Some(reason) => Err(VerifyError::JwksUnavailable(reason)),
        }
    }

    /// Verify `token` (the compact JWS, without `Bearer `) and return its
    /// claims, the non-standard ones deserialized as `E`.
    ///
    /// ```no_run
    /// # use keyturn::verifier::{Claims, Verifier, VerifyError};
    /// # async fn f(verifier: Verifier, token: &str) {
    /// match verifier.verify::<()>(token).await {
    ///     Ok(claims) => println!("hello {}", claims.sub),
    ///     Err(VerifyError::Expired) => println!("log in again"),
    ///     Err(e) if e.is_unavailable() => println!("try later: {e}"),
    ///     Err(e) => println!("refused: {e}"),
    /// }
    /// # }
    /// ```
    pub async fn verify<E: DeserializeOwned>(&self, token: &str) -> Result<Claims<E>, VerifyError> {
        let Inner {
            validator,
            cache,
            clock,
            ..
        } = &*self.inner;
        let seen = cache.attempts();
        match validator.validate(token, &**cache, clock.now()) {
            Err(VerifyError::UnknownKey) if cache.can_refetch() => {}
            verdict => return verdict,
        }
        // A `kid` we have not seen: the issuer may have published a new key
        // since our last fetch. At most one coalesced, rate-limited refetch.
        let failed = cache.refresh_if_due(Some(seen)).await;
        match validator.validate(token, &**cache, clock.now()) {
            Err(VerifyError::UnknownKey) => Err(failed
                .map(VerifyError::JwksUnavailable)
                .unwrap_or(VerifyError::UnknownKey)),
            verdict => verdict,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
