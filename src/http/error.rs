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

use crate::accounts::{AccountError, ClientError, Throttled};
use crate::keys::KeyError;
use crate::store::StoreError;
use crate::token::{GrantError, TokenError};

/// `WWW-Authenticate` value for a missing or refused bearer token.
pub const BEARER_INVALID_TOKEN: &str = "Bearer error=\"invalid_token\"";
/// `WWW-Authenticate` value for a valid token without the needed role.
pub const BEARER_INSUFFICIENT_SCOPE: &str = "Bearer error=\"insufficient_scope\"";
/// `WWW-Authenticate` value when client authentication failed (RFC 6749
/// §5.2: the client may retry with HTTP Basic).
pub const BASIC_CLIENT_REALM: &str = "Basic realm=\"keyturn\"";
/// `Cache-Control` of every OAuth endpoint response (RFC 6749 §5.1).
pub const NO_STORE: &str = "no-store";
/// `Pragma` of every OAuth endpoint response (RFC 6749 §5.1).
pub const NO_CACHE: &str = "no-cache";
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
    /// Too many failed logins for this username or from this address.
    #[oai(status = 429)]
    TooManyRequests(Json<ErrorBody>, #[oai(header = "Retry-After")] String),
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

impl From<Throttled> for ApiError {
    fn from(throttled: Throttled) -> Self {
        Self::TooManyRequests(
            body(
                "too_many_requests",
                format!(
                    "too many failed logins; retry in {} seconds",
                    throttled.retry_after
                ),
            ),
            throttled.retry_after.to_string(),
        )
    }
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

impl From<ClientError> for ApiError {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::InvalidClientId
            | ClientError::ReservedClientId
            | ClientError::InvalidScope
            | ClientError::InvalidAudience
            | ClientError::InvalidGrantType => Self::invalid_request(err.to_string()),
            ClientError::ClientIdTaken => Self::Conflict(body("conflict", err.to_string())),
            ClientError::NotFound => Self::not_found(err.to_string()),
            ClientError::InvalidCredentials => Self::Unauthorized(
                body("invalid_client", err.to_string()),
                Some(BASIC_CLIENT_REALM.to_owned()),
            ),
            ClientError::Random | ClientError::Store(_) => Self::internal(&err),
        }
    }
}

impl From<GrantError> for ApiError {
    fn from(err: GrantError) -> Self {
        match err {
            GrantError::Token(err) => err.into(),
            other => Self::internal(&other),
        }
    }
}

/// Every error response of the OAuth endpoints (`/oauth/token`,
/// `/oauth/revoke`, `/oauth/introspect`): RFC 6749 §5.2 codes, with
/// `Cache-Control: no-store` and `Pragma: no-cache`.
#[derive(Debug, ApiResponse)]
pub enum OAuthError {
    /// `invalid_request`, `invalid_grant`, `unauthorized_client`,
    /// `unsupported_grant_type` or `invalid_scope`.
    #[oai(status = 400)]
    BadRequest(
        Json<ErrorBody>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
    /// `invalid_client`: unknown client, wrong secret, or missing client
    /// authentication.
    #[oai(status = 401)]
    InvalidClient(
        Json<ErrorBody>,
        #[oai(header = "WWW-Authenticate")] String,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
    /// `temporarily_unavailable`: no signing key right now.
    #[oai(status = 503)]
    Unavailable(
        Json<ErrorBody>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
    /// `server_error`; details are only in the server log.
    #[oai(status = 500)]
    Internal(
        Json<ErrorBody>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
}

impl OAuthError {
    fn bad_request(code: &str, description: impl Into<String>) -> Self {
        Self::BadRequest(body(code, description), NO_STORE.into(), NO_CACHE.into())
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::bad_request("invalid_request", description)
    }

    /// 400 `unsupported_grant_type`.
    pub fn unsupported_grant_type(description: impl Into<String>) -> Self {
        Self::bad_request("unsupported_grant_type", description)
    }

    /// 401 `invalid_client` with `WWW-Authenticate: Basic realm="keyturn"`.
    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::InvalidClient(
            body("invalid_client", description),
            BASIC_CLIENT_REALM.into(),
            NO_STORE.into(),
            NO_CACHE.into(),
        )
    }

    /// 500, logging the real cause.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %error_chain(cause), "internal error");
        Self::Internal(
            body("server_error", "internal server error"),
            NO_STORE.into(),
            NO_CACHE.into(),
        )
    }
}

impl From<ClientError> for OAuthError {
    fn from(err: ClientError) -> Self {
        match err {
            ClientError::InvalidCredentials | ClientError::NotFound => {
                Self::invalid_client(err.to_string())
            }
            ClientError::Random | ClientError::Store(_) => Self::internal(&err),
            other => Self::invalid_request(other.to_string()),
        }
    }
}

impl From<GrantError> for OAuthError {
    fn from(err: GrantError) -> Self {
        match err {
            GrantError::InvalidGrant(_) => Self::bad_request("invalid_grant", err.to_string()),
            GrantError::UnauthorizedClient(_) => {
                Self::bad_request("unauthorized_client", err.to_string())
            }
            GrantError::InvalidScope(_) => Self::bad_request("invalid_scope", err.to_string()),
            GrantError::Token(TokenError::NoSigningKey) => Self::Unavailable(
                body("temporarily_unavailable", err.to_string()),
                NO_STORE.into(),
                NO_CACHE.into(),
            ),
            GrantError::Token(_) | GrantError::Store(_) => Self::internal(&err),
        }
    }
}

impl From<StoreError> for OAuthError {
    fn from(err: StoreError) -> Self {
        Self::internal(&err)
    }
}

/// Adds `Cache-Control: no-store` and `Pragma: no-cache` to a response that
/// lacks them: every response of the OAuth endpoints carries them, even the
/// errors poem raises before a handler runs (wrong content type, bad form).
pub fn ensure_no_store(response: &mut Response) {
    let headers = response.headers_mut();
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
    }
    if !headers.contains_key(header::PRAGMA) {
        headers.insert(header::PRAGMA, HeaderValue::from_static(NO_CACHE));
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
