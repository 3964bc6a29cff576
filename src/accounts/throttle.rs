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
//! Counters are per instance and in memory (a restart forgets them); with
//! N instances behind a balancer the effective limit is up to N times
//! higher. Unknown usernames are counted like real ones, so throttling
//! reveals nothing about which accounts exist.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher as _, Hasher as _, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Client, ClientCredentials, ClientError, Clients};
use crate::clock::SharedClock;

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

    fn enter(&mut self, key: u64) {
        let touched = self.touch(key);
        if let Some(entry) = self.entries.get_mut(&key) {
            self.by_age.remove(&entry.touched);
            entry.touched = touched;
            entry.in_flight = entry.in_flight.saturating_add(1);
            return;
        }
        if self.entries.len() >= MAX_ENTRIES
            && let Some((_, oldest)) = self.by_age.pop_first()
        {
            self.entries.remove(&oldest);
        }
        self.entries.insert(
            key,
            Entry {
                window_start: 0,
                failures: 0,
                in_flight: 1,
                touched,
            },
        );
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
        let address = address.map(|a| self.address_key(a));
        let now = self.clock.now();
        let window = self.policy.window;
        let mut state = self.lock();
        let by_principal = principal.and_then(|k| state.principals.refusal(k, now, window));
        let by_address = address.and_then(|k| state.addresses.refusal(k, now, window));
        if let Some(retry_after) = by_principal.max(by_address) {
            return Err(Throttled { retry_after });
        }
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

    /// Entries held: (principals, addresses).
    pub fn entries(&self) -> (usize, usize) {
        let state = self.lock();
        (
            state.principals.entries.len(),
            state.addresses.entries.len(),
        )
    }
}

/// The throttle of `POST /login`: usernames that break the naming rules
/// never reach the per-name map (they cannot name an account; the address
/// still counts).
pub struct LoginThrottle(Throttle);

impl LoginThrottle {
    /// A login throttle with `policy`, reading time from `clock`.
    pub fn new(policy: ThrottlePolicy, clock: SharedClock) -> Self {
        Self(Throttle::new(policy, clock))
    }

    /// Admits a login attempt for `username` from `address`, or refuses it.
    pub fn begin(&self, username: &str, address: Option<IpAddr>) -> Result<Attempt<'_>, Throttled> {
        let name = super::validate_username(username)
            .is_ok()
            .then_some(username);
        self.0.begin(name, address)
    }

    /// Entries held: (usernames, addresses).
    pub fn entries(&self) -> (usize, usize) {
        self.0.entries()
    }
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
    pub async fn authenticate(
        &self,
        credentials: &ClientCredentials,
        address: Option<IpAddr>,
    ) -> Result<Client, ClientAuthError> {
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
    use crate::clock::ManualClock;

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
        let state = t.0.lock();
        assert!(
            state
                .principals
                .entries
                .contains_key(&t.0.principal_key("first"))
        );
        assert!(
            !state
                .principals
                .entries
                .contains_key(&t.0.principal_key("second"))
        );
        assert_eq!(state.principals.by_age.len(), MAX_ENTRIES);
    }
}
