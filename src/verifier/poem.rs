//! poem integration: protect a route in one line and read the claims.
//!
//! Put the [`Verifier`] in the app's data once, then either take
//! [`BearerClaims`] as a handler argument, or wrap endpoints with the
//! [`BearerAuth`] middleware ([`require_role`], [`require_scope`]):
//!
//! ```no_run
//! use keyturn::verifier::Verifier;
//! use keyturn::verifier::poem::{BearerClaims, require_role};
//! use poem::{EndpointExt, Route, get, handler};
//!
//! #[handler]
//! fn me(BearerClaims(claims): BearerClaims) -> String {
//!     format!("hello {}", claims.sub)
//! }
//!
//! #[handler]
//! fn admin() -> &'static str {
//!     "welcome, admin"
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::builder()
//!     .issuer_url("http://127.0.0.1:8080")
//!     .audience(["keyturn"])
//!     .build()
//!     .await?;
//! let app = Route::new()
//!     .at("/me", get(me))                                   // any valid token
//!     .at("/admin", get(admin).with(require_role("admin"))) // 403 without the role
//!     .data(verifier);
//! # Ok(()) }
//! ```
//!
//! Refusals follow RFC 6750 and keyturn's error shape: 401 with
//! `WWW-Authenticate: Bearer error="invalid_token"` and
//! `{"error":"invalid_token","error_description":"…"}` for a missing or bad
//! token; 403 with `error="insufficient_scope"` for a valid token lacking a
//! scope (`"insufficient_scope"`) or a role (`"forbidden"`); 503
//! `temporarily_unavailable` when the issuer's keys cannot be had.

use poem::error::ResponseError;
use poem::http::{StatusCode, header};
use poem::{Endpoint, FromRequest, Middleware, Request, RequestBody, Response};
use serde::de::DeserializeOwned;

use super::{Claims, Verifier, VerifyError};

/// Why a request was refused (converts into a poem error with the right
/// status, `WWW-Authenticate` header and JSON body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer …` header.
    #[error("missing bearer token")]
    MissingToken,
    /// The token was refused by the verifier.
    #[error(transparent)]
    Invalid(#[from] VerifyError),
    /// Valid token, but its `scope` lacks this scope (403 `insufficient_scope`).
    #[error("the token lacks the scope `{0}`")]
    InsufficientScope(String),
    /// Valid token, but its `roles` lack this role (403 `forbidden`).
    #[error("the token lacks the role `{0}`")]
    MissingRole(String),
    /// No [`Verifier`] in the request data: add `.data(verifier)` to the app
    /// (500; a server bug, not the client's).
    #[error("no verifier configured")]
    NotConfigured,
}

impl AuthError {
    fn code(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "invalid_token",
            AuthError::Invalid(e) if e.is_unavailable() => "temporarily_unavailable",
            AuthError::Invalid(_) => "invalid_token",
            AuthError::InsufficientScope(_) => "insufficient_scope",
            AuthError::MissingRole(_) => "forbidden",
            AuthError::NotConfigured => "server_error",
        }
    }

    /// What the client is told: the error's text, except for server-side
    /// problems whose details (URLs, fetch errors) are only logged.
    fn description(&self) -> String {
        match self {
            AuthError::Invalid(e) if e.is_unavailable() => {
                "the issuer's signing keys are temporarily unavailable".to_owned()
            }
            AuthError::NotConfigured => "internal error".to_owned(),
            other => other.to_string(),
        }
    }
}

