//! Throttling of credential checks (logins, client authentication): attempts
//! are counted per principal (username or client id) and per client address
//! in a fixed window that starts at the first failure; past the limit,
//! attempts are refused with a retry time, before any secret is checked.
//!
//! An attempt is counted *before* the check runs (as in flight) and settled
//! after it: a failure stays counted, a success clears the principal's
//! failures, and an attempt that never reached a verdict (the hashing pool
//! was full, the store failed, the client went away) is simply released.
//! So N concurrent guesses for one name get at most the limit through, not N.
//!
//! Memory is bounded whatever the input: keys are 64-bit SipHash values
//! under a random per-process key (fixed size; an attacker who does not
//! know the key cannot aim collisions at a victim's bucket), IPv6 addresses
//! count per /64, and each map holds at most [`MAX_ENTRIES`], evicting the
//! least recently touched entry in O(log n) when full.
//!
//! Counters are per instance and in memory, except the login throttle's
//! per-name counters when it has a store ([`LoginThrottle::with_store`],
//! what the server uses): those live in the store, shared by every
//! instance on it, so N instances do not give one name N times the
//! guesses. The in-memory maps then stay the first gate: addresses are
//! counted per instance, and a name the store has refused is refused
//! locally until its window ends, without asking the store again.
//! Unknown usernames are counted like real ones, so throttling reveals
//! nothing about which accounts exist.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher as _, Hasher as _, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};

use super::{Client, ClientCredentials, ClientError, Clients};
use crate::clock::SharedClock;
use crate::store::{LoginReservation, Store, StoreError};

/// Limits of a throttle.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures (plus attempts in flight) allowed per username or client id
    /// within the window.
    pub per_username: u32,
    /// Failures (plus attempts in flight) allowed per client address within
    /// the window.
    pub per_address: u32,
    /// The window, in seconds, from the first counted failure.
    pub window: i64,
}

impl Default for ThrottlePolicy {
    /// 5 failures per username and 50 per address in 5 minutes.
    fn default() -> Self {
        Self {
            per_username: 5,
            per_address: 50,
            window: 300,
        }
    }
}

/// Entries kept at most per map (principals, addresses). Sized above what
/// the hashing rate can fill within a window on common hardware (every
/// entry that stays holds a failure, and a failure cost one argon2 hash),
/// so eviction only happens under a flood. About 70 bytes per entry
/// (map slot plus age index): 100k entries are ~7 MiB per map.
pub const MAX_ENTRIES: usize = 100_000;

/// Too many attempts: retry after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Seconds until the window ends (1 when only attempts in flight fill it).
    pub retry_after: i64,
}

/// One bucket: fixed-size, no heap.
#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: i64,
    failures: u32,
    in_flight: u32,
    /// Position in the age index.
    touched: u64,
}

/// How an attempt ended, for one bucket.
#[derive(Debug, Clone, Copy)]
enum Settle {
    /// Counted as a failure.
    Failed,
    /// A success for this principal: its failures are forgotten.
    Cleared,
    /// No verdict, or a success seen from an address: only the in-flight
    /// count goes.
    Released,
}

/// One map of buckets with a hard cap and oldest-first eviction.
struct Buckets {
    limit: u32,
    entries: HashMap<u64, Entry>,
    /// `touched` → key, oldest first.
    by_age: BTreeMap<u64, u64>,
    next_touch: u64,
}

impl Buckets {
    fn new(limit: u32) -> Self {
        Self {
            limit,
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
            next_touch: 0,
        }
    }

    fn failures_now(entry: &Entry, now: i64, window: i64) -> u32 {
        if now < entry.window_start.saturating_add(window) {
            entry.failures
        } else {
            0
        }
    }

    /// Why a new attempt for `key` must wait, if it must.
    fn refusal(&self, key: u64, now: i64, window: i64) -> Option<i64> {
        let entry = self.entries.get(&key)?;
        let failures = Self::failures_now(entry, now, window);
        if failures.saturating_add(entry.in_flight) < self.limit {
            return None;
        }
        Some(if failures >= self.limit {
            (entry.window_start + window - now).max(1)
        } else {
            1
        })
    }

