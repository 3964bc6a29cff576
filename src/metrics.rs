//! Prometheus metrics, kept as atomic counters and rendered as text at
//! `GET /metrics`. Counters are per instance, as Prometheus expects.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Grants tokens are issued by (label `grant`).
pub const GRANTS: [&str; 3] = ["login", "refresh_token", "client_credentials"];

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests_by_class: [AtomicU64; 5],
    tokens_issued: [AtomicU64; GRANTS.len()],
    login_failures: AtomicU64,
    rotations: AtomicU64,
    revocations: AtomicU64,
    prunes: AtomicU64,
}

impl Metrics {
    /// Counts an answered request by status class (1xx..5xx).
    pub fn request(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests_by_class[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an issued access token.
    pub fn token_issued(&self, grant: &str) {
        if let Some(i) = GRANTS.iter().position(|g| *g == grant) {
            self.tokens_issued[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a failed login.
    pub fn login_failed(&self) {
        self.login_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts key lifecycle changes performed by this instance.
    pub fn key_changes(&self, rotations: u64, revocations: u64, prunes: u64) {
        self.rotations.fetch_add(rotations, Ordering::Relaxed);
        self.revocations.fetch_add(revocations, Ordering::Relaxed);
        self.prunes.fetch_add(prunes, Ordering::Relaxed);
    }

    /// Prometheus text exposition (format 0.0.4).
    pub fn render(&self, current_key_age_seconds: Option<i64>) -> String {
        let mut out = String::with_capacity(2048);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "# HELP keyturn_http_requests_total HTTP requests answered, by status class."
        );
        let _ = writeln!(out, "# TYPE keyturn_http_requests_total counter");
        for (i, counter) in self.requests_by_class.iter().enumerate() {
            let _ = writeln!(
                out,
                "keyturn_http_requests_total{{class=\"{}xx\"}} {}",
                i + 1,
                load(counter)
            );
        }
        let _ = writeln!(
            out,
            "# HELP keyturn_tokens_issued_total Access tokens issued, by grant."
        );
        let _ = writeln!(out, "# TYPE keyturn_tokens_issued_total counter");
        for (grant, counter) in GRANTS.iter().zip(&self.tokens_issued) {
            let _ = writeln!(
                out,
                "keyturn_tokens_issued_total{{grant=\"{grant}\"}} {}",
                load(counter)
            );
        }
        for (name, help, counter) in [
            (
                "keyturn_login_failures_total",
                "Failed logins.",
                &self.login_failures,
            ),
            (
                "keyturn_key_rotations_total",
                "Key rotations performed by this instance.",
                &self.rotations,
            ),
            (
                "keyturn_key_revocations_total",
                "Key revocations performed by this instance.",
                &self.revocations,
            ),
            (
                "keyturn_keys_pruned_total",
                "Retired keys pruned by this instance.",
                &self.prunes,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", load(counter));
        }
        let _ = writeln!(
            out,
            "# HELP keyturn_current_key_age_seconds Seconds since the signing key became current."
        );
        let _ = writeln!(out, "# TYPE keyturn_current_key_age_seconds gauge");
        if let Some(age) = current_key_age_seconds {
            let _ = writeln!(out, "keyturn_current_key_age_seconds {age}");
        }
        out
    }
}