/// Only characters that cannot break out of a quoted header parameter.
fn header_safe(value: &str) -> bool {
    value.len() <= 128
        && value
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

impl ResponseError for AuthError {
    fn status(&self) -> StatusCode {
        match self {
            AuthError::MissingToken => StatusCode::UNAUTHORIZED,
            AuthError::Invalid(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::Invalid(_) => StatusCode::UNAUTHORIZED,
            AuthError::InsufficientScope(_) | AuthError::MissingRole(_) => StatusCode::FORBIDDEN,
            AuthError::NotConfigured => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn as_response(&self) -> Response {
        let body = serde_json::json!({
            "error": self.code(),
            "error_description": self.description(),
        });
        let mut response = Response::builder()
            .status(self.status())
            .content_type("application/json")
            .header(header::CACHE_CONTROL, "no-store");
        let challenge = match self {
            AuthError::MissingToken => Some(r#"Bearer error="invalid_token""#.to_owned()),
            AuthError::Invalid(e) if !e.is_unavailable() => Some(format!(
                r#"Bearer error="invalid_token", error_description="{}""#,
                e.to_string().replace(['"', '\\'], "'")
            )),
            AuthError::InsufficientScope(scope) if header_safe(scope) => Some(format!(
                r#"Bearer error="insufficient_scope", scope="{scope}""#
            )),
            AuthError::InsufficientScope(_) | AuthError::MissingRole(_) => {
                Some(r#"Bearer error="insufficient_scope""#.to_owned())
            }
            _ => None,
        };
        if let Some(challenge) = challenge {
            response = response.header(header::WWW_AUTHENTICATE, challenge);
        }
        response.body(body.to_string())
    }
}

/// The bearer token of a request: `Authorization: Bearer <token>` (scheme
/// case-insensitive).
pub fn bearer_token(req: &Request) -> Result<&str, AuthError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::MissingToken)?;
    let value = value
        .to_str()
        .map_err(|_| VerifyError::Malformed("authorization header is not ASCII"))?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MissingToken);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(token)
}

/// A 403 unless `claims` has `role`.
///
/// ```
/// use keyturn::verifier::Claims;
/// use keyturn::verifier::poem::{AuthError, check_role};
///
/// let claims: Claims = serde_json::from_str(r#"{"sub":"u1","roles":["admin"]}"#).unwrap();
/// assert!(check_role(&claims, "admin").is_ok());
/// assert_eq!(check_role(&claims, "auditor"), Err(AuthError::MissingRole("auditor".into())));
/// ```
pub fn check_role<E>(claims: &Claims<E>, role: &str) -> Result<(), AuthError> {
    if claims.has_role(role) {
        Ok(())
    } else {
        Err(AuthError::MissingRole(role.to_owned()))
    }
}

/// A 403 `insufficient_scope` unless `claims` has `scope`.
pub fn check_scope<E>(claims: &Claims<E>, scope: &str) -> Result<(), AuthError> {
    if claims.has_scope(scope) {
        Ok(())
    } else {
        Err(AuthError::InsufficientScope(scope.to_owned()))
    }
}

async fn verify_request<E: DeserializeOwned>(
    req: &Request,
    verifier: Option<&Verifier>,
) -> Result<Claims<E>, AuthError> {
    let verifier = match verifier.or_else(|| req.data::<Verifier>()) {
        Some(v) => v,
        None => {
            tracing::error!(
                "keyturn verifier: no Verifier in the request data; add .data(verifier)"
            );
            return Err(AuthError::NotConfigured);
        }
    };
    let token = bearer_token(req)?;
    Ok(verifier.verify::<E>(token).await?)
}

/// Extractor: the verified claims of the request's bearer token, or a
/// 401/503 response. Needs the [`Verifier`] in the app data
/// (`.data(verifier)`). If a [`BearerAuth`] middleware already verified the
/// request and `E` is `()`, its claims are reused.
///
/// `BearerClaims<MyClaims>` deserializes the non-standard claims into
/// `MyClaims` (see [`Claims`]).
#[derive(Debug, Clone)]
pub struct BearerClaims<E = ()>(pub Claims<E>);

impl<E> BearerClaims<E> {
    /// A 403 unless the token has `role`; use with `?` in a handler.
    pub fn require_role(&self, role: &str) -> Result<(), AuthError> {
        check_role(&self.0, role)
    }

    /// A 403 `insufficient_scope` unless the token has `scope`.
    pub fn require_scope(&self, scope: &str) -> Result<(), AuthError> {
        check_scope(&self.0, scope)
    }
}

impl<'a, E> FromRequest<'a> for BearerClaims<E>
where
    E: DeserializeOwned + Clone + Send + Sync + 'static,
{
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        if let Some(claims) = req.extensions().get::<Claims<E>>() {
            return Ok(BearerClaims(claims.clone()));
        }
        Ok(BearerClaims(verify_request::<E>(req, None).await?))
    }
}

/// Middleware: refuse requests without a valid bearer token (401), and
/// optionally without a role or scope (403). The verified [`Claims`] are put
/// in the request extensions, so handlers can take `Data<&Claims>` or
/// [`BearerClaims`] without verifying again.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct BearerAuth {
    verifier: Option<Verifier>,
    role: Option<String>,
    scope: Option<String>,
}

/// Middleware requiring a valid token whose `roles` contain `role`.
pub fn require_role(role: impl Into<String>) -> BearerAuth {
    BearerAuth::new().role(role)
}

/// Middleware requiring a valid token whose `scope` contains `scope`.
pub fn require_scope(scope: impl Into<String>) -> BearerAuth {
    BearerAuth::new().scope(scope)
}

impl BearerAuth {
    /// Any valid token; the [`Verifier`] comes from the request data.
    pub fn new() -> Self {
        Self::default()
    }

    /// Any valid token, checked by this verifier (no need for `.data`).
    pub fn with_verifier(verifier: Verifier) -> Self {
        BearerAuth {
            verifier: Some(verifier),
            ..Self::default()
        }
    }

    /// Also require this role.
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }

    /// Also require this scope.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }
}