    fn touch(&mut self, key: u64) -> u64 {
        let touched = self.next_touch;
        self.next_touch += 1;
        self.by_age.insert(touched, key);
        touched
    }

    /// The entry of `key`, made the most recently touched; a new empty one
    /// (evicting the oldest when full) if there is none.
    fn slot(&mut self, key: u64) -> &mut Entry {
        let touched = self.touch(key);
        if let Some(old) = self.entries.get(&key).map(|e| e.touched) {
            self.by_age.remove(&old);
        } else if self.entries.len() >= MAX_ENTRIES
            && let Some((_, oldest)) = self.by_age.pop_first()
        {
            self.entries.remove(&oldest);
        }
        let entry = self.entries.entry(key).or_insert(Entry {
            window_start: 0,
            failures: 0,
            in_flight: 0,
            touched,
        });
        entry.touched = touched;
        entry
    }

    fn enter(&mut self, key: u64) {
        let entry = self.slot(key);
        entry.in_flight = entry.in_flight.saturating_add(1);
    }

    /// Makes `key` refused until `until`: a full window ending then.
    fn lock_until(&mut self, key: u64, until: i64, window: i64) {
        let limit = self.limit;
        let entry = self.slot(key);
        entry.window_start = until - window;
        entry.failures = limit;
    }

    fn settle(&mut self, key: u64, how: Settle, now: i64, window: i64) {
        // An entry evicted while in flight is simply gone.
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        entry.in_flight = entry.in_flight.saturating_sub(1);
        match how {
            Settle::Failed => {
                if Self::failures_now(entry, now, window) == 0 {
                    entry.window_start = now;
                    entry.failures = 0;
                }
                entry.failures = entry.failures.saturating_add(1);
            }
            Settle::Cleared => entry.failures = 0,
            Settle::Released => {}
        }
        if entry.in_flight == 0 && Self::failures_now(entry, now, window) == 0 {
            let touched = entry.touched;
            self.entries.remove(&key);
            self.by_age.remove(&touched);
        }
    }
}

struct State {
    principals: Buckets,
    addresses: Buckets,
}

/// Counts attempts per principal and per address and says when to refuse.
pub struct Throttle {
    policy: ThrottlePolicy,
    clock: SharedClock,
    keys: RandomState,
    state: Mutex<State>,
}

/// An attempt admitted by [`Throttle::begin`], counted as in flight until
/// settled: [`Attempt::failed`], [`Attempt::succeeded`], or dropped
/// (released without a verdict).
#[must_use = "an attempt is settled by failed() or succeeded(); dropping it releases it"]
pub struct Attempt<'a> {
    throttle: &'a Throttle,
    principal: Option<u64>,
    address: Option<u64>,
    settled: bool,
}

impl Attempt<'_> {
    /// Wrong credentials: the attempt stays counted for both keys.
    pub fn failed(mut self) {
        self.settle(Settle::Failed, Settle::Failed);
    }

    /// Right credentials: the principal's failures are forgotten; the
    /// address keeps its failures (one good password must not reset a
    /// guessing run across names).
    pub fn succeeded(mut self) {
        self.settle(Settle::Cleared, Settle::Released);
    }

    fn settle(&mut self, principal: Settle, address: Settle) {
        self.settled = true;
        let now = self.throttle.clock.now();
        let window = self.throttle.policy.window;
        let mut state = self.throttle.lock();
        if let Some(key) = self.principal {
            state.principals.settle(key, principal, now, window);
        }
        if let Some(key) = self.address {
            state.addresses.settle(key, address, now, window);
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.settle(Settle::Released, Settle::Released);
        }
    }
}

