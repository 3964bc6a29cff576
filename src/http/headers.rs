//! Response headers every answer carries (SPEC §5b): `nosniff`, no
//! referrer, and `Cache-Control: no-store` on everything that carries a
//! token or user data, including errors raised before a handler runs.

use std::sync::Arc;

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse as _, Request, Response};

use super::error;

/// Routes whose answers carry tokens or user data.
fn private(path: &str) -> bool {
    path == "/login"
        || path == "/logout"
        || path == "/profile"
        || path.starts_with("/oauth/")
        || path == "/admin"
        || path.starts_with("/admin/")
}

/// Largest accepted request head: all header names and values together.
/// hyper itself caps the count at 100 and the buffer at about 400 KiB.
pub const HEADER_BYTES_LIMIT: usize = 16 * 1024;

/// Refuses requests whose headers exceed [`HEADER_BYTES_LIMIT`] with 431.
pub async fn limit_headers<E: Endpoint>(next: Arc<E>, req: Request) -> poem::Result<Response> {
    let size: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > HEADER_BYTES_LIMIT {
        return Err(poem::Error::from_status(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ));
    }
    Ok(next.call(req).await?.into_response())
}

/// Adds the security headers to every response.
pub async fn security_headers<E: Endpoint>(next: Arc<E>, req: Request) -> poem::Result<Response> {
    let private = private(req.uri().path());
    let mut response = next.call(req).await?.into_response();
    if private {
        error::ensure_no_store(&mut response);
    }
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::private;

    #[test]
    fn token_and_user_routes_are_private() {
        for path in [
            "/login",
            "/logout",
            "/profile",
            "/oauth/token",
            "/admin/users",
        ] {
            assert!(private(path), "{path}");
        }
        for path in [
            "/health",
            "/.well-known/jwks.json",
            "/docs",
            "/administrator",
        ] {
            assert!(!private(path), "{path}");
        }
    }
}