impl<Ep: Endpoint> Middleware<Ep> for BearerAuth {
    type Output = BearerAuthEndpoint<Ep>;

    fn transform(&self, ep: Ep) -> Self::Output {
        BearerAuthEndpoint {
            inner: ep,
            auth: self.clone(),
        }
    }
}

/// The endpoint produced by [`BearerAuth`].
#[derive(Debug)]
pub struct BearerAuthEndpoint<Ep> {
    inner: Ep,
    auth: BearerAuth,
}

impl<Ep: Endpoint> Endpoint for BearerAuthEndpoint<Ep> {
    type Output = Ep::Output;

    async fn call(&self, mut req: Request) -> poem::Result<Self::Output> {
        let claims: Claims = match req.extensions().get::<Claims>() {
            Some(claims) => claims.clone(),
            None => verify_request(&req, self.auth.verifier.as_ref()).await?,
        };
        if let Some(role) = &self.auth.role {
            check_role(&claims, role)?;
        }
        if let Some(scope) = &self.auth.scope {
            check_scope(&claims, scope)?;
        }
        req.extensions_mut().insert(claims);
        self.inner.call(req).await
    }
}

#[cfg(test)]
mod tests {
    use poem::http::{Method, StatusCode};
    use poem::web::Data;
    use poem::{EndpointExt, Route, get, handler};
    use serde_json::{Value, json};

    use super::*;
    use crate::verifier::tests::{TestKey, TestServer, claims, verifier_for};

    #[handler]
    fn me(BearerClaims(claims): BearerClaims) -> String {
        format!("hello {}", claims.sub)
    }

    #[handler]
    fn reports(claims: BearerClaims<Value>) -> poem::Result<String> {
        claims.require_scope("reports:read")?;
        Ok(format!("reports for {}", claims.0.sub))
    }

    #[handler]
    fn admin(claims: Data<&Claims>) -> String {
        format!("admin {}", claims.sub)
    }

    async fn call(
        app: &impl Endpoint,
        path: &str,
        token: Option<&str>,
    ) -> (StatusCode, Option<String>, Value) {
        let mut req = Request::builder().method(Method::GET).uri_str(path);
        if let Some(token) = token {
            req = req.header("Authorization", token);
        }
        let resp = app.get_response(req.finish()).await;
        let status = resp.status();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = resp.into_body().into_string().await.unwrap();
        let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
        (status, challenge, body)
    }

