//! Time as an input. Production uses the system clock; tests inject a clock
//! they can move, so expiry and rotation are tested without sleeping.
//!
//! The verifier and the server read token times through the same [`Clock`],
//! so a test that moves one [`ManualClock`] moves both.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// A source of the current time in Unix seconds (UTC).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in Unix seconds.
    fn now(&self) -> i64;

    /// The longest real-time sleep between two looks at this clock by
    /// something waiting for a time on it (the verifier's background JWKS
    /// refresh). One second by default: a clock counting whole seconds
    /// cannot move by less, and one cheap look per second costs nothing.
    /// A clock a test moves by hand answers less, so a moved clock is
    /// noticed at once.
    fn poll_interval(&self) -> Duration {
        Duration::from_secs(1)
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }
}

/// A clock tests move by hand: frozen at the time it was made (the
/// default), or following the system clock (`following_system`); either way
/// `advance` jumps it forward. Clones share the same offset.
#[derive(Debug, Clone)]
pub struct ManualClock {
    /// `Some(t)`: frozen at `t`; `None`: the system time.
    base: Option<i64>,
    offset: Arc<AtomicI64>,
}

impl Default for ManualClock {
    fn default() -> Self {
        Self {
            base: Some(SystemClock.now()),
            offset: Arc::new(AtomicI64::new(0)),
        }
    }
}

impl ManualClock {
    /// A clock frozen at `unix_seconds`.
    pub fn at(unix_seconds: i64) -> Self {
        Self {
            base: Some(unix_seconds),
            offset: Arc::new(AtomicI64::new(0)),
        }
    }

    /// A clock that runs with the system clock, plus any `advance`.
    pub fn following_system() -> Self {
        Self {
            base: None,
            offset: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Moves the clock forward (backward for a negative `secs`); the time
    /// saturates at the ends of `i64`.
    pub fn advance(&self, secs: i64) {
        self.offset.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.base
            .unwrap_or_else(|| SystemClock.now())
            .saturating_add(self.offset.load(Ordering::SeqCst))
    }

    /// 5 ms: a test may `advance` this clock at any moment.
    fn poll_interval(&self) -> Duration {
        Duration::from_millis(5)
    }
}
