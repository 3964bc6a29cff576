//! Prometheus metrics, kept as atomic counters and rendered as text at
//! `GET /metrics`. Counters are per instance, as Prometheus expects.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::accounts::GrantType;

/// What issued an access token: the `grant` label of
/// `keyturn_tokens_issued_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuedBy {
    /// `POST /login` (label `login`).
    Login,
    /// A grant of `POST /oauth/token` (label: its RFC 6749 name).
    Grant(GrantType),
}

impl IssuedBy {
    /// Every label, in exposition order.
    pub const ALL: [Self; 3] = [
        Self::Login,
        Self::Grant(GrantType::RefreshToken),
        Self::Grant(GrantType::ClientCredentials),
    ];

    /// The `grant` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Grant(grant) => grant.as_str(),
        }
    }
}

/// One counter per [`IssuedBy`]; the match makes a new grant type a
/// compile error here until it has its counter.
#[derive(Debug, Default)]
struct TokensIssued {
    login: AtomicU64,
    client_credentials: AtomicU64,
    refresh_token: AtomicU64,
}

impl TokensIssued {
    fn counter(&self, by: IssuedBy) -> &AtomicU64 {
        match by {
            IssuedBy::Login => &self.login,
            IssuedBy::Grant(GrantType::ClientCredentials) => &self.client_credentials,
            IssuedBy::Grant(GrantType::RefreshToken) => &self.refresh_token,
        }
    }
}

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests_by_class: [AtomicU64; 5],
    tokens_issued: TokensIssued,
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
    pub fn token_issued(&self, by: IssuedBy) {
        self.tokens_issued
            .counter(by)
            .fetch_add(1, Ordering::Relaxed);
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
        for by in IssuedBy::ALL {
            let _ = writeln!(
                out,
                "keyturn_tokens_issued_total{{grant=\"{}\"}} {}",
                by.label(),
                load(self.tokens_issued.counter(by))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_issuer_has_its_own_label_and_counter() {
        let metrics = Metrics::default();
        metrics.token_issued(IssuedBy::Login);
        metrics.token_issued(IssuedBy::Grant(GrantType::RefreshToken));
        metrics.token_issued(IssuedBy::Grant(GrantType::RefreshToken));
        for _ in 0..3 {
            metrics.token_issued(IssuedBy::Grant(GrantType::ClientCredentials));
        }
        let text = metrics.render(None);
        let issued: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("keyturn_tokens_issued_total{"))
            .collect();
        assert_eq!(
            issued,
            [
                "keyturn_tokens_issued_total{grant=\"login\"} 1",
                "keyturn_tokens_issued_total{grant=\"refresh_token\"} 2",
                "keyturn_tokens_issued_total{grant=\"client_credentials\"} 3",
            ]
        );
    }
}
