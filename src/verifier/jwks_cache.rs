//! The JWKS cache: signing keys by `kid`, prepared once per fetch.
//!
//! Owns: fetching the JWKS (timeout, body-size limit, `ETag`), turning each
//! usable JWK into a prepared [`DecodingKey`] plus the one algorithm it may
//! verify, refreshing in the background when the `Cache-Control: max-age`
//! runs out (clamped between a floor and a ceiling), a single-flight,
//! rate-limited refetch when a token names an unknown `kid`, and
//! stale-if-error (cached keys keep working up to a maximum staleness while
//! the endpoint fails; each failed fetch is logged once).
//!
//! The hot path (a known `kid`) is a lock-free snapshot load, an `Arc`
//! clone, a short linear scan and one clock read: no allocation, no parsing,
//! no contention with a refresh in progress (the refresh builds the new key
//! set aside and swaps one `Arc`).
//!
//! Time: every window (freshness, staleness, the unknown-`kid` cooldown, the
//! retry interval) is measured on the injected [`Clock`], in its whole
//! seconds, so a test that moves one `ManualClock` moves the cache and the
//! token checks together. The `Duration` options are rounded *up* to whole
//! seconds (see [`secs`]). A clock that jumps backwards never panics (all
//! arithmetic saturates): it makes a refresh due at once and ends the
//! unknown-`kid` cooldown, so after one fetch every window runs from the
//! new time.
//!
//! Must not import anything from the rest of the crate but `super::clock`,
//! `super::error` and `super::validate`.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

use super::clock::Clock;
use super::error::VerifyError;
use super::validate::{KeySource, MAX_KID_LEN, VerificationKey};

/// At most this many keys are kept from one JWKS (real ones hold 1–5).
pub(super) const MAX_KEYS: usize = 64;

/// The retry interval after failed fetches doubles from the `min` refresh
/// interval up to this (or the `max` refresh interval, if lower): a dead
/// endpoint is not hammered, and a recovered one is noticed within minutes.
const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(300);

/// Prepared keys with their `kid` (`None` for a JWK without one).
type Keys = Vec<(Option<Box<str>>, Arc<VerificationKey>)>;

/// One immutable generation of the key set. Times are the cache clock's
/// Unix seconds.
pub(crate) struct KeySet {
    keys: Keys,
    /// Refresh from this second on (`None`: a static set, never refreshed).
    fresh_until: Option<i64>,
    /// Refuse to use the keys from this second on (`None`: no limit).
    usable_until: Option<i64>,
    etag: Option<String>,
}

impl KeySet {
    fn find(&self, kid: Option<&str>) -> Option<&Arc<VerificationKey>> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|(k, _)| k.as_deref() == Some(kid))
                .map(|(_, e)| e),
            // A token without `kid` is accepted only when there is no choice.
            None if self.keys.len() == 1 => self.keys.first().map(|(_, e)| e),
            None => None,
        }
    }
}

/// A `Duration` option in whole seconds of the cache clock, rounded up (a
/// non-zero option never becomes "no wait at all"), saturating.
pub(crate) fn secs(duration: Duration) -> i64 {
    let whole = duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0));
    i64::try_from(whole).unwrap_or(i64::MAX)
}

/// Timings and limits of the cache (set through the builder).
#[derive(Debug, Clone)]
pub(crate) struct CacheOptions {
    pub(crate) http_timeout: Duration,
    pub(crate) max_body_bytes: usize,
    /// Floor of the refresh interval (and retry interval after a failure).
    pub(crate) min_refresh: Duration,
    /// Ceiling of the refresh interval.
    pub(crate) max_refresh: Duration,
    /// Refresh interval when the JWKS response has no `max-age`.
    pub(crate) default_refresh: Duration,
    /// Minimum time between two refetches triggered by unknown `kid`s.
    pub(crate) unknown_kid_cooldown: Duration,
    /// How long past their freshness cached keys keep working while the
    /// JWKS endpoint fails.
    pub(crate) max_staleness: Duration,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            http_timeout: Duration::from_secs(5),
            max_body_bytes: 1024 * 1024,
            min_refresh: Duration::from_secs(30),
            max_refresh: Duration::from_secs(3600),
            default_refresh: Duration::from_secs(300),
            unknown_kid_cooldown: Duration::from_secs(10),
            // A revoked key outlives its revocation by at most the refresh
            // interval plus this while fetches fail (or are blocked).
            max_staleness: Duration::from_secs(15 * 60),
        }
    }
}

