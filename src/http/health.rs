//! `GET /health` and `GET /ready`.

use std::sync::Arc;

use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::{ApiError, ApiTags, HttpState};

/// Health status.
#[derive(Debug, Object)]
pub struct Status {
    /// `ok` or `ready`.
    pub status: String,
}

pub struct HealthApi {
    state: Arc<HttpState>,
}

impl HealthApi {
    pub fn new(state: Arc<HttpState>) -> Self {
        Self { state }
    }
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness: the process answers.
    #[oai(path = "/health", method = "get")]
    async fn health(&self) -> Json<Status> {
        Json(Status {
            status: "ok".into(),
        })
    }

    /// Readiness: the store is reachable and a key can sign. 503 otherwise.
    #[oai(path = "/ready", method = "get")]
    async fn ready(&self) -> Result<Json<Status>, ApiError> {
        if let Err(err) = self.state.store.ping().await {
            tracing::warn!(error = %err, "readiness: store unreachable");
            return Err(ApiError::unavailable("the store is unreachable"));
        }
        if self.state.keyring.get().signer().is_none() {
            return Err(ApiError::unavailable("no current signing key"));
        }
        Ok(Json(Status {
            status: "ready".into(),
        }))
    }
}
