//! The one place that decides status codes and error bodies.
//!
//! Every domain error is classified once, by its [`Classify`] impl below
//! (the table), into a [`Failure`]: the status, the error code, a
//! description safe to show, and, for the server's own failures only, the
//! source chain to log. Both renderers take a `Failure`: [`ApiError`] for
//! every route, [`OAuthError`] for the OAuth endpoints, which add
//! `Cache-Control: no-store` and answer every client error but 401 with 400
//! (RFC 6749 §5.2). So a failure gets the same code wherever it surfaces,
//! and a client's mistake is never a 500.
//!
//! Errors raised by poem itself (bad JSON, wrong content type, missing
//! bearer, unknown route, oversized body) pass through
//! [`render_poem_error`] so every error has the SPEC's JSON shape.

use std::fmt::Display;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse as _, Response};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

use super::cookies::CsrfError;
use crate::accounts::{AccountError, ClientAuthError, ClientError, HashError, Throttled};
use crate::audit::AuditError;
use crate::keys::KeyError;
use crate::store::StoreError;
use crate::token::{GrantError, LoginError, TokenError};

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
/// `Retry-After` of every 503: the store or a signing key is usually back
/// within seconds (the pool gives up on the store after 2 s).
const RETRY_AFTER_UNAVAILABLE: &str = "2";

/// The error body of every failed request (RFC 6749 §5.2 shape).
#[derive(Debug, Object)]
#[oai(example)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `invalid_request`, `invalid_token`.
    pub error: String,
    /// Human-readable explanation, safe to show.
    pub error_description: String,
}

impl poem_openapi::types::Example for ErrorBody {
    /// What Swagger UI shows for every error response (one schema serves
    /// them all, so the example is the most common one).
    fn example() -> Self {
        ErrorBody {
            error: "invalid_request".to_owned(),
            error_description: "the request body is not valid JSON".to_owned(),
        }
    }
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

/// What kind of answer a failure gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 400: the request is malformed or breaks a rule.
    BadRequest,
    /// 401, with this `WWW-Authenticate` challenge.
    Unauthorized(Challenge),
    /// 403: a valid bearer token without the needed role.
    Forbidden,
    /// 403 without a Bearer challenge, on every route (the token endpoint
    /// too): the token is fine, but a cookie request lacks the proof that
    /// the page itself sent it (SPEC §5a). No new token would help, so
    /// `insufficient_scope` would mislead.
    CsrfRefused,
    /// 404.
    NotFound,
    /// 409: exists already, or conflicts with the resource's state.
    Conflict,
    /// 429, with `Retry-After`.
    TooManyRequests {
        /// Seconds until the next attempt may succeed.
        retry_after: i64,
    },
    /// 503: not ready (store unreachable, no signing key).
    Unavailable,
    /// 503 with `Retry-After`: too busy right now (the hashing queue is full).
    Overloaded {
        /// Seconds after which a retry is sensible.
        retry_after: i64,
    },
    /// 500: the server's own failure; the cause is logged, never sent.
    Internal,
}

/// The `WWW-Authenticate` challenge of a 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// None (a failed login: there is nothing to retry with).
    None,
    /// `Bearer error="invalid_token"`.
    Bearer,
    /// `Basic realm="keyturn"`: retry with client authentication.
    Basic,
}

impl Challenge {
    fn header(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Bearer => Some(BEARER_INVALID_TOKEN),
            Self::Basic => Some(BASIC_CLIENT_REALM),
        }
    }
}

/// A classified failure: how to answer it, and what to log.
#[derive(Debug)]
pub struct Failure {
    status: Status,
    code: &'static str,
    description: String,
    /// The source chain of a server failure; logged when rendered.
    cause: Option<String>,
}