/// Why a fetch failed (logged; shown to callers only as a short string).
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("unexpected HTTP status {0}")]
    Status(u16),
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    #[error("response is not a JSON Web Key Set: {0}")]
    NotJwks(String),
    #[error("JWKS has no usable signing key")]
    NoUsableKeys,
}

/// The HTTP side: a client and the JWKS URL.
struct Fetcher {
    client: reqwest::Client,
    url: String,
}

/// Keys by `kid`, refreshed from a JWKS URL (or static).
pub(crate) struct JwksCache {
    fetcher: Option<Fetcher>,
    opts: CacheOptions,
    /// Where every cache time comes from (the verifier's clock).
    clock: Arc<dyn Clock>,
    snapshot: ArcSwap<KeySet>,
    /// Completed fetch attempts (success or failure), for coalescing.
    attempts: AtomicU64,
    /// Fetch failures since the last success (the retry backoff).
    failures: AtomicU32,
    /// When the last fetch attempt started (the first: `fetch_new`; unused
    /// for a static set). Written only under `refresh`.
    last_attempt: AtomicI64,
    /// Held across a fetch: one fetch at a time (single flight).
    refresh: tokio::sync::Mutex<()>,
    /// Short description of the last fetch failure, `None` after a success.
    /// A plain mutex, never held across an `.await`.
    last_error: std::sync::Mutex<Option<String>>,
}

impl JwksCache {
    /// A cache over a fixed key set: never fetches, never goes stale.
    pub(crate) fn from_static(set: &JwkSet, clock: Arc<dyn Clock>) -> Result<Self, FetchError> {
        let keys = prepare_keys(set.keys.iter())?;
        Ok(JwksCache {
            fetcher: None,
            opts: CacheOptions::default(),
            clock,
            snapshot: ArcSwap::from_pointee(KeySet {
                keys,
                fresh_until: None,
                usable_until: None,
                etag: None,
            }),
            attempts: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            last_attempt: AtomicI64::new(0),
            refresh: tokio::sync::Mutex::new(()),
            last_error: std::sync::Mutex::new(None),
        })
    }

