//! `POST /login` and `GET /profile`.

use std::sync::Arc;

use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use secrecy::SecretString;

use super::auth::BearerAuth;
use super::cookies::{CsrfValue, WithCookies};
use super::{ApiError, ApiTags, HttpState};

/// Where the tokens go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum Transport {
    /// In the body, for `Authorization: Bearer …` (the default).
    Bearer,
    /// In HttpOnly cookies, for browser front-ends (`KEYTURN_COOKIES=on`).
    Cookie,
}
/// A shortened access token, for the documented examples.
pub(super) const EXAMPLE_JWT: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Ik5mS0YtN2wxX2JuNzRCaVQ5UWxjbkdlMU5vQW1BQkdwd3JKN1l6bnhmdTgiLCJ0eXAiOiJhdCtqd3QifQ.eyJzdWIiOiI2ZjFjIn0.c2lnbmF0dXJl";

/// Credentials.
#[derive(Object)]
#[oai(example)]
pub struct LoginRequest {
    /// Username.
    pub username: String,
    /// Password. (Not `write_only`: this body is never sent back, and a
    /// write-only field would be left out of the example Swagger UI sends.)
    pub password: String,
    /// `cookie`: set the tokens as cookies instead of returning them.
    pub transport: Option<Transport>,
}

/// A cookie login or refresh: the tokens are in the cookies.
#[derive(Debug, Object)]
pub struct CookieSession {
    /// Always `cookie`.
    pub token_type: String,
    /// Access token (and cookie) lifetime in seconds.
    pub expires_in: u64,
    /// The CSRF value to send as `X-CSRF-Token` on state-changing requests
    /// (also in the `keyturn_csrf` cookie).
    pub csrf_token: String,
}

impl Example for LoginRequest {
    fn example() -> Self {
        Self {
            username: "alice".into(),
            password: "correct horse battery".into(),
            transport: None,
        }
    }
}

/// Issued tokens (RFC 6749 §5.1 shape).
#[derive(Debug, Object)]
#[oai(example)]
pub struct TokenResponse {
    /// Signed JWT access token (`typ: at+jwt`).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Access token lifetime in seconds.
    pub expires_in: u64,
    /// Opaque refresh token for `POST /oauth/token`.
    #[oai(skip_serializing_if_is_none)]
    pub refresh_token: Option<String>,
}

impl Example for TokenResponse {
    fn example() -> Self {
        Self {
            access_token: EXAMPLE_JWT.into(),
            token_type: "Bearer".into(),
            expires_in: 900,
            refresh_token: Some("Zq4bW9m2T0cU8yV1xR7eN3kL5pA6sD0fG2hJ4kL6zX8".into()),
        }
    }
}

#[derive(ApiResponse)]
pub enum LoginResponse {
    /// Logged in.
    #[oai(status = 200)]
    Ok(
        Json<TokenResponse>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
    /// Logged in with `"transport":"cookie"`: the tokens are in the
    /// `keyturn_access`, `keyturn_refresh` and `keyturn_csrf` cookies.
    #[oai(status = 200)]
    Cookie(
        Json<CookieSession>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
}

/// Who the token belongs to.
#[derive(Debug, Object)]
#[oai(example)]
pub struct Profile {
    /// Stable user id.
    pub sub: String,
    /// Username (absent for client tokens).
    pub username: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Space-separated scopes.
    pub scope: String,
}

impl Example for Profile {
    fn example() -> Self {
        Self {
            sub: "6f1c2a9e-0b7d-4c1e-9a53-2f4d8e7b1c30".into(),
            username: Some("alice".into()),
            roles: vec!["admin".into()],
            scope: String::new(),
        }
    }
}

pub struct SessionApi {
    state: Arc<HttpState>,
}

impl SessionApi {
    pub fn new(state: Arc<HttpState>) -> Self {
        Self { state }
    }
}

#[OpenApi(tag = "ApiTags::Auth")]
impl SessionApi {
    /// Log in with a username and password.
    ///
    /// Returns an access token to send as `Authorization: Bearer …` and a
    /// refresh token. Unknown user, wrong password and disabled user all
    /// answer the same 401 `invalid_grant`. After 5 failures for a username
    /// (or 50 from one address) within 5 minutes, further attempts get 429
    /// with `Retry-After` until the oldest failure is 5 minutes old.
    #[oai(path = "/login", method = "post")]
    async fn login(
        &self,
        req: &Request,
        body: Json<LoginRequest>,
    ) -> Result<WithCookies<LoginResponse>, ApiError> {
        let Json(LoginRequest {
            username,
            password,
            transport,
        }) = body;
        let csrf =
            match transport {
                Some(Transport::Cookie) if !self.state.cookies.enabled => {
                    return Err(ApiError::invalid_request(
                        "the cookie transport is off on this server (KEYTURN_COOKIES)",
                    ));
                }
                Some(Transport::Cookie) => Some(CsrfValue::generate().ok_or_else(|| {
                    ApiError::unavailable("no system randomness for a CSRF value")
                })?),
                Some(Transport::Bearer) | None => None,
            };
        let address = self.state.client_addr.of(req);
        let issued = self
            .state
            .login
            .login(
                &username,
                &SecretString::from(password),
                address,
                csrf.as_ref().map(CsrfValue::binding),
            )
            .await?;
        if let Some(csrf) = csrf {
            let cookies = self.state.cookies.session(
                &issued.access_token,
                issued.expires_in,
                issued.refresh_token.as_deref(),
                &csrf,
            );
            return Ok(WithCookies {
                response: LoginResponse::Cookie(
                    Json(CookieSession {
                        token_type: "cookie".into(),
                        expires_in: issued.expires_in,
                        csrf_token: csrf.as_str().to_owned(),
                    }),
                    "no-store".into(),
                    "no-cache".into(),
                ),
                cookies,
            });
        }
        Ok(WithCookies::none(LoginResponse::Ok(
            Json(TokenResponse {
                access_token: issued.access_token,
                token_type: "Bearer".into(),
                expires_in: issued.expires_in,
                refresh_token: issued.refresh_token,
            }),
            "no-store".into(),
            "no-cache".into(),
        )))
    }

    /// The caller's identity, from the bearer token or the access cookie.
    #[oai(path = "/profile", method = "get")]
    async fn profile(&self, auth: BearerAuth) -> Result<Json<Profile>, ApiError> {
        let claims = auth.claims(&self.state.tokens)?;
        Ok(Json(Profile {
            sub: claims.sub,
            username: claims.username,
            roles: claims.roles,
            scope: claims.scope,
        }))
    }
}
