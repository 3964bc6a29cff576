//! `GET /metrics`: Prometheus text.

use std::sync::Arc;

use poem_openapi::OpenApi;
use poem_openapi::payload::PlainText;

use super::{ApiTags, HttpState};

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
        PlainText(self.state.metrics.render(age))
    }
}
