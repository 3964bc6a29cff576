//! The one place that decides status codes and error bodies.
//!
//! Handlers return `Result<_, ApiError>`; domain errors convert into
//! `ApiError` here. Errors raised by poem itself (bad JSON, wrong content
//! type, missing bearer, unknown route, oversized body) pass through
//! [`render_poem_error`] so every error has the SPEC's JSON shape.
//! Clients get a safe description; logs get the source chain.

use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse as _, Response};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

use crate::accounts::AccountError;
use crate::keys::KeyError;
use crate::store::StoreError;
use crate::token::TokenError;

/// `WWW-Authenticate` value for a missing or refused bearer token.
pub const BEARER_INVALID_TOKEN: &str = "Bearer error=\"invalid_token\"";
/// `WWW-Authenticate` value for a valid token without the needed role.
pub const BEARER_INSUFFICIENT_SCOPE: &str = "Bearer error=\"insufficient_scope\"";
const MAX_DESCRIPTION_CHARS: usize = 200;

/// The error body of every failed request (RFC 6749 §5.2 shape).
#[derive(Debug, Object)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `invalid_request`, `invalid_token`.
    pub error: String,
    /// Human-readable explanation, safe to show.
    pub error_description: String,
}

fn body(error: &str, description: impl Into<String>) -> Json<ErrorBody> {
    let mut description: String = description.into();
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        description = description.chars().take(MAX_DESCRIPTION_CHARS).collect();
        description.push('…');
    }
    Json(ErrorBody {
        error: error.to_owned(),
        error_description: description,
    })
}

/// Every error response of the API.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed or breaks a rule.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing, malformed, expired, revoked or badly signed bearer token, or
    /// failed login.
    #[oai(status = 401)]
    Unauthorized(
        Json<ErrorBody>,
        #[oai(header = "WWW-Authenticate")] Option<String>,
    ),
    /// The token is valid but lacks the required role.
    #[oai(status = 403)]
    Forbidden(
        Json<ErrorBody>,
        #[oai(header = "WWW-Authenticate")] Option<String>,
    ),
    /// No such resource.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The resource already exists or the request conflicts with its state.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The server is not ready (store unreachable or no signing key).
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
    /// An unexpected failure; details are only in the server log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

impl ApiError {
    /// 400 `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::BadRequest(body("invalid_request", description))
    }

    /// 401 with `WWW-Authenticate: Bearer error="invalid_token"`.
    pub fn invalid_token(description: impl Into<String>) -> Self {
        Self::Unauthorized(
            body("invalid_token", description),
            Some(BEARER_INVALID_TOKEN.to_owned()),
        )
    }

    /// 403 `forbidden`: the token lacks a role.
    pub fn forbidden(description: impl Into<String>) -> Self {
        Self::Forbidden(
            body("forbidden", description),
            Some(BEARER_INSUFFICIENT_SCOPE.to_owned()),
        )
    }

    /// 404 `not_found`.
    pub fn not_found(description: impl Into<String>) -> Self {
        Self::NotFound(body("not_found", description))
    }

    /// 503 `temporarily_unavailable`.
    pub fn unavailable(description: impl Into<String>) -> Self {
        Self::Unavailable(body("temporarily_unavailable", description))
    }

    /// 500, logging the real cause.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error_chain(cause), "internal error");
        Self::Internal(body("server_error", "internal server error"))
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl From<AccountError> for ApiError {
    fn from(err: AccountError) -> Self {
        match err {
            AccountError::InvalidCredentials => {
                Self::Unauthorized(body("invalid_grant", err.to_string()), None)
            }
            AccountError::InvalidUsername
            | AccountError::InvalidPassword
            | AccountError::InvalidRole => Self::invalid_request(err.to_string()),
            AccountError::UsernameTaken => Self::Conflict(body("conflict", err.to_string())),
            AccountError::NotFound => Self::not_found(err.to_string()),
            AccountError::Hash(_) | AccountError::Store(_) => Self::internal(&err),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::NoSigningKey => Self::unavailable(err.to_string()),
            TokenError::Key(_) | TokenError::Store(_) => Self::internal(&err),
            refused => Self::invalid_token(refused.to_string()),
        }
    }
}

impl From<KeyError> for ApiError {
    fn from(err: KeyError) -> Self {
        match err {
            KeyError::RotationTooEarly { .. } => {
                Self::Conflict(body("rotation_too_early", err.to_string()))
            }
            KeyError::Busy => Self::Conflict(body("conflict", err.to_string())),
            KeyError::NotFound => Self::not_found("no such key (or already revoked)"),
            KeyError::Import(_) => Self::invalid_request(err.to_string()),
            _ => Self::internal(&err),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        Self::internal(&err)
    }
}

/// Turns an error raised outside our handlers into the SPEC's JSON shape.
pub async fn render_poem_error(err: poem::Error) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    let status = err.status();
    let (code, description) = match status {
        StatusCode::UNAUTHORIZED => ("invalid_token", "a valid bearer token is required".into()),
        StatusCode::NOT_FOUND => ("not_found", "no such route".into()),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed".into()),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "request_too_large",
            "the request body exceeds the size limit".into(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media_type", err.to_string()),
        s if s.is_server_error() => {
            tracing::error!(error = %err, status = %s, "request failed");
            ("server_error", "internal server error".into())
        }
        _ => ("invalid_request", err.to_string()),
    };
    // poem reports some client mistakes as 5xx-free 4xx already; anything
    // else that is not an explicit server failure stays a client error.
    let status = if status.is_client_error() || status.is_server_error() {
        status
    } else {
        StatusCode::BAD_REQUEST
    };
    let mut response = body(code, description).into_response();
    response.set_status(status);
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(BEARER_INVALID_TOKEN),
        );
    }
    response
}
