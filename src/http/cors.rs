//! CORS for browser front-ends on other origins (`KEYTURN_CORS_ORIGINS`):
//! only the configured exact origins, always with credentials, never `*`.
//! With no origins configured no response carries a CORS header.

use std::sync::Arc;

use poem::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response};

/// What a preflight may ask for.
const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE";
const ALLOWED_HEADERS: &str = "Authorization, Content-Type, X-CSRF-Token";
/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// The allowed origins, exactly as configured (`https://app.example`).
#[derive(Debug, Clone, Default)]
pub struct CorsPolicy {
    origins: Arc<[String]>,
}

impl CorsPolicy {
    /// Allows exactly `origins` (none: CORS off).
    pub fn new(origins: Vec<String>) -> Self {
        Self {
            origins: origins.into(),
        }
    }

    /// The request's `Origin`, if it is one of ours.
    fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(header::ORIGIN)?;
        let text = origin.to_str().ok()?;
        self.origins
            .iter()
            .any(|allowed| allowed == text)
            .then(|| origin.clone())
    }
}

impl<E: Endpoint> Middleware<E> for CorsPolicy {
    type Output = CorsEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        CorsEndpoint {
            inner,
            policy: self.clone(),
        }
    }
}

/// [`CorsPolicy`] around an endpoint.
pub struct CorsEndpoint<E> {
    inner: E,
    policy: CorsPolicy,
}

fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
}

impl<E: Endpoint> Endpoint for CorsEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        if self.policy.origins.is_empty() {
            return Ok(self.inner.call(req).await?.into_response());
        }
        let origin = self.policy.allowed_origin(req.headers());
        let preflight = req.method() == Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let mut response = match (&origin, preflight) {
            (Some(_), true) => {
                let mut response = Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .header(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS)
                    .header(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS)
                    .header(header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE)
                    .finish();
                response.headers_mut().remove(header::CONTENT_TYPE);
                response
            }
            _ => self.inner.call(req).await?.into_response(),
        };
        let headers = response.headers_mut();
        // The answer depends on the origin: shared caches must key on it.
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = origin {
            allow(headers, origin);
        }
        Ok(response)
    }
}
