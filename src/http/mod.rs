//! The HTTP API (SPEC §5): poem-openapi handlers that parse, call domain
//! code and map the result. Status codes are decided in `error` alone.

mod admin;
mod audit;
mod auth;
mod client_addr;
mod connection;
mod cookies;
mod cors;
mod discovery;
mod error;
mod headers;
mod health;
mod jwks;
mod metrics;
mod oauth;
mod session;

pub use connection::SlowClientGuard;
pub use cookies::CookiePolicy;
pub use cors::CorsPolicy;
pub use error::{ApiError, ErrorBody, OAuthError};

use std::sync::Arc;
use std::time::Duration;

use poem::endpoint::make_sync;
use poem::http::StatusCode;
use poem::middleware::Tracing;
use poem::web::Html;
use poem::web::headers::{ContentLength, HeaderMapExt as _};
use poem::{Endpoint, EndpointExt as _, IntoResponse, Request, Response, Route};
use poem_openapi::{OpenApiService, Tags};

use crate::accounts::{Accounts, ClientAuthThrottle, Clients};
use crate::audit::AuditLog;
use crate::clock::SharedClock;
use crate::keys::{KeyManager, KeyScheduler, KeyringHandle};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::token::{Login, Tokens};
pub use client_addr::ClientAddr;

/// Largest accepted request body (SPEC §5).
pub const BODY_LIMIT: usize = 64 * 1024;

/// What the handlers need, built once by `app`.
#[derive(Clone)]
pub struct HttpState {
    /// The store (readiness checks).
    pub store: Store,
    /// Key operations.
    pub keys: KeyManager,
    /// This instance's key schedule: manual rotation and revocation.
    pub key_schedule: KeyScheduler,
    /// The live keyring.
    pub keyring: KeyringHandle,
    /// User operations.
    pub accounts: Accounts,
    /// OAuth client operations.
    pub clients: Clients,
    /// Token issuing and validation.
    pub tokens: Tokens,
    /// `KEYTURN_ISSUER`: base of the discovery URLs.
    pub issuer: String,
    /// `Cache-Control: max-age` of the JWKS.
    pub jwks_max_age: Duration,
    /// The clock (JWKS max-age, key ages).
    pub clock: SharedClock,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The login policy (throttle, password check, tokens).
    pub login: Login,
    /// Client authentication behind its throttle.
    pub client_auth: Arc<ClientAuthThrottle>,
    /// Who the client is (socket peer or trusted `X-Forwarded-For`).
    pub client_addr: ClientAddr,
    /// The cookie transport (SPEC §5a).
    pub cookies: CookiePolicy,
    /// The origins allowed to call with credentials (CORS).
    pub cors: CorsPolicy,
    /// The audit trail (`GET /admin/audit`).
    pub audit: AuditLog,
}

#[derive(Tags)]
enum ApiTags {
    /// Liveness and readiness.
    Health,
    /// Logging in and using a token.
    Auth,
    /// OAuth 2.0 token, revocation and introspection endpoints.
    OAuth,
    /// Public keys for verifiers.
    Keys,
    /// Administration (requires the `admin` role).
    Admin,
}

/// The OpenAPI service: every route, its security and its errors.
fn api_service(
    state: Arc<HttpState>,
    server_url: &str,
) -> OpenApiService<impl poem_openapi::OpenApi + use<>, ()> {
    OpenApiService::new(
        (
            health::HealthApi::new(Arc::clone(&state)),
            session::SessionApi::new(Arc::clone(&state)),
            oauth::OAuthApi::new(Arc::clone(&state)),
            jwks::JwksApi::new(Arc::clone(&state)),
            metrics::MetricsApi::new(Arc::clone(&state)),
            discovery::DiscoveryApi::new(Arc::clone(&state)),
            admin::AdminApi::new(Arc::clone(&state)),
            audit::AuditApi::new(state),
        ),
        "keyturn",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Asymmetric-key JWT authentication server. Log in with `POST /login`, then press \
         **Authorize** and paste the `access_token` to call the protected routes. Resource \
         servers verify tokens with the keys at `/.well-known/jwks.json`. OAuth 2.0 clients \
         use `/oauth/token` (press **Authorize** and fill in *ClientBasicAuth* with a \
         client id and secret), `/oauth/revoke` and `/oauth/introspect`; discovery is at \
         `/.well-known/oauth-authorization-server`.",
    )
    .server(server_url.to_owned())
}