impl Throttle {
    /// A throttle with `policy`, reading time from `clock`.
    pub fn new(policy: ThrottlePolicy, clock: SharedClock) -> Self {
        Self {
            policy,
            clock,
            keys: RandomState::new(),
            state: Mutex::new(State {
                principals: Buckets::new(policy.per_username),
                addresses: Buckets::new(policy.per_address),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Counters stay usable even if a holder panicked.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Case-insensitive: `Alice` and `alice` share a bucket.
    fn principal_key(&self, principal: &str) -> u64 {
        let mut hasher = self.keys.build_hasher();
        for byte in principal.bytes() {
            hasher.write_u8(byte.to_ascii_lowercase());
        }
        hasher.finish()
    }

    /// IPv4 per address; IPv6 per /64 (one host usually owns a whole /64).
    fn address_key(&self, address: IpAddr) -> u64 {
        let mut hasher = self.keys.build_hasher();
        match address.to_canonical() {
            IpAddr::V4(v4) => {
                hasher.write_u8(4);
                hasher.write_u32(v4.to_bits());
            }
            IpAddr::V6(v6) => {
                hasher.write_u8(6);
                hasher.write_u64((v6.to_bits() >> 64) as u64);
            }
        }
        hasher.finish()
    }

    /// Admits an attempt for `principal` (none: only the address counts)
    /// from `address`, counting it at once, or refuses it.
    pub fn begin(
        &self,
        principal: Option<&str>,
        address: Option<IpAddr>,
    ) -> Result<Attempt<'_>, Throttled> {
        let principal = principal.map(|p| self.principal_key(p));
        self.begin_keys(principal, true, address)
    }

    /// [`Throttle::begin`] with the principal's key computed; with
    /// `count_principal` false the principal's bucket can refuse the
    /// attempt but does not count it (its counter is kept elsewhere).
    fn begin_keys(
        &self,
        principal: Option<u64>,
        count_principal: bool,
        address: Option<IpAddr>,
    ) -> Result<Attempt<'_>, Throttled> {
        let address = address.map(|a| self.address_key(a));
        let now = self.clock.now();
        let window = self.policy.window;
        let mut state = self.lock();
        let by_principal = principal.and_then(|k| state.principals.refusal(k, now, window));
        let by_address = address.and_then(|k| state.addresses.refusal(k, now, window));
        if let Some(retry_after) = by_principal.max(by_address) {
            return Err(Throttled { retry_after });
        }
        let principal = principal.filter(|_| count_principal);
        if let Some(key) = principal {
            state.principals.enter(key);
        }
        if let Some(key) = address {
            state.addresses.enter(key);
        }
        Ok(Attempt {
            throttle: self,
            principal,
            address,
            settled: false,
        })
    }

    /// Refuses `principal` for `retry_after` seconds from now.
    fn lock_principal(&self, principal: u64, retry_after: i64) {
        let now = self.clock.now();
        let window = self.policy.window;
        let mut state = self.lock();
        state
            .principals
            .lock_until(principal, now.saturating_add(retry_after), window);
    }

    /// Entries held: (principals, addresses).
    pub fn entries(&self) -> (usize, usize) {
        let state = self.lock();
        (
            state.principals.entries.len(),
            state.addresses.entries.len(),
        )
    }
}

/// The throttle of `POST /login`. Usernames that break the naming rules
/// never reach the per-name counters (they cannot name an account; the
/// address still counts).
///
/// With a store ([`LoginThrottle::with_store`]) the per-name counters are
/// the store's, shared by every instance on it: [`LoginThrottle::admit`]
/// counts the attempt in the store, in one atomic statement, before the
/// password is hashed. The in-memory maps stay the first gate: addresses
/// are counted per instance, and a name the store refused is refused
/// locally until its window ends. A store that cannot be reached refuses
/// the attempt (an error, answered 503): never unlimited guessing.
pub struct LoginThrottle {
    local: Throttle,
    shared: Option<SharedNames>,
}

/// The store side of a login throttle.
struct SharedNames {
    store: Store,
    /// The store's salt of name keys, read (or made) on first use.
    salt: tokio::sync::OnceCell<String>,
}

/// Why [`LoginThrottle::admit`] did not admit an attempt.
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// Too many recent attempts for this username or address.
    #[error("too many failed logins; retry in {} s", .0.retry_after)]
    Throttled(Throttled),
    /// The shared counters could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A login attempt admitted by [`LoginThrottle::admit`], counted (in memory
/// and, with a store, in the store) until settled: [`LoginAttempt::failed`],
/// [`LoginAttempt::succeeded`], or dropped (released without a verdict).
#[must_use = "an attempt is settled by failed() or succeeded(); dropping it releases it"]
pub struct LoginAttempt<'a> {
    local: Option<Attempt<'a>>,
    /// The store row and window the attempt is counted in.
    reserved: Option<(Store, String, i64)>,
}

impl LoginAttempt<'_> {
    /// Wrong credentials: the attempt stays counted, as a failure. A store
    /// that fails here (or a request dropped meanwhile) leaves it pending
    /// until its window ends: counted all the same.
    pub async fn failed(mut self) {
        if let Some(local) = self.local.take() {
            local.failed();
        }
        if let Some((store, key, window_start)) = self.reserved.take()
            && let Err(err) = store.fail_login_attempt(&key, window_start).await
        {
            tracing::warn!(error = %err, "counting a login failure failed; it stays pending");
        }
    }