    #[tokio::test]
    async fn extractor_and_middleware_answer_401_403_and_200() {
        let key = TestKey::ed25519();
        let server = TestServer::issuer(&[&key], 300).await;
        let verifier = verifier_for(&server).await;
        let app = Route::new()
            .at("/me", get(me))
            .at("/reports", get(reports))
            .at("/admin", get(admin).with(require_role("admin")))
            .at("/scoped", get(admin).with(require_scope("orders:write")))
            .data(verifier);

        let user = key.sign(&claims(&server.base));
        let mut admin_claims = claims(&server.base);
        admin_claims["roles"] = json!(["admin"]);
        admin_claims["scope"] = json!("");
        let admin_token = key.sign(&admin_claims);

        let (status, _, body) = call(&app, "/me", Some(&format!("Bearer {user}"))).await;
        assert_eq!((status, body), (StatusCode::OK, json!("hello user-1")));
        let (status, _, _) = call(&app, "/me", Some(&format!("bearer  {user}"))).await;
        assert_eq!(status, StatusCode::OK);

        // Missing, wrong scheme, garbage, expired → 401 invalid_token.
        let mut expired = claims(&server.base);
        expired["exp"] = json!(1);
        let expired = key.sign(&expired);
        for auth in [
            None,
            Some("Basic dXNlcjpwYXNz".to_owned()),
            Some("Bearer".to_owned()),
            Some("Bearer not.a.jwt".to_owned()),
            Some(format!("Bearer {expired}")),
        ] {
            let (status, challenge, body) = call(&app, "/me", auth.as_deref()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
            assert!(
                challenge
                    .unwrap()
                    .starts_with(r#"Bearer error="invalid_token""#)
            );
            assert_eq!(body["error"], "invalid_token");
            assert!(body["error_description"].is_string());
        }
        let (_, _, body) = call(&app, "/me", Some(&format!("Bearer {expired}"))).await;
        assert_eq!(body["error_description"], "token expired");

        // Role via middleware.
        let (status, challenge, body) = call(&app, "/admin", Some(&format!("Bearer {user}"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            challenge.as_deref(),
            Some(r#"Bearer error="insufficient_scope""#)
        );
        assert_eq!(body["error"], "forbidden");
        let (status, _, body) = call(&app, "/admin", Some(&format!("Bearer {admin_token}"))).await;
        assert_eq!((status, body), (StatusCode::OK, json!("admin user-1")));
        let (status, _, _) = call(&app, "/admin", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        // Scope via middleware and via the extractor helper.
        let (status, challenge, body) =
            call(&app, "/scoped", Some(&format!("Bearer {user}"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            challenge.as_deref(),
            Some(r#"Bearer error="insufficient_scope", scope="orders:write""#)
        );
        assert_eq!(body["error"], "insufficient_scope");
        let (status, _, _) = call(&app, "/reports", Some(&format!("Bearer {user}"))).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, body) =
            call(&app, "/reports", Some(&format!("Bearer {admin_token}"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["error"], "insufficient_scope");
    }

    #[tokio::test]
    async fn missing_verifier_is_a_500_and_unavailable_keys_a_503() {
        let app = Route::new().at("/me", get(me));
        let (status, _, body) = call(&app, "/me", Some("Bearer a.b.c")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"], "server_error");

        let err = AuthError::Invalid(VerifyError::JwksUnavailable(
            "request failed: http://10.0.0.1/jwks".into(),
        ));
        let resp = err.as_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = resp.into_body().into_string().await.unwrap();
        assert!(
            !body.contains("10.0.0.1"),
            "internal details leaked: {body}"
        );
        assert!(body.contains("temporarily_unavailable"));
    }

    #[tokio::test]
    async fn with_verifier_needs_no_app_data() {
        let key = TestKey::ed25519();
        let server = TestServer::issuer(&[&key], 300).await;
        let verifier = verifier_for(&server).await;
        let app = Route::new().at(
            "/admin",
            get(admin).with(BearerAuth::with_verifier(verifier)),
        );
        let token = key.sign(&claims(&server.base));
        let (status, _, _) = call(&app, "/admin", Some(&format!("Bearer {token}"))).await;
        assert_eq!(status, StatusCode::OK);
    }
}