/// The tags in the order a newcomer reads them: log in first.
const TAG_ORDER: [&str; 5] = ["Auth", "OAuth", "Keys", "Admin", "Health"];

/// poem-openapi lists tags alphabetically (`Admin` first); Swagger UI shows
/// them in the document's order, so the document is rewritten once at start
/// with its `tags` in [`TAG_ORDER`] (any other tag after them). The rest of
/// the document is unchanged, but its object keys come out sorted.
fn tags_in_reading_order(spec: &str) -> String {
    let Ok(mut document) = serde_json::from_str::<serde_json::Value>(spec) else {
        return spec.to_owned();
    };
    if let Some(tags) = document
        .get_mut("tags")
        .and_then(serde_json::Value::as_array_mut)
    {
        let rank = |tag: &serde_json::Value| {
            let name = tag.get("name").and_then(serde_json::Value::as_str);
            TAG_ORDER
                .iter()
                .position(|known| Some(*known) == name)
                .unwrap_or(TAG_ORDER.len())
        };
        tags.sort_by_key(rank);
    }
    serde_json::to_string_pretty(&document).unwrap_or_else(|_| spec.to_owned())
}

/// All routes: the API, Swagger UI at `/docs`, the document at
/// `/openapi.json`, with the body limit, tracing and error rendering.
/// `access_log`: one log line per request (`KEYTURN_ACCESS_LOG`).
pub fn routes(
    state: Arc<HttpState>,
    server_url: &str,
    access_log: bool,
) -> impl Endpoint<Output = Response> + use<> {
    let metrics = Arc::clone(&state.metrics);
    let cookies = state.cookies.clone();
    let cors = state.cors.clone();
    let api = api_service(state, server_url);
    let spec = api.spec();
    let document = tags_in_reading_order(&spec);
    // The Swagger UI page embeds the document it shows: swap in the
    // reordered one so `/docs` and `/openapi.json` agree.
    let page = api.swagger_ui_html().replacen(&spec, &document, 1);
    Route::new()
        .nest("/", api)
        .nest(
            "/docs",
            Route::new().at("/", make_sync(move |_| Html(page.clone()))),
        )
        .at(
            "/openapi.json",
            make_sync(move |_| {
                Response::builder()
                    .content_type("application/json")
                    .body(document.clone())
            }),
        )
        .around(handler_deadline)
        .around(limit_body)
        .around(headers::limit_headers)
        .data(cookies)
        .with_if(access_log, Tracing)
        .catch_all_error(error::render_poem_error)
        .with(cors)
        .around(headers::security_headers)
        .around(move |next, req| {
            let metrics = Arc::clone(&metrics);
            async move {
                let response = next.call(req).await?;
                metrics.request(response.status().as_u16());
                Ok(response)
            }
        })
}

/// Answers 503 when the handler runs past [`error::HANDLER_DEADLINE`]
/// (dropping it: an open transaction rolls back with its connection).
async fn handler_deadline<E: Endpoint>(next: Arc<E>, req: Request) -> poem::Result<Response> {
    match tokio::time::timeout(error::HANDLER_DEADLINE, next.call(req)).await {
        Ok(result) => Ok(result?.into_response()),
        Err(_) => Ok(error::handler_timed_out()),
    }
}

/// Refuses bodies over [`BODY_LIMIT`] with 413, whether or not the client
/// declared a length, before any handler buffers them.
async fn limit_body<E: Endpoint>(next: Arc<E>, mut req: Request) -> poem::Result<Response> {
    // The rest of a refused body is never read, so the connection cannot
    // carry another request: `Connection: close` tells the client not to
    // reuse it (a pooled client otherwise sends its next request into the
    // unread bytes).
    let too_large = || async {
        let refusal = poem::Error::from_status(StatusCode::PAYLOAD_TOO_LARGE);
        let mut response = error::render_poem_error(refusal).await;
        response.headers_mut().insert(
            poem::http::header::CONNECTION,
            poem::http::HeaderValue::from_static("close"),
        );
        Ok(response)
    };
    if let Some(ContentLength(len)) = req.headers().typed_get::<ContentLength>()
        && len > BODY_LIMIT as u64
    {
        return too_large().await;
    }
    let body = match req.take_body().into_bytes_limit(BODY_LIMIT).await {
        Ok(body) => body,
        Err(poem::error::ReadBodyError::PayloadTooLarge) => return too_large().await,
        Err(_) => return Err(poem::Error::from_status(StatusCode::BAD_REQUEST)),
    };
    req.set_body(body);
    Ok(next.call(req).await?.into_response())
}