    /// Right credentials: the name's failures are forgotten, for every
    /// instance. A store that fails here leaves them counted (logged): the
    /// user may meet the limit early, an attacker gains nothing.
    pub async fn succeeded(mut self) {
        if let Some(local) = self.local.take() {
            local.succeeded();
        }
        if let Some((store, key, window_start)) = self.reserved.take()
            && let Err(err) = store.clear_login_attempts(&key, window_start).await
        {
            tracing::warn!(error = %err, "clearing a name's login failures failed");
        }
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        // No verdict: the in-memory attempt releases itself; the store's is
        // released in the background (a drop cannot wait, and the request
        // may be gone). If that write fails, the attempt stays counted
        // until its window ends: stricter, never looser.
        if let Some((store, key, window_start)) = self.reserved.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Err(err) = store.release_login_attempt(&key, window_start).await {
                    tracing::warn!(error = %err, "releasing a login attempt failed");
                }
            });
        }
    }
}

impl LoginThrottle {
    /// A login throttle with `policy`, reading time from `clock`, counting
    /// everything in memory (one instance's view only).
    pub fn new(policy: ThrottlePolicy, clock: SharedClock) -> Self {
        Self {
            local: Throttle::new(policy, clock),
            shared: None,
        }
    }

    /// A login throttle whose per-name counters live in `store`, shared by
    /// every instance on it.
    pub fn with_store(store: Store, policy: ThrottlePolicy, clock: SharedClock) -> Self {
        Self {
            local: Throttle::new(policy, clock),
            shared: Some(SharedNames {
                store,
                salt: tokio::sync::OnceCell::new(),
            }),
        }
    }

    /// The policy's name, if it may name an account.
    fn countable(username: &str) -> Option<&str> {
        super::validate_username(username)
            .is_ok()
            .then_some(username)
    }

