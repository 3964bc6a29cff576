//! `GET /metrics`: Prometheus text.

use std::sync::Arc;

use poem_openapi::OpenApi;
use poem_openapi::payload::PlainText;

use super::{ApiTags, HttpState};

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

pub struct MetricsApi {
    state: Arc<HttpState>,
}

impl MetricsApi {
    pub fn new(state: Arc<HttpState>) -> Self {
        Self { state }
    }
}

#[OpenApi(tag = "ApiTags::Health")]
impl MetricsApi {
    /// Prometheus metrics: requests, tokens issued by grant, login failures,
    /// key rotations, revocations, prunes, and the current key's age.
    #[oai(path = "/metrics", method = "get")]
    async fn metrics(&self) -> PlainText<String> {
        let keyring = self.state.keyring.get();
        let age = keyring
            .signer_activated_at
            .map(|t| (self.state.clock.now() - t).max(0));
        let mut text = self.state.metrics.render(age);
        let hashes = self.state.accounts.hash_load();
        let (names, addresses) = self.state.login.throttle_entries();
        let client_auths = self.state.client_auth.evaluated();
        let counts = [
            (
                "keyturn_password_hashes_total",
                "counter",
                "argon2 evaluations finished.",
                hashes.completed,
            ),
            (
                "keyturn_password_hashes_refused_total",
                "counter",
                "Password checks refused with 503: hashing queue full.",
                hashes.refused,
            ),
            (
                "keyturn_password_hashes_running",
                "gauge",
                "argon2 evaluations running now.",
                count(hashes.running),
            ),
            (
                "keyturn_password_hashes_running_peak",
                "gauge",
                "Most argon2 evaluations ever running at once.",
                count(hashes.peak_running),
            ),
            (
                "keyturn_password_hashes_waiting",
                "gauge",
                "Password checks waiting for a hashing thread.",
                count(hashes.waiting),
            ),
            (
                "keyturn_password_hash_concurrency",
                "gauge",
                "argon2 evaluations allowed at once.",
                count(hashes.concurrency),
            ),
            (
                "keyturn_client_authentications_total",
                "counter",
                "Client secrets checked (not refused by the throttle).",
                client_auths,
            ),
            (
                "keyturn_login_throttle_entries",
                "gauge",
                "Login throttle entries held (usernames and addresses).",
                count(names + addresses),
            ),
        ];
        for (name, kind, help, value) in counts {
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        }
        PlainText(text)
    }
}