impl Failure {
    /// A failure answered with `status`, `code` and a safe description.
    pub fn new(status: Status, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            cause: None,
        }
    }

    /// As [`Failure::new`], described by a domain error's display text
    /// (safe to show, by each domain error's contract).
    fn of(status: Status, code: &'static str, err: &impl Display) -> Self {
        Self::new(status, code, err.to_string())
    }

    /// 500 `server_error`: the client learns nothing, the log gets the
    /// cause with its whole source chain.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        Self {
            cause: Some(error_chain(cause)),
            ..Self::new(Status::Internal, "server_error", "internal server error")
        }
    }

    /// Logs a server failure's cause; called once, when rendered.
    fn log(&self) {
        if let Some(cause) = &self.cause {
            tracing::error!(error = %cause, "internal error");
        }
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

/// A domain error's place in the table: how the HTTP API answers it.
pub trait Classify {
    /// The answer to this error.
    fn classify(&self) -> Failure;
}

// The table. Every arm is explicit, so a new variant is a compile error
// here until someone decides whose mistake it is.

impl Classify for Throttled {
    fn classify(&self) -> Failure {
        Failure::new(
            Status::TooManyRequests {
                retry_after: self.retry_after,
            },
            "too_many_requests",
            format!(
                "too many failed attempts; retry in {} seconds",
                self.retry_after
            ),
        )
    }
}

impl Classify for CsrfError {
    fn classify(&self) -> Failure {
        Failure::of(Status::CsrfRefused, "csrf_failed", self)
    }
}

impl Classify for AccountError {
    fn classify(&self) -> Failure {
        match self {
            Self::InvalidCredentials => {
                Failure::of(Status::Unauthorized(Challenge::None), "invalid_grant", self)
            }
            Self::InvalidUsername | Self::InvalidPassword | Self::InvalidRole => {
                Failure::of(Status::BadRequest, "invalid_request", self)
            }
            Self::UsernameTaken | Self::LastAdmin => {
                Failure::of(Status::Conflict, "conflict", self)
            }
            Self::NotFound => Failure::of(Status::NotFound, "not_found", self),
            Self::Hash(HashError::Busy) => Failure::of(
                Status::Overloaded { retry_after: 1 },
                "temporarily_unavailable",
                self,
            ),
            Self::Store(e) => e.classify(),
            Self::Hash(_) => Failure::internal(self),
        }
    }
}

impl Classify for ClientError {
    fn classify(&self) -> Failure {
        match self {
            Self::InvalidClientId
            | Self::ReservedClientId
            | Self::InvalidScope
            | Self::InvalidAudience
            | Self::InvalidGrantType => Failure::of(Status::BadRequest, "invalid_request", self),
            Self::ClientIdTaken => Failure::of(Status::Conflict, "conflict", self),
            Self::NotFound => Failure::of(Status::NotFound, "not_found", self),
            Self::InvalidCredentials => Failure::of(
                Status::Unauthorized(Challenge::Basic),
                "invalid_client",
                self,
            ),
            Self::Store(e) => e.classify(),
            Self::Random => Failure::internal(self),
        }
    }
}

impl Classify for ClientAuthError {
    fn classify(&self) -> Failure {
        match self {
            Self::Throttled(e) => e.classify(),
            Self::Client(e) => e.classify(),
        }
    }
}

impl Classify for LoginError {
    fn classify(&self) -> Failure {
        match self {
            Self::Throttled(e) => e.classify(),
            Self::Account(e) => e.classify(),
            Self::Token(e) => e.classify(),
        }
    }
}

impl Classify for TokenError {
    fn classify(&self) -> Failure {
        match self {
            // The server's keyring is in memory, so keys are never
            // "unavailable" here; the arm keeps the verifier's rule anyway.
            Self::Invalid(e) if e.is_unavailable() => {
                Failure::of(Status::Unavailable, "temporarily_unavailable", self)
            }
            Self::Invalid(_) | Self::Revoked => Failure::of(
                Status::Unauthorized(Challenge::Bearer),
                "invalid_token",
                self,
            ),
            Self::NoSigningKey | Self::StatusUnknown => {
                Failure::of(Status::Unavailable, "temporarily_unavailable", self)
            }
            // The same answer as a wrong password, which it now is.
            Self::UserChanged => {
                Failure::of(Status::Unauthorized(Challenge::None), "invalid_grant", self)
            }
            Self::Store(e) => e.classify(),
            Self::Key(_) => Failure::internal(self),
        }
    }
}

impl Classify for GrantError {
    fn classify(&self) -> Failure {
        match self {
            Self::InvalidGrant(_) => Failure::of(Status::BadRequest, "invalid_grant", self),
            Self::UnauthorizedClient(_) => {
                Failure::of(Status::BadRequest, "unauthorized_client", self)
            }
            Self::InvalidScope(_) => Failure::of(Status::BadRequest, "invalid_scope", self),
            Self::Token(err) => err.classify(),
            Self::Store(e) => e.classify(),
        }
    }
}

impl Classify for KeyError {
    fn classify(&self) -> Failure {
        match self {
            Self::RotationTooEarly { .. } => {
                Failure::of(Status::Conflict, "rotation_too_early", self)
            }
            Self::Busy => Failure::of(Status::Conflict, "conflict", self),
            Self::NotFound => Failure::new(
                Status::NotFound,
                "not_found",
                "no such key (or already revoked)",
            ),
            Self::Import(_) => Failure::of(Status::BadRequest, "invalid_request", self),
            Self::RewrapSameKey => Failure::of(Status::Conflict, "conflict", self),
            // A server started before a master-key change: a configuration
            // problem of this instance, logged with its cause.
            Self::MasterKeyChanged
            | Self::Generation(_)
            | Self::Seal { .. }
            | Self::Unseal { .. }
            | Self::Corrupt { .. }
            | Self::Signing { .. }
            | Self::Transition { .. }
            | Self::Store(_) => Failure::internal(self),
        }
    }
}

impl Classify for AuditError {
    fn classify(&self) -> Failure {
        match self {
            Self::BadQuery(_) => Failure::of(Status::BadRequest, "invalid_request", self),
            Self::Store(e) => e.classify(),
        }
    }
}

impl Classify for StoreError {
    /// Domain modules turn the store's `Conflict` and `NotFound` into their
    /// own errors; any other store error that gets here is the server's,
    /// except an unreachable store: that passes, so the client may retry.
    fn classify(&self) -> Failure {
        match self {
            Self::Unavailable(_) => {
                tracing::warn!(error = %self, "store unreachable");
                Failure::new(
                    Status::Unavailable,
                    "temporarily_unavailable",
                    "the store is unreachable; retry shortly",
                )
            }
            Self::UnstorableText => Failure::of(Status::BadRequest, "invalid_request", self),
            _ => Failure::internal(self),
        }
    }
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
    /// The token is valid but lacks the required role (with
    /// `WWW-Authenticate: Bearer error="insufficient_scope"`), or a
    /// cookie request lacks its `X-CSRF-Token` (`csrf_failed`, no challenge).
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
    /// The server is not ready (store unreachable or no signing key), or
    /// too busy checking passwords (then with `Retry-After`).
    #[oai(status = 503)]
    Unavailable(
        Json<ErrorBody>,
        #[oai(header = "Retry-After")] Option<String>,
    ),
    /// An unexpected failure; details are only in the server log.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
}

impl ApiError {
    /// 400 `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Failure::new(Status::BadRequest, "invalid_request", description).into()
    }

    /// 401 with `WWW-Authenticate: Bearer error="invalid_token"`.
    pub fn invalid_token(description: impl Into<String>) -> Self {
        Failure::new(
            Status::Unauthorized(Challenge::Bearer),
            "invalid_token",
            description,
        )
        .into()
    }

    /// 403 `forbidden`: the token lacks a role.
    pub fn forbidden(description: impl Into<String>) -> Self {
        Failure::new(Status::Forbidden, "forbidden", description).into()
    }

    /// 404 `not_found`.
    pub fn not_found(description: impl Into<String>) -> Self {
        Failure::new(Status::NotFound, "not_found", description).into()
    }

    /// 503 `temporarily_unavailable`.
    pub fn unavailable(description: impl Into<String>) -> Self {
        Failure::new(Status::Unavailable, "temporarily_unavailable", description).into()
    }

    /// 500, logging the real cause.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        Failure::internal(cause).into()
    }
}