    /// Admits a login attempt for `username` from `address` in memory only,
    /// or refuses it. Without a store this is the whole throttle; with one,
    /// use [`LoginThrottle::admit`] (this counts the address, and refuses
    /// names the store refused, without counting them).
    pub fn begin(&self, username: &str, address: Option<IpAddr>) -> Result<Attempt<'_>, Throttled> {
        let principal = Self::countable(username).map(|n| self.local.principal_key(n));
        self.local
            .begin_keys(principal, self.shared.is_none(), address)
    }

    /// Admits a login attempt for `username` from `address`, counting it
    /// at once (in the store, if there is one), or refuses it.
    pub async fn admit(
        &self,
        username: &str,
        address: Option<IpAddr>,
    ) -> Result<LoginAttempt<'_>, AdmitError> {
        let local = self
            .begin(username, address)
            .map_err(AdmitError::Throttled)?;
        let (Some(shared), Some(name)) = (&self.shared, Self::countable(username)) else {
            return Ok(LoginAttempt {
                local: Some(local),
                reserved: None,
            });
        };
        let key = shared.name_key(name, self.local.clock.now()).await?;
        let policy = self.local.policy;
        let reservation = shared
            .store
            .reserve_login_attempt(
                &key,
                self.local.clock.now(),
                policy.window,
                policy.per_username,
            )
            .await?;
        match reservation {
            LoginReservation::Admitted { window_start } => Ok(LoginAttempt {
                local: Some(local),
                reserved: Some((shared.store.clone(), key, window_start)),
            }),
            // Dropping `local` releases the address's slot.
            LoginReservation::Locked { retry_after } => {
                // Locked by failures: nothing can clear it before the
                // window ends (every attempt is refused, the right password
                // too, and none is in flight), so it is safe to remember.
                self.local
                    .lock_principal(self.local.principal_key(name), retry_after);
                Err(AdmitError::Throttled(Throttled { retry_after }))
            }
            LoginReservation::Busy => Err(AdmitError::Throttled(Throttled { retry_after: 1 })),
        }
    }

    /// Entries held in memory: (usernames, addresses). With a store, the
    /// usernames are only those the store refused.
    pub fn entries(&self) -> (usize, usize) {
        self.local.entries()
    }
}