    /// Fetch the JWKS once; fails if it cannot be fetched or holds no usable key.
    pub(crate) async fn fetch_new(
        client: reqwest::Client,
        url: String,
        opts: CacheOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, FetchError> {
        let fetcher = Fetcher { client, url };
        let started = clock.now();
        let fetched = fetcher.fetch(None, &opts).await?;
        let now = clock.now();
        let set = match fetched {
            Fetched::Keys {
                keys,
                max_age,
                etag,
            } => make_set(keys, max_age, etag, now, &opts),
            // We sent no If-None-Match; treat a stray 304 as garbage.
            Fetched::NotModified { .. } => return Err(FetchError::Status(304)),
        };
        Ok(JwksCache {
            fetcher: Some(fetcher),
            opts,
            clock,
            snapshot: ArcSwap::from_pointee(set),
            attempts: AtomicU64::new(1),
            failures: AtomicU32::new(0),
            last_attempt: AtomicI64::new(started),
            refresh: tokio::sync::Mutex::new(()),
            last_error: std::sync::Mutex::new(None),
        })
    }

    /// The URL the keys come from (`None` for a static set).
    pub(crate) fn url(&self) -> Option<&str> {
        self.fetcher.as_ref().map(|f| f.url.as_str())
    }

    fn current(&self) -> Arc<KeySet> {
        self.snapshot.load_full()
    }

    fn replace(&self, set: KeySet) {
        self.snapshot.store(Arc::new(set));
    }

    /// The `kid`s currently cached (for diagnostics).
    pub(crate) fn key_ids(&self) -> Vec<String> {
        self.current()
            .keys
            .iter()
            .filter_map(|(k, _)| k.as_deref().map(str::to_owned))
            .collect()
    }

    /// Completed fetch attempts, read before a lookup so that a refetch for
    /// an unknown `kid` coalesces with any fetch finished in between.
    pub(crate) fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Acquire)
    }

    /// Whether an unknown `kid` may be looked up again (not a static set).
    pub(crate) fn can_refetch(&self) -> bool {
        self.fetcher.is_some()
    }

    fn last_error(&self) -> Option<String> {
        match self.last_error.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_last_error(&self, error: Option<String>) {
        match self.last_error.lock() {
            Ok(mut guard) => *guard = error,
            Err(poisoned) => *poisoned.into_inner() = error,
        }
    }

    fn unavailable(&self) -> VerifyError {
        VerifyError::JwksUnavailable(
            self.last_error()
                .unwrap_or_else(|| "cached keys are too old".to_owned()),
        )
    }

    /// Refetch now unless another caller did since `seen` (coalescing) or,
    /// for unknown-`kid` refetches (`seen` is `Some`), the cooldown has not
    /// passed. Returns the failure of the most recent attempt, if it failed.
    pub(crate) async fn refresh_if_due(&self, seen: Option<u64>) -> Option<String> {
        let fetcher = self.fetcher.as_ref()?;
        let guard = self.refresh.lock().await;
        if let Some(seen) = seen {
            if self.attempts.load(Ordering::Acquire) != seen {
                return self.last_error();
            }
            if self.in_cooldown(self.clock.now()) {
                return self.last_error();
            }
        }
        let old = self.current();
        self.last_attempt.store(self.clock.now(), Ordering::Release);
        let result = fetcher.fetch(old.etag.as_deref(), &self.opts).await;
        let now = self.clock.now();
        match result {
            Ok(Fetched::Keys {
                keys,
                max_age,
                etag,
            }) => {
                self.replace(make_set(keys, max_age, etag, now, &self.opts));
                tracing::debug!(url = %fetcher.url, "JWKS refreshed");
                self.set_last_error(None);
                self.failures.store(0, Ordering::Release);
            }
            Ok(Fetched::NotModified { max_age }) => {
                let keys = old.keys.clone();
                self.replace(make_set(keys, max_age, old.etag.clone(), now, &self.opts));
                tracing::debug!(url = %fetcher.url, "JWKS not modified");
                self.set_last_error(None);
                self.failures.store(0, Ordering::Release);
            }
            Err(error) => {
                tracing::warn!(
                    url = %fetcher.url,
                    %error,
                    "JWKS fetch failed; keeping the cached keys"
                );
                self.set_last_error(Some(error.to_string()));
                self.failures.fetch_add(1, Ordering::AcqRel);
            }
        }
        self.attempts.fetch_add(1, Ordering::AcqRel);
        drop(guard);
        self.last_error()
    }

    /// Whether an unknown-`kid` refetch must wait at `now`: the last attempt
    /// started less than the cooldown ago. A clock behind the last attempt
    /// (it jumped backwards) ends the cooldown.
    fn in_cooldown(&self, now: i64) -> bool {
        let last = self.last_attempt.load(Ordering::Acquire);
        now >= last && now.saturating_sub(last) < secs(self.opts.unknown_kid_cooldown)
    }

    /// Whether the background refresher should fetch at `now`: `None` for
    /// a static set (never). Due when the keys' freshness ran out, after
    /// the [`retry_backoff`](Self::retry_backoff) while fetches fail, and
    /// as soon as the clock is found behind the last attempt (it jumped
    /// backwards: that one fetch re-anchors the windows on the new time).
    fn refresh_due(&self, now: i64) -> Option<bool> {
        let fresh_until = self.current().fresh_until?;
        let last = self.last_attempt.load(Ordering::Acquire);
        if now < last {
            return Some(true);
        }
        let failures = self.failures.load(Ordering::Acquire);
        if failures > 0 {
            return Some(now.saturating_sub(last) >= self.retry_backoff(failures));
        }
        Some(now >= fresh_until)
    }

    /// Seconds to wait after `failures` consecutive failed fetches: the
    /// `min` refresh interval (never zero: the builder refuses it), doubled
    /// per further failure, capped at [`MAX_RETRY_BACKOFF`] or the `max`
    /// refresh interval, whichever is lower (never below `min`).
    pub(crate) fn retry_backoff(&self, failures: u32) -> i64 {
        let floor = secs(self.opts.min_refresh).max(1);
        let cap = secs(MAX_RETRY_BACKOFF.min(self.opts.max_refresh)).max(floor);
        let doublings = failures.saturating_sub(1).min(32);
        floor.saturating_mul(1i64 << doublings).min(cap)
    }
}

