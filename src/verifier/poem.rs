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
//!
//! Cookie transport (opt-in: [`BearerAuth::cookie_transport`], or
//! [`VerifierBuilder::cookie_transport`](super::VerifierBuilder::cookie_transport)
//! for the extractor and every middleware of that verifier): the token may
//! also come in the [`ACCESS_COOKIE`] cookie. A cookie-authenticated
//! request with a method other than GET, HEAD or OPTIONS then needs an
//! `X-CSRF-Token` header whose SHA-256 is the token's `csrf` claim
//! ([`super::csrf`]), else 403 `csrf_failed`. An `Authorization` header
//! together with the cookie, two `Authorization` headers or two cookies
//! are refused with 400 `invalid_request`.
//!
//! Claims a middleware put in the request extensions are reused only by a
//! middleware or extractor using the *same* verifier: a nested
//! `BearerAuth::with_verifier(b)` checks the token against `b`'s issuer,
//! audience and keys, whatever an outer middleware accepted.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use poem::error::ResponseError;
use poem::http::{Method, StatusCode, header};
use poem::{Endpoint, FromRequest, Middleware, Request, RequestBody, Response};
use serde::de::DeserializeOwned;

use super::{Claims, Verifier, VerifyError, csrf};

/// The cookie carrying the access token when cookie transport is on (SPEC §5a).
pub const ACCESS_COOKIE: &str = "keyturn_access";

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
    /// The token was given twice: an `Authorization` header and the
    /// cookie, two `Authorization` headers or two cookies (400
    /// `invalid_request`).
    #[error("credentials given more than once")]
    AmbiguousCredentials,
    /// A state-changing request authenticated by cookie without an
    /// `X-CSRF-Token` matching the token's binding (403 `csrf_failed`).
    #[error("missing or wrong X-CSRF-Token")]
    CsrfFailed,
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
            AuthError::AmbiguousCredentials => "invalid_request",
            AuthError::CsrfFailed => "csrf_failed",
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
            AuthError::AmbiguousCredentials => StatusCode::BAD_REQUEST,
            AuthError::CsrfFailed => StatusCode::FORBIDDEN,
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
            AuthError::AmbiguousCredentials => Some(r#"Bearer error="invalid_request""#.to_owned()),
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
/// case-insensitive). Two `Authorization` headers are refused.
pub fn bearer_token(req: &Request) -> Result<&str, AuthError> {
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(AuthError::MissingToken)?;
    if values.next().is_some() {
        return Err(AuthError::AmbiguousCredentials);
    }
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

/// The [`ACCESS_COOKIE`] value of a request, if any (every `Cookie`
/// header is read; the cookie named twice is refused).
pub fn access_cookie(req: &Request) -> Result<Option<&str>, AuthError> {
    let mut found = None;
    for value in req.headers().get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            let Some((name, token)) = pair.split_once('=') else {
                continue;
            };
            if name.trim() == ACCESS_COOKIE {
                if found.is_some() {
                    return Err(AuthError::AmbiguousCredentials);
                }
                found = Some(token.trim().trim_matches('"'));
            }
        }
    }
    Ok(found.filter(|token| !token.is_empty()))
}

/// Methods a cross-site form or script cannot use to change state (RFC 9110
/// safe methods); every other method needs the CSRF header by cookie.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The `csrf` claim of a token that has already been verified.
fn csrf_claim(token: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Binding {
        #[serde(default)]
        csrf: Option<String>,
    }
    let payload = token.trim().split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Binding>(&bytes).ok()?.csrf
}

/// The cookie-transport CSRF rule for a verified cookie `token`.
fn check_csrf(req: &Request, token: &str) -> Result<(), AuthError> {
    if is_safe(req.method()) {
        return Ok(());
    }
    let mut sent = req.headers().get_all(csrf::HEADER).iter();
    let (Some(value), None) = (sent.next(), sent.next()) else {
        return Err(AuthError::CsrfFailed);
    };
    let value = value.to_str().map_err(|_| AuthError::CsrfFailed)?;
    match csrf_claim(token) {
        Some(claim) if csrf::matches(&claim, value) => Ok(()),
        _ => Err(AuthError::CsrfFailed),
    }
}

