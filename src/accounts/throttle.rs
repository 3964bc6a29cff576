//! Login throttling: failed logins are counted per username and per client
//! address in a sliding window; past the limit, logins for that name (or
//! from that address) are refused with a retry time, before any password
//! hash is computed.
//!
//! Counters are per instance and in memory (a restart forgets them); with
//! N instances behind a balancer the effective limit is up to N times
//! higher. Unknown usernames are counted like real ones, so throttling
//! reveals nothing about which accounts exist.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use crate::clock::SharedClock;

/// Limits of the throttle.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures allowed per username within the window.
    pub per_username: usize,
    /// Failures allowed per client address within the window.
    pub per_address: usize,
    /// The sliding window, in seconds.
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

/// Entries kept at most per map before expired ones are swept; a flood of
/// distinct names cannot grow memory without bound.
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
struct Failures {
    by_username: HashMap<String, VecDeque<i64>>,
    by_address: HashMap<IpAddr, VecDeque<i64>>,
}

/// Counts failed logins and says when to refuse.
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    clock: SharedClock,
    failures: Mutex<Failures>,
}

/// Too many failures: retry after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Seconds until the oldest counted failure leaves the window.
    pub retry_after: i64,
}

fn key(username: &str) -> String {
    username.to_ascii_lowercase()
}

/// Seconds until another attempt is allowed, if `times` is at its limit.
fn wait(times: Option<&VecDeque<i64>>, limit: usize, now: i64, window: i64) -> Option<i64> {
    let times = times?;
    let recent: Vec<i64> = times
        .iter()
        .copied()
        .filter(|t| *t > now - window)
        .collect();
    if recent.len() < limit {
        return None;
    }
    // The attempt becomes possible when enough failures have aged out.
    let unlock = recent[recent.len() - limit] + window;
    Some((unlock - now).max(1))
}

fn record<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, VecDeque<i64>>,
    key: K,
    now: i64,
    window: i64,
    keep: usize,
) {
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, times| times.back().is_some_and(|t| *t > now - window));
    }
    let times = map.entry(key).or_default();
    times.push_back(now);
    while times.len() > keep || times.front().is_some_and(|t| *t <= now - window) {
        times.pop_front();
    }
}

impl LoginThrottle {
    /// A throttle with `policy`, reading time from `clock`.
    pub fn new(policy: ThrottlePolicy, clock: SharedClock) -> Self {
        Self {
            policy,
            clock,
            failures: Mutex::new(Failures::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        // Counters stay usable even if a holder panicked.
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a login for `username` from `address` may be tried now.
    pub fn check(&self, username: &str, address: Option<IpAddr>) -> Result<(), Throttled> {
        let now = self.clock.now();
        let p = self.policy;
        let failures = self.lock();
        let by_name = wait(
            failures.by_username.get(&key(username)),
            p.per_username,
            now,
            p.window,
        );
        let by_address =
            address.and_then(|a| wait(failures.by_address.get(&a), p.per_address, now, p.window));
        match by_name.max(by_address) {
            Some(retry_after) => Err(Throttled { retry_after }),
            None => Ok(()),
        }
    }

    /// Counts a failed login.
    pub fn failed(&self, username: &str, address: Option<IpAddr>) {
        let now = self.clock.now();
        let p = self.policy;
        let mut failures = self.lock();
        record(
            &mut failures.by_username,
            key(username),
            now,
            p.window,
            p.per_username,
        );
        if let Some(address) = address {
            record(
                &mut failures.by_address,
                address,
                now,
                p.window,
                p.per_address,
            );
        }
    }

    /// A successful login clears the username's failures (not the address's:
    /// one good password must not reset a guessing run across names).
    pub fn succeeded(&self, username: &str) {
        self.lock().by_username.remove(&key(username));
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
    fn username_limit_with_sliding_window() {
        let clock = ManualClock::default();
        let t = throttle(&clock);
        for _ in 0..3 {
            assert!(t.check("Alice", None).is_ok());
            t.failed("alice", None);
            clock.advance(10);
        }
        // Failures at 0, 10, 20; now 30: the first ages out at 60.
        assert_eq!(t.check("ALICE", None), Err(Throttled { retry_after: 30 }));
        assert!(t.check("bob", None).is_ok(), "other names are unaffected");
        clock.advance(30);
        assert!(t.check("alice", None).is_ok());
        t.failed("alice", None);
        assert!(
            t.check("alice", None).is_err(),
            "three within the window again"
        );
        t.succeeded("alice");
        assert!(t.check("alice", None).is_ok());
    }

    #[test]
    fn address_limit_spans_names() {
        let clock = ManualClock::default();
        let t = throttle(&clock);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for n in 0..5 {
            t.failed(&format!("user{n}"), Some(ip));
        }
        assert!(t.check("someone-new", Some(ip)).is_err());
        assert!(
            t.check("someone-new", Some("192.0.2.8".parse().unwrap()))
                .is_ok()
        );
        assert!(t.check("someone-new", None).is_ok());
    }

    #[test]
    fn memory_is_bounded_by_sweeping_expired_entries() {
        let clock = ManualClock::default();
        let t = throttle(&clock);
        for n in 0..MAX_ENTRIES {
            t.failed(&format!("u{n}"), None);
        }
        clock.advance(61);
        t.failed("late", None);
        assert_eq!(t.lock().by_username.len(), 1);
    }
}