/// The cached keys, unless the cache is past its staleness limit. An
/// unknown `kid` is refetched by the caller
/// ([`Verifier::verify`](super::Verifier::verify)), not here.
impl KeySource for JwksCache {
    fn key(&self, kid: Option<&str>) -> Result<Arc<VerificationKey>, VerifyError> {
        let set = self.current();
        let entry = set.find(kid).ok_or(VerifyError::UnknownKey)?;
        // One clock read, only for a set that can go stale.
        if let Some(limit) = set.usable_until
            && self.clock.now() >= limit
        {
            return Err(self.unavailable());
        }
        Ok(Arc::clone(entry))
    }
}

/// Start the background refresher; it stops when the cache is dropped
/// (it only holds a `Weak`, never across a sleep), and the returned handle
/// aborts it early.
///
/// It does not sleep until the refresh is due: the clock is injected and
/// may be moved (a test's `ManualClock`, a system clock stepped by NTP), so
/// it looks at the clock every [`Clock::poll_interval`] of real time (1 s
/// for the system clock, 5 ms for a `ManualClock`) and fetches once a
/// refresh is due. In production that costs one clock read and one
/// snapshot load per second; it also means at most one background fetch
/// per poll interval, whatever the refresh bounds.
pub(crate) fn spawn_refresher(cache: &Arc<JwksCache>) -> Option<tokio::task::AbortHandle> {
    cache.fetcher.as_ref()?;
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let weak: Weak<JwksCache> = Arc::downgrade(cache);
    let poll = cache.clock.poll_interval();
    let task = runtime.spawn(async move {
        loop {
            tokio::time::sleep(poll).await;
            let Some(cache) = weak.upgrade() else { return };
            match cache.refresh_due(cache.clock.now()) {
                None => return,
                Some(true) => {
                    cache.refresh_if_due(None).await;
                }
                Some(false) => {}
            }
        }
    });
    Some(task.abort_handle())
}

fn make_set(
    keys: Keys,
    max_age: Option<Duration>,
    etag: Option<String>,
    now: i64,
    opts: &CacheOptions,
) -> KeySet {
    let ttl = max_age
        .unwrap_or(opts.default_refresh)
        .clamp(opts.min_refresh, opts.max_refresh.max(opts.min_refresh));
    let fresh_until = now.saturating_add(secs(ttl));
    KeySet {
        keys,
        fresh_until: Some(fresh_until),
        usable_until: Some(fresh_until.saturating_add(secs(opts.max_staleness))),
        etag,
    }
}

enum Fetched {
    Keys {
        keys: Keys,
        max_age: Option<Duration>,
        etag: Option<String>,
    },
    NotModified {
        max_age: Option<Duration>,
    },
}

impl Fetcher {
    async fn fetch(&self, etag: Option<&str>, opts: &CacheOptions) -> Result<Fetched, FetchError> {
        let mut request = self
            .client
            .get(&self.url)
            .timeout(opts.http_timeout)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(etag) = etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let mut response = request.send().await?;
        let max_age = cache_max_age(response.headers());
        if response.status() == reqwest::StatusCode::NOT_MODIFIED && etag.is_some() {
            return Ok(Fetched::NotModified { max_age });
        }
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let new_etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 256)
            .map(str::to_owned);
        let body = read_limited(&mut response, opts.max_body_bytes).await?;
        let keys = parse_jwks(&body)?;
        Ok(Fetched::Keys {
            keys,
            max_age,
            etag: new_etag,
        })
    }
}