fn resolve<'a>(
    req: &'a Request,
    verifier: Option<&'a Verifier>,
) -> Result<&'a Verifier, AuthError> {
    match verifier.or_else(|| req.data::<Verifier>()) {
        Some(v) => Ok(v),
        None => {
            tracing::error!(
                "keyturn verifier: no Verifier in the request data; add .data(verifier)"
            );
            Err(AuthError::NotConfigured)
        }
    }
}

/// Verify the request's token with `verifier`: the bearer header, or the
/// [`ACCESS_COOKIE`] (with the CSRF rule) when `cookies` is on.
async fn verify_request<E: DeserializeOwned>(
    req: &Request,
    verifier: &Verifier,
    cookies: bool,
) -> Result<Claims<E>, AuthError> {
    if (cookies || verifier.inner.cookie_transport)
        && let Some(token) = access_cookie(req)?
    {
        if req.headers().contains_key(header::AUTHORIZATION) {
            return Err(AuthError::AmbiguousCredentials);
        }
        let claims = verifier.verify::<E>(token).await?;
        check_csrf(req, token)?;
        return Ok(claims);
    }
    let token = bearer_token(req)?;
    Ok(verifier.verify::<E>(token).await?)
}

/// What a [`BearerAuth`] middleware verified, and with which verifier:
/// reused only by a middleware or extractor using the same one.
#[derive(Clone)]
struct Verified {
    by: Verifier,
    claims: Claims,
}

impl Verified {
    /// The claims, if `verifier` is the one that verified them.
    fn claims_for(req: &Request, verifier: &Verifier) -> Option<Claims> {
        let verified = req.extensions().get::<Verified>()?;
        verified
            .by
            .same_as(verifier)
            .then(|| verified.claims.clone())
    }
}