impl From<Failure> for ApiError {
    fn from(failure: Failure) -> Self {
        failure.log();
        let body = body(failure.code, failure.description);
        match failure.status {
            Status::BadRequest => Self::BadRequest(body),
            Status::Unauthorized(challenge) => {
                Self::Unauthorized(body, challenge.header().map(str::to_owned))
            }
            Status::Forbidden => Self::Forbidden(body, Some(BEARER_INSUFFICIENT_SCOPE.to_owned())),
            Status::CsrfRefused => Self::Forbidden(body, None),
            Status::NotFound => Self::NotFound(body),
            Status::Conflict => Self::Conflict(body),
            Status::TooManyRequests { retry_after } => {
                Self::TooManyRequests(body, retry_after.to_string())
            }
            Status::Unavailable => Self::Unavailable(body, Some(RETRY_AFTER_UNAVAILABLE.into())),
            Status::Overloaded { retry_after } => {
                Self::Unavailable(body, Some(retry_after.to_string()))
            }
            Status::Internal => Self::Internal(body),
        }
    }
}

impl<E: Classify> From<E> for ApiError {
    fn from(err: E) -> Self {
        err.classify().into()
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
    /// `csrf_failed`: a refresh by the `keyturn_refresh` cookie without
    /// the matching `X-CSRF-Token` (SPEC §5a; the same answer as on every
    /// other cookie route).
    #[oai(status = 403)]
    Forbidden(
        Json<ErrorBody>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
    /// Too many failed client authentications for this client or address.
    #[oai(status = 429)]
    TooManyRequests(
        Json<ErrorBody>,
        #[oai(header = "Retry-After")] String,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
    /// `temporarily_unavailable`: no signing key right now.
    #[oai(status = 503)]
    Unavailable(
        Json<ErrorBody>,
        #[oai(header = "Retry-After")] String,
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
    /// 400 `invalid_request`.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Failure::new(Status::BadRequest, "invalid_request", description).into()
    }

    /// 400 `unsupported_grant_type`.
    pub fn unsupported_grant_type(description: impl Into<String>) -> Self {
        Failure::new(Status::BadRequest, "unsupported_grant_type", description).into()
    }

    /// 401 `invalid_client` with `WWW-Authenticate: Basic realm="keyturn"`.
    pub fn invalid_client(description: impl Into<String>) -> Self {
        Failure::new(
            Status::Unauthorized(Challenge::Basic),
            "invalid_client",
            description,
        )
        .into()
    }

    /// 500, logging the real cause.
    pub fn internal(cause: &dyn std::error::Error) -> Self {
        Failure::internal(cause).into()
    }
}

impl From<Failure> for OAuthError {
    fn from(failure: Failure) -> Self {
        failure.log();
        let body = body(failure.code, failure.description);
        match failure.status {
            // A 401 from an OAuth endpoint invites client authentication
            // (RFC 6749 §5.2) unless the failure names another challenge.
            Status::Unauthorized(challenge) => Self::InvalidClient(
                body,
                challenge.header().unwrap_or(BASIC_CLIENT_REALM).to_owned(),
                NO_STORE.into(),
                NO_CACHE.into(),
            ),
            // RFC 6749 §5.2: 400 unless specified otherwise.
            Status::BadRequest | Status::Forbidden | Status::NotFound | Status::Conflict => {
                Self::BadRequest(body, NO_STORE.into(), NO_CACHE.into())
            }
            Status::CsrfRefused => Self::Forbidden(body, NO_STORE.into(), NO_CACHE.into()),
            Status::TooManyRequests { retry_after } => Self::TooManyRequests(
                body,
                retry_after.to_string(),
                NO_STORE.into(),
                NO_CACHE.into(),
            ),
            Status::Unavailable => Self::Unavailable(
                body,
                RETRY_AFTER_UNAVAILABLE.into(),
                NO_STORE.into(),
                NO_CACHE.into(),
            ),
            Status::Overloaded { retry_after } => Self::Unavailable(
                body,
                retry_after.to_string(),
                NO_STORE.into(),
                NO_CACHE.into(),
            ),
            Status::Internal => Self::Internal(body, NO_STORE.into(), NO_CACHE.into()),
        }
    }
}

impl<E: Classify> From<E> for OAuthError {
    fn from(err: E) -> Self {
        err.classify().into()
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
        _ => ("invalid_request", payload_description(err.to_string())),
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

/// The answer to a request whose handler ran past [`HANDLER_DEADLINE`]
/// (in practice a store that stopped answering without closing the
/// connection): 503 `temporarily_unavailable` with `Retry-After`, so the
/// client is told to retry instead of seeing its connection dropped.
pub fn handler_timed_out() -> Response {
    tracing::warn!("request ran past the handler deadline; answered 503");
    let mut response = body(
        "temporarily_unavailable",
        "the server could not complete the request in time; retry shortly",
    )
    .into_response();
    response.set_status(StatusCode::SERVICE_UNAVAILABLE);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_UNAVAILABLE),
    );
    response
}

/// How long a handler may run (after the body was read) before the request
/// is answered 503: past the store's 2 s connection wait and 5 s statement
/// timeout, so those answer first, and short of the connection's 10 s
/// deadline (`connection::REQUEST_DEADLINE`), which closes without an
/// answer. A statement sent to a database that went silent (no reset, no
/// answer) is bounded only by this.
pub const HANDLER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(8);

/// poem-openapi's type errors on a body echo the value sent (a password in
/// the wrong field, say) and name our Rust request types ("occurred while
/// parsing \"LoginRequest\""). Keep only the expected JSON type.
fn payload_description(message: String) -> String {
    const TYPE_ERROR: &str = "parse request payload error: Expected input type \"";
    let Some(rest) = message.strip_prefix(TYPE_ERROR) else {
        return message;
    };
    let expected = rest.split('"').next().unwrap_or_default();
    let json_types = ["string", "boolean", "integer", "number", "array", "object"];
    let expected = json_types
        .into_iter()
        .find(|t| expected.starts_with(t))
        .unwrap_or("object");
    format!(
        "parse request payload error: a value in the body is not of the expected type \
         (expected {expected}; see /openapi.json)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::{GrantType, HashError};

    /// Status, error code and `WWW-Authenticate` of an `ApiError`.
    fn api(err: impl Into<ApiError>) -> (u16, String, Option<String>) {
        let (status, Json(body), challenge) = match err.into() {
            ApiError::BadRequest(b) => (400, b, None),
            ApiError::Unauthorized(b, c) => (401, b, c),
            ApiError::Forbidden(b, c) => (403, b, c),
            ApiError::NotFound(b) => (404, b, None),
            ApiError::Conflict(b) => (409, b, None),
            ApiError::TooManyRequests(b, _) => (429, b, None),
            ApiError::Unavailable(b, _) => (503, b, None),
            ApiError::Internal(b) => (500, b, None),
        };
        (status, body.error, challenge)
    }

    /// Status, error code and `WWW-Authenticate` of an `OAuthError`.
    fn oauth(err: impl Into<OAuthError>) -> (u16, String, Option<String>) {
        let (status, Json(body), challenge) = match err.into() {
            OAuthError::BadRequest(b, ..) => (400, b, None),
            OAuthError::InvalidClient(b, c, ..) => (401, b, Some(c)),
            OAuthError::Forbidden(b, ..) => (403, b, None),
            OAuthError::TooManyRequests(b, ..) => (429, b, None),
            OAuthError::Unavailable(b, ..) => (503, b, None),
            OAuthError::Internal(b, ..) => (500, b, None),
        };
        (status, body.error, challenge)
    }

    fn store_failure() -> StoreError {
        StoreError::Corrupt("row 7".into())
    }

    #[test]
    fn payload_type_errors_echo_neither_the_value_nor_our_type_names() {
        let poem = "parse request payload error: Expected input type \"string\", found [\"hunter2\"]. \
                    (occurred while parsing \"LoginRequest\")";
        let shown = payload_description(poem.into());
        assert!(
            !shown.contains("hunter2") && !shown.contains("LoginRequest"),
            "{shown}"
        );
        assert!(shown.contains("expected string"), "{shown}");
        let shown = payload_description(
            "parse request payload error: Expected input type \"CreateClient\", found \"x\"."
                .into(),
        );
        assert!(shown.contains("expected object") && !shown.contains("CreateClient"));
        let other = "parse request payload error: duplicate field `token`";
        assert_eq!(payload_description(other.into()), other);
    }

    #[test]
    fn grant_errors_are_the_clients_mistake_on_every_route() {
        // bbd6ef6 answered all three with 500 through `ApiError`.
        let answer = api(GrantError::InvalidGrant("the refresh token is invalid"));
        assert_eq!((answer.0, answer.1.as_str()), (400, "invalid_grant"));
        let answer = api(GrantError::InvalidScope("the scope parameter is malformed"));
        assert_eq!((answer.0, answer.1.as_str()), (400, "invalid_scope"));
        let answer = api(GrantError::UnauthorizedClient(GrantType::RefreshToken));
        assert_eq!((answer.0, answer.1.as_str()), (400, "unauthorized_client"));
    }

    #[test]
    fn the_table() {
        let bearer = Some(BEARER_INVALID_TOKEN.to_owned());
        let basic = Some(BASIC_CLIENT_REALM.to_owned());
        type Answer = (u16, &'static str, Option<String>);
        /// The error, its `ApiError` answer, its `OAuthError` answer.
        type Row = (fn() -> Failure, Answer, Answer);
        let rows: Vec<Row> = vec![
            (
                || Throttled { retry_after: 9 }.classify(),
                (429, "too_many_requests", None),
                (429, "too_many_requests", None),
            ),
            (
                || AccountError::Hash(HashError::Busy).classify(),
                (503, "temporarily_unavailable", None),
                (503, "temporarily_unavailable", None),
            ),
            (
                || AccountError::InvalidCredentials.classify(),
                (401, "invalid_grant", None),
                (401, "invalid_grant", basic.clone()),
            ),
            (
                || AccountError::InvalidPassword.classify(),
                (400, "invalid_request", None),
                (400, "invalid_request", None),
            ),
            (
                || AccountError::UsernameTaken.classify(),
                (409, "conflict", None),
                (400, "conflict", None),
            ),
            (
                || AccountError::LastAdmin.classify(),
                (409, "conflict", None),
                (400, "conflict", None),
            ),
            (
                || AccountError::NotFound.classify(),
                (404, "not_found", None),
                (400, "not_found", None),
            ),
            (
                || AccountError::Store(store_failure()).classify(),
                (500, "server_error", None),
                (500, "server_error", None),
            ),
            (
                || ClientError::InvalidGrantType.classify(),
                (400, "invalid_request", None),
                (400, "invalid_request", None),
            ),
            (
                || ClientError::ClientIdTaken.classify(),
                (409, "conflict", None),
                (400, "conflict", None),
            ),
            (
                || ClientError::InvalidCredentials.classify(),
                (401, "invalid_client", basic.clone()),
                (401, "invalid_client", basic.clone()),
            ),
            (
                || ClientError::Random.classify(),
                (500, "server_error", None),
                (500, "server_error", None),
            ),
            (
                || TokenError::Revoked.classify(),
                (401, "invalid_token", bearer.clone()),
                (401, "invalid_token", bearer.clone()),
            ),
            (
                || CsrfError::Missing.classify(),
                (403, "csrf_failed", None),
                (403, "csrf_failed", None),
            ),
            (
                || CsrfError::Mismatch.classify(),
                (403, "csrf_failed", None),
                (403, "csrf_failed", None),
            ),
            (
                || TokenError::NoSigningKey.classify(),
                (503, "temporarily_unavailable", None),
                (503, "temporarily_unavailable", None),
            ),
            (
                || GrantError::InvalidGrant("x").classify(),
                (400, "invalid_grant", None),
                (400, "invalid_grant", None),
            ),
            (
                || GrantError::UnauthorizedClient(GrantType::ClientCredentials).classify(),
                (400, "unauthorized_client", None),
                (400, "unauthorized_client", None),
            ),
            (
                || GrantError::InvalidScope("x").classify(),
                (400, "invalid_scope", None),
                (400, "invalid_scope", None),
            ),
            (
                || GrantError::Token(TokenError::NoSigningKey).classify(),
                (503, "temporarily_unavailable", None),
                (503, "temporarily_unavailable", None),
            ),
            (
                || GrantError::Store(store_failure()).classify(),
                (500, "server_error", None),
                (500, "server_error", None),
            ),
            (
                || KeyError::Busy.classify(),
                (409, "conflict", None),
                (400, "conflict", None),
            ),
            (
                || KeyError::NotFound.classify(),
                (404, "not_found", None),
                (400, "not_found", None),
            ),
            (
                || KeyError::Import(crate::keys::ImportError::NotPem).classify(),
                (400, "invalid_request", None),
                (400, "invalid_request", None),
            ),
            (
                || store_failure().classify(),
                (500, "server_error", None),
                (500, "server_error", None),
            ),
        ];
        for (failure, want_api, want_oauth) in rows {
            let got = api(failure());
            assert_eq!((got.0, got.1.as_str(), got.2), want_api, "{:?}", failure());
            let got = oauth(failure());
            assert_eq!(
                (got.0, got.1.as_str(), got.2),
                want_oauth,
                "{:?}",
                failure()
            );
        }
    }

    #[test]
    fn server_failures_log_their_cause_and_show_nothing() {
        let err = AccountError::Hash(HashError::Params(argon2::Error::MemoryTooLittle));
        let failure = err.classify();
        assert_eq!(
            failure.cause.as_deref(),
            Some("password hashing failed: invalid argon2 parameters: memory cost is too small"),
            "the whole source chain is logged"
        );
        assert_eq!(failure.description, "internal server error");
        let ApiError::Internal(Json(body)) = ApiError::from(failure) else {
            panic!("not a 500");
        };
        assert_eq!(body.error_description, "internal server error");

        let client_mistake = ClientError::InvalidCredentials.classify();
        assert!(
            client_mistake.cause.is_none(),
            "client errors are not logged"
        );
        assert_eq!(client_mistake.description, "client authentication failed");
    }
}