/// Read a response body, failing as soon as it exceeds `limit` bytes
/// (whatever `Content-Length` claims).
pub(crate) async fn read_limited(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, FetchError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(FetchError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Err(FetchError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `max-age` from `Cache-Control` (`no-cache`/`no-store` mean zero, i.e.
/// the floor after clamping); `None` when absent or unparsable.
fn cache_max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    let mut max_age = None;
    for directive in value.split(',') {
        let directive = directive.trim();
        if directive.eq_ignore_ascii_case("no-cache") || directive.eq_ignore_ascii_case("no-store")
        {
            return Some(Duration::ZERO);
        }
        if let Some((name, secs)) = directive.split_once('=')
            && name.trim().eq_ignore_ascii_case("max-age")
            && let Ok(secs) = secs.trim().trim_matches('"').parse::<u64>()
        {
            max_age = Some(Duration::from_secs(secs));
        }
    }
    max_age
}

/// Parse a JWKS body key by key, so one odd key does not hide the others.
pub(super) fn parse_jwks(body: &[u8]) -> Result<Keys, FetchError> {
    #[derive(serde::Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet =
        serde_json::from_slice(body).map_err(|e| FetchError::NotJwks(e.to_string()))?;
    let jwks: Vec<Jwk> = raw
        .keys
        .into_iter()
        .filter_map(|value| match serde_json::from_value::<Jwk>(value) {
            Ok(jwk) => Some(jwk),
            Err(error) => {
                tracing::debug!(%error, "ignoring a JWK that does not parse");
                None
            }
        })
        .collect();
    prepare_keys(jwks.iter())
}

fn prepare_keys<'a>(jwks: impl Iterator<Item = &'a Jwk>) -> Result<Keys, FetchError> {
    let mut keys: Keys = Vec::new();
    for jwk in jwks {
        if keys.len() >= MAX_KEYS {
            tracing::warn!("JWKS holds more than {MAX_KEYS} usable keys; ignoring the rest");
            break;
        }
        let kid = jwk.common.key_id.as_deref();
        match prepare_key(jwk) {
            Ok(entry) => {
                if kid.is_some_and(|kid| kid.len() > MAX_KID_LEN) {
                    tracing::debug!("ignoring a JWK with an oversized kid");
                    continue;
                }
                if keys.iter().any(|(k, _)| k.as_deref() == kid) {
                    tracing::warn!(kid, "JWKS holds the same kid twice; keeping the first");
                    continue;
                }
                keys.push((kid.map(Box::from), Arc::new(entry)));
            }
            Err(reason) => tracing::debug!(kid, reason, "ignoring JWK"),
        }
    }
    if keys.is_empty() {
        return Err(FetchError::NoUsableKeys);
    }
    Ok(keys)
}

/// The algorithm a JWK may verify: its `alg`, or the only safe one for its
/// key type; never an HMAC algorithm. `Err` says why the key is unusable.
pub(crate) fn key_algorithm(jwk: &Jwk) -> Result<Algorithm, &'static str> {
    use AlgorithmParameters as P;
    use KeyAlgorithm as K;
    let declared = jwk.common.key_algorithm;
    match (&jwk.algorithm, declared) {
        (P::RSA(_), None | Some(K::RS256)) => Ok(Algorithm::RS256),
        (P::RSA(_), Some(K::RS384)) => Ok(Algorithm::RS384),
        (P::RSA(_), Some(K::RS512)) => Ok(Algorithm::RS512),
        (P::RSA(_), Some(K::PS256)) => Ok(Algorithm::PS256),
        (P::RSA(_), Some(K::PS384)) => Ok(Algorithm::PS384),
        (P::RSA(_), Some(K::PS512)) => Ok(Algorithm::PS512),
        (P::OctetKeyPair(p), None | Some(K::EdDSA)) if p.curve == EllipticCurve::Ed25519 => {
            Ok(Algorithm::EdDSA)
        }
        (P::EllipticCurve(p), None | Some(K::ES256)) if p.curve == EllipticCurve::P256 => {
            Ok(Algorithm::ES256)
        }
        (P::EllipticCurve(p), None | Some(K::ES384)) if p.curve == EllipticCurve::P384 => {
            Ok(Algorithm::ES384)
        }
        (P::OctetKey(_), _) => Err("symmetric (oct) keys are never trusted"),
        (_, None) => Err("no alg and no single safe algorithm for this key type"),
        _ => Err("alg is not a supported signature algorithm for this key type"),
    }
}

fn prepare_key(jwk: &Jwk) -> Result<VerificationKey, &'static str> {
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != PublicKeyUse::Signature
    {
        return Err("use is not sig");
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("key_ops does not include verify");
    }
    let alg = key_algorithm(jwk)?;
    match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) if b64_len(&p.x) != Some(32) => {
            return Err("Ed25519 x is not 32 bytes");
        }
        AlgorithmParameters::RSA(p) if b64_len(&p.n).is_none_or(|n| n < 256) => {
            return Err("RSA modulus shorter than 2048 bits");
        }
        _ => {}
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "key material does not decode")?;
    Ok(VerificationKey::new(key, alg))
}

/// Decoded length of a base64url value (ignoring leading zero bytes is not
/// needed here: a 2048-bit modulus is 256 bytes, 257 with a sign byte).
fn b64_len(value: &str) -> Option<usize> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .ok()
        .map(|v| v.len())
}