/// Extractor: the verified claims of the request's bearer token, or a
/// 401/503 response. Needs the [`Verifier`] in the app data
/// (`.data(verifier)`). If a [`BearerAuth`] middleware already verified the
/// request with that verifier (or, without one in the app data, with any)
/// and `E` is `()`, its claims are reused.
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
        if let Some(verified) = req.extensions().get::<Verified>()
            && req
                .data::<Verifier>()
                .is_none_or(|data| verified.by.same_as(data))
            && let Some(claims) =
                (&verified.claims as &dyn std::any::Any).downcast_ref::<Claims<E>>()
        {
            return Ok(BearerClaims(claims.clone()));
        }
        let verifier = resolve(req, None)?;
        Ok(BearerClaims(
            verify_request::<E>(req, verifier, false).await?,
        ))
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
    cookies: bool,
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

    /// Also accept the token in the [`ACCESS_COOKIE`] cookie, with the CSRF
    /// rule for state-changing methods (see the [module docs](self)).
    pub fn cookie_transport(mut self) -> Self {
        self.cookies = true;
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
        let verifier = resolve(&req, self.auth.verifier.as_ref())?.clone();
        let claims: Claims = match Verified::claims_for(&req, &verifier) {
            Some(claims) => claims,
            None => verify_request(&req, &verifier, self.auth.cookies).await?,
        };
        if let Some(role) = &self.auth.role {
            check_role(&claims, role)?;
        }
        if let Some(scope) = &self.auth.scope {
            check_scope(&claims, scope)?;
        }
        req.extensions_mut().insert(Verified {
            by: verifier,
            claims: claims.clone(),
        });
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
    use crate::verifier::tests::{AUD, TestKey, TestServer, claims, verifier_for};

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

    /// A request with these headers; status, body.
    async fn send(
        app: &impl Endpoint,
        method: Method,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri_str("/r");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let resp = app.get_response(req.finish()).await;
        let status = resp.status();
        let body = resp.into_body().into_string().await.unwrap();
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    #[handler]
    fn anything(BearerClaims(claims): BearerClaims) -> String {
        format!("ok {}", claims.sub)
    }

    #[tokio::test]
    async fn nested_middleware_checks_its_own_issuer_and_audience() {
        let key_a = TestKey::ed25519();
        let key_b = TestKey::ed25519();
        let a = TestServer::issuer(&[&key_a], 300).await;
        let b = TestServer::issuer(&[&key_b], 300).await;
        let (va, vb) = (verifier_for(&a).await, verifier_for(&b).await);
        // Outer A, inner B: a request must satisfy both.
        let app = Route::new().at(
            "/r",
            poem::get(admin)
                .post(admin)
                .with(BearerAuth::with_verifier(vb.clone()))
                .with(BearerAuth::with_verifier(va.clone())),
        );
        let token_a = key_a.sign(&claims(&a.base));
        let token_b = key_b.sign(&claims(&b.base));
        let (status, body) = send(
            &app,
            Method::GET,
            &[("Authorization", &format!("Bearer {token_a}"))],
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let (status, _) = send(
            &app,
            Method::GET,
            &[("Authorization", &format!("Bearer {token_b}"))],
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        // B's issuer but another audience: A's claims do not carry it through.
        let vb_other = Verifier::builder()
            .issuer_url(&b.base)
            .audience(["billing"])
            .build()
            .await
            .unwrap();
        let b_keys_a_token = Route::new().at(
            "/r",
            get(admin)
                .with(BearerAuth::with_verifier(vb_other))
                .with(BearerAuth::with_verifier(vb.clone())),
        );
        let (status, body) = send(
            &b_keys_a_token,
            Method::GET,
            &[("Authorization", &format!("Bearer {token_b}"))],
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error_description"], "wrong audience");

        // The same verifier nested twice: the claims are reused.
        let same = Route::new().at(
            "/r",
            get(admin)
                .with(require_role("user"))
                .with(BearerAuth::with_verifier(vb.clone())),
        );
        let same = same.data(vb.clone());
        let (status, body) = send(
            &same,
            Method::GET,
            &[("Authorization", &format!("Bearer {token_b}"))],
        )
        .await;
        assert_eq!((status, body), (StatusCode::OK, json!("admin user-1")));

        // Claims some other code put in the extensions count for nothing.
        let forged: Claims = serde_json::from_value(claims(&b.base)).unwrap();
        let planted = Route::new()
            .at("/r", get(anything).with(BearerAuth::new()))
            .before(move |mut req| {
                let forged = forged.clone();
                async move {
                    req.extensions_mut().insert(forged);
                    Ok(req)
                }
            })
            .data(vb.clone());
        let (status, _) = send(&planted, Method::GET, &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = send(
            &planted,
            Method::GET,
            &[("Authorization", &format!("Bearer {token_b}"))],
        )
        .await;
        assert_eq!((status, body), (StatusCode::OK, json!("ok user-1")));
    }

    #[tokio::test]
    async fn cookie_transport_is_opt_in_and_needs_csrf_for_unsafe_methods() {
        let key = TestKey::ed25519();
        let server = TestServer::issuer(&[&key], 300).await;
        let verifier = verifier_for(&server).await;
        let route = || {
            poem::get(admin)
                .post(admin)
                .put(admin)
                .patch(admin)
                .delete(admin)
                .head(admin)
        };
        let off = Route::new().at(
            "/r",
            route().with(BearerAuth::with_verifier(verifier.clone())),
        );
        let on = Route::new().at(
            "/r",
            route().with(BearerAuth::with_verifier(verifier.clone()).cookie_transport()),
        );
        let mut bound = claims(&server.base);
        bound["csrf"] = json!(csrf::binding("csrf-value-1"));
        let token = key.sign(&bound);
        let unbound = key.sign(&claims(&server.base));
        let cookie = format!("theme=dark; {ACCESS_COOKIE}={token}");
        let bearer = format!("Bearer {token}");

        // Off: the cookie is not a credential.
        let (status, _) = send(&off, Method::GET, &[("Cookie", &cookie)]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        // On: safe methods by cookie alone.
        let (status, _) = send(&on, Method::GET, &[("Cookie", &cookie)]).await;
        assert_eq!(status, StatusCode::OK);
        // Unsafe methods need the bound X-CSRF-Token.
        for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            for headers in [
                vec![("Cookie", cookie.as_str())],
                vec![
                    ("Cookie", cookie.as_str()),
                    ("X-CSRF-Token", "csrf-value-2"),
                ],
                vec![("Cookie", cookie.as_str()), ("X-CSRF-Token", "")],
                vec![
                    ("Cookie", cookie.as_str()),
                    ("X-CSRF-Token", csrf::binding("csrf-value-1").as_str()),
                ],
                vec![
                    ("Cookie", cookie.as_str()),
                    ("X-CSRF-Token", "csrf-value-1"),
                    ("X-CSRF-Token", "csrf-value-1"),
                ],
            ] {
                let (status, body) = send(&on, method.clone(), &headers).await;
                assert_eq!(status, StatusCode::FORBIDDEN, "{method} {headers:?}");
                assert_eq!(body["error"], "csrf_failed");
            }
            let (status, _) = send(
                &on,
                method.clone(),
                &[("Cookie", &cookie), ("X-CSRF-Token", "csrf-value-1")],
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{method}");
            // A cookie token without a binding never passes.
            let (status, _) = send(
                &on,
                method.clone(),
                &[
                    ("Cookie", &format!("{ACCESS_COOKIE}={unbound}")),
                    ("X-CSRF-Token", "csrf-value-1"),
                ],
            )
            .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{method}");
            // The bearer header is not subject to CSRF.
            let (status, _) = send(&on, method.clone(), &[("Authorization", &bearer)]).await;
            assert_eq!(status, StatusCode::OK, "{method}");
        }
        // A bad cookie token is a 401 before any CSRF question.
        let (status, body) = send(
            &on,
            Method::POST,
            &[("Cookie", &format!("{ACCESS_COOKIE}=a.b.c"))],
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"], "invalid_token");

        // Credentials twice: 400 invalid_request.
        for headers in [
            vec![
                ("Cookie", cookie.as_str()),
                ("Authorization", bearer.as_str()),
            ],
            vec![
                ("Authorization", bearer.as_str()),
                ("Authorization", bearer.as_str()),
            ],
            vec![("Cookie", cookie.as_str()), ("Cookie", cookie.as_str())],
        ] {
            let (status, body) = send(&on, Method::GET, &headers).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{headers:?}");
            assert_eq!(body["error"], "invalid_request");
        }
        // Two Authorization headers are refused with cookies off as well.
        let (status, _) = send(
            &off,
            Method::GET,
            &[("Authorization", &bearer), ("Authorization", &bearer)],
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // On the builder: the extractor reads the cookie too.
        let with_cookies = Verifier::builder()
            .issuer_url(&server.base)
            .audience([AUD])
            .cookie_transport()
            .build()
            .await
            .unwrap();
        let app = Route::new()
            .at("/r", poem::get(anything).post(anything))
            .data(with_cookies);
        let (status, body) = send(&app, Method::GET, &[("Cookie", &cookie)]).await;
        assert_eq!((status, body), (StatusCode::OK, json!("ok user-1")));
        let (status, _) = send(&app, Method::POST, &[("Cookie", &cookie)]).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = send(
            &app,
            Method::POST,
            &[("Cookie", &cookie), ("X-CSRF-Token", "csrf-value-1")],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
}