impl SharedNames {
    /// The store key of `name`: hex SHA-256 of the store's salt and the
    /// lowercased name, the same on every instance; never the name itself.
    async fn name_key(&self, name: &str, now: i64) -> Result<String, StoreError> {
        let salt = self
            .salt
            .get_or_try_init(|| async {
                let mut fresh = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut fresh);
                self.store.login_throttle_salt(&hex(&fresh), now).await
            })
            .await?;
        let mut digest = Sha256::new();
        digest.update(salt.as_bytes());
        digest.update([0]);
        digest.update(name.to_ascii_lowercase().as_bytes());
        Ok(hex(&digest.finalize()))
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Why client authentication failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientAuthError {
    /// Too many recent failures for this client id or address.
    #[error("too many failed client authentications; retry in {} s", .0.retry_after)]
    Throttled(Throttled),
    /// Wrong credentials, or the check itself failed.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Client authentication (`/oauth/token`, `/oauth/revoke`,
/// `/oauth/introspect`) behind a throttle per client id and per address.
pub struct ClientAuthThrottle {
    clients: Clients,
    throttle: Throttle,
    evaluated: AtomicU64,
}

impl ClientAuthThrottle {
    /// Throttles `clients.authenticate` with `policy`.
    pub fn new(clients: Clients, policy: ThrottlePolicy, clock: SharedClock) -> Self {
        Self {
            clients,
            throttle: Throttle::new(policy, clock),
            evaluated: AtomicU64::new(0),
        }
    }

    /// Checks `credentials` presented from `address`, unless throttled.
    ///
    /// The right secret of a cached client is accepted before the throttle
    /// is asked: the throttle slows guessing, and a match against the
    /// cached 256-bit secret is no guess. So a gateway making many
    /// concurrent calls with one client id is never turned away for being
    /// busy, nor locked out while someone else guesses at its id; every
    /// other attempt (unknown id, wrong or rotated secret) is counted.
    pub async fn authenticate(
        &self,
        credentials: &ClientCredentials,
        address: Option<IpAddr>,
    ) -> Result<Client, ClientAuthError> {
        if let Some(client) = self.clients.authenticate_cached(credentials) {
            self.evaluated.fetch_add(1, Ordering::Relaxed);
            return Ok(client);
        }
        let attempt = match self.throttle.begin(Some(&credentials.id), address) {
            Ok(attempt) => attempt,
            Err(throttled) => {
                // No `actor`: the id is unauthenticated input of any length.
                tracing::warn!(audit = "client_auth_throttled", client_ip = ?address,
                    outcome = "refused", detail = "too many failures",
                    "client authentication throttled");
                return Err(ClientAuthError::Throttled(throttled));
            }
        };
        self.evaluated.fetch_add(1, Ordering::Relaxed);
        match self.clients.authenticate(credentials).await {
            Ok(client) => {
                attempt.succeeded();
                Ok(client)
            }
            Err(ClientError::InvalidCredentials) => {
                attempt.failed();
                Err(ClientError::InvalidCredentials.into())
            }
            // Dropping the attempt releases it: no verdict was reached.
            Err(other) => Err(other.into()),
        }
    }

    /// Client authentications evaluated (not refused by the throttle).
    pub fn evaluated(&self) -> u64 {
        self.evaluated.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::clock::{Clock as _, ManualClock};

    fn throttle(clock: &ManualClock) -> LoginThrottle {
        LoginThrottle::new(
            ThrottlePolicy {
                per_username: 3,
                per_address: 5,
                window: 60,
            },
            Arc::new(clock.clone()),
        )
    }

    #[test]
    fn username_limit_in_a_window_from_the_first_failure() {
        let clock = ManualClock::default();
        let t = throttle(&clock);
        for _ in 0..3 {
            t.begin("alice", None).unwrap().failed();
            clock.advance(10);
        }
        // Failures at 0, 10, 20; now 30: the window ends at 60.
        assert_eq!(
            t.begin("ALICE", None).err(),
            Some(Throttled { retry_after: 30 })
        );
        assert!(t.begin("bob", None).is_ok(), "other names are unaffected");
        clock.advance(30);
        t.begin("alice", None).unwrap().succeeded();
        for _ in 0..3 {
            t.begin("alice", None).unwrap().failed();
        }
        assert!(t.begin("alice", None).is_err(), "three in the new window");
    }

    #[test]
    fn attempts_in_flight_count_and_are_released() {
        let clock = ManualClock::default();
        let t = throttle(&clock);
        let held: Vec<_> = (0..3).map(|_| t.begin("alice", None).unwrap()).collect();
        assert_eq!(
            t.begin("alice", None).err(),
            Some(Throttled { retry_after: 1 }),
            "three in flight fill the limit"
        );
        drop(held);
        assert_eq!(t.entries(), (0, 0), "released attempts leave nothing");
        let first = t.begin("alice", None).unwrap();
        let second = t.begin("alice", None).unwrap();
        first.failed();
        second.succeeded();
        assert_eq!(t.entries(), (0, 0), "a success clears the name");
    }

    #[test]
    fn address_limit_spans_names_and_ipv6_counts_per_64() {
        let clock = ManualClock::default();
        let t = throttle(&clock);
        let ip: IpAddr = "2001:db8:1:2::7".parse().unwrap();
        for n in 0..5 {
            t.begin(&format!("user{n}"), Some(ip)).unwrap().failed();
        }
        let same_64: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert!(t.begin("someone-new", Some(same_64)).is_err());
        let other_64: IpAddr = "2001:db8:1:3::7".parse().unwrap();
        assert!(t.begin("someone-new", Some(other_64)).is_ok());
        assert!(t.begin("someone-new", None).is_ok());
    }

    #[test]
    fn malformed_usernames_do_not_reach_the_name_map() {
        let clock = ManualClock::default();
        let t = throttle(&clock);
        let long = "x".repeat(60_000);
        for _ in 0..4 {
            t.begin(&long, None).unwrap().failed();
        }
        assert_eq!(t.entries(), (0, 0));
    }

    #[test]
    fn entries_are_capped_oldest_first() {
        let clock = ManualClock::default();
        let t = throttle(&clock);
        t.begin("first", None).unwrap().failed();
        t.begin("second", None).unwrap().failed();
        // Touch "first" again: "second" becomes the oldest.
        t.begin("first", None).unwrap().failed();
        for n in 0..MAX_ENTRIES - 1 {
            t.begin(&format!("u{n}"), None).unwrap().failed();
        }
        assert_eq!(t.entries().0, MAX_ENTRIES);
        let state = t.local.lock();
        assert!(
            state
                .principals
                .entries
                .contains_key(&t.local.principal_key("first"))
        );
        assert!(
            !state
                .principals
                .entries
                .contains_key(&t.local.principal_key("second"))
        );
        assert_eq!(state.principals.by_age.len(), MAX_ENTRIES);
    }

    const SHARED: ThrottlePolicy = ThrottlePolicy {
        per_username: 3,
        per_address: 50,
        window: 60,
    };

    /// Two throttles (two instances) on two connections to one SQLite file.
    async fn shared_pair(
        clock: &ManualClock,
    ) -> (tempfile::TempDir, Store, LoginThrottle, LoginThrottle) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/throttle.db", dir.path().display());
        let store = Store::connect(&url).await.unwrap();
        let a = LoginThrottle::with_store(store.clone(), SHARED, Arc::new(clock.clone()));
        let other = Store::connect(&url).await.unwrap();
        let b = LoginThrottle::with_store(other, SHARED, Arc::new(clock.clone()));
        (dir, store, a, b)
    }

    fn retry_after(refused: Result<LoginAttempt<'_>, AdmitError>) -> i64 {
        match refused {
            Err(AdmitError::Throttled(t)) => t.retry_after,
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("admitted"),
        }
    }

    #[tokio::test]
    async fn instances_on_one_store_share_a_names_budget() {
        let clock = ManualClock::default();
        let (_dir, store, a, b) = shared_pair(&clock).await;
        a.admit("alice", None).await.unwrap().failed().await;
        clock.advance(10);
        b.admit("Alice", None).await.unwrap().failed().await;
        let in_flight = a.admit("ALICE", None).await.unwrap();
        assert_eq!(
            retry_after(b.admit("alice", None).await),
            1,
            "only an attempt in flight fills the window"
        );
        assert_eq!(b.entries().0, 0, "and that is not remembered");
        assert!(b.admit("bob", None).await.is_ok(), "other names are free");

        // No verdict: released in the background, for every instance.
        drop(in_flight);
        let mut freed = false;
        for _ in 0..200 {
            if let Ok(attempt) = b.admit("alice", None).await {
                attempt.failed().await;
                freed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(freed, "the reservation was released");
        // Three failures from the window's start (0): 50 s left at 10.
        assert_eq!(retry_after(a.admit("alice", None).await), 50);
        assert_eq!(a.entries().0, 1, "a lock by failures is remembered");
        assert_eq!(retry_after(a.admit("alice", None).await), 50);

        // The window ends for everyone at 60.
        clock.advance(50);
        for _ in 0..3 {
            b.admit("alice", None).await.unwrap().failed().await;
        }
        assert_eq!(retry_after(a.admit("alice", None).await), 60);
        let ended_by = clock.now() - SHARED.window;
        assert_eq!(store.prune_login_throttle(ended_by).await.unwrap(), 0);
        clock.advance(60);
        let ended_by = clock.now() - SHARED.window;
        assert_eq!(store.prune_login_throttle(ended_by).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_success_clears_the_name_for_every_instance() {
        let clock = ManualClock::default();
        let (_dir, store, a, b) = shared_pair(&clock).await;
        a.admit("alice", None).await.unwrap().failed().await;
        b.admit("alice", None).await.unwrap().failed().await;
        a.admit("alice", None).await.unwrap().succeeded().await;
        for _ in 0..3 {
            b.admit("alice", None).await.unwrap().failed().await;
        }
        assert!(a.admit("alice", None).await.is_err());
        let keys = store.login_throttle_keys().await.unwrap();
        assert_eq!(keys.len(), 1, "one row per name: {keys:?}");
        assert_eq!(keys[0].len(), 64, "a SHA-256, never the name");
        assert!(!keys[0].contains("alice"));
    }

    #[tokio::test]
    async fn an_unreachable_store_refuses_logins() {
        let clock = ManualClock::default();
        let (_dir, store, a, _b) = shared_pair(&clock).await;
        store.close().await;
        assert!(matches!(
            a.admit("alice", None).await,
            Err(AdmitError::Store(_))
        ));
        assert_eq!(a.entries(), (0, 0), "nothing stays counted in memory");
    }
}
