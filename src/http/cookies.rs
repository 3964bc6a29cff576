//! The cookie transport for browser front-ends (SPEC §5a): the three
//! cookies, reading them back, and the CSRF rule.
//!
//! The CSRF value is 256 random bits handed to the page (`keyturn_csrf`
//! cookie and the `csrf_token` of the body). The access token carries
//! `csrf` = base64url(SHA-256(value)), so a value from another session never
//! matches; the refresh cookie carries the same binding next to the refresh
//! token (`<refresh token>.<binding>`; refresh tokens never contain a dot),
//! because the access cookie may have expired by the time the page
//! refreshes. Both cookies are HttpOnly and written only by this server.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use poem::IntoResponse;
use poem::http::{HeaderMap, HeaderValue, header};
use poem_openapi::ApiResponse;
use poem_openapi::registry::{MetaResponses, Registry};
use ring::rand::{SecureRandom as _, SystemRandom};

// The binding rule is the verifier's, so a resource server using the
// verifier library checks exactly what this server mints.
use crate::verifier::csrf;

/// The access token (`Path=/`, `Max-Age` = its lifetime).
pub const ACCESS_COOKIE: &str = "keyturn_access";
/// The refresh token and its CSRF binding (`Path=/oauth/token`).
pub const REFRESH_COOKIE: &str = "keyturn_refresh";
/// The CSRF value, readable by the page.
pub const CSRF_COOKIE: &str = "keyturn_csrf";
/// The header a state-changing cookie request must carry.
pub const CSRF_HEADER: &str = csrf::HEADER;

/// Why a state-changing cookie request (or a cookie refresh) was refused:
/// 403 `csrf_failed` on every route, the token endpoint included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    /// No (or more than one) `X-CSRF-Token` header.
    #[error("the X-CSRF-Token header is required")]
    Missing,
    /// A header whose value is not the one bound to this session.
    #[error("the X-CSRF-Token header does not match this session")]
    Mismatch,
}

/// `KEYTURN_COOKIES`, `KEYTURN_COOKIE_SECURE`, `KEYTURN_COOKIE_DOMAIN`.
#[derive(Debug, Clone, Default)]
pub struct CookiePolicy {
    /// The transport is on.
    pub enabled: bool,
    /// Add `Secure` (off only for local http).
    pub secure: bool,
    /// `Domain`, or host-only cookies.
    pub domain: Option<String>,
}

/// A fresh CSRF value for a new login or refresh.
pub struct CsrfValue(String);

impl CsrfValue {
    /// 256 random bits, base64url; `None` if the system has no randomness.
    pub fn generate() -> Option<Self> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).ok()?;
        Some(Self(B64.encode(bytes)))
    }

    /// The value the page sends back in `X-CSRF-Token`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The claim binding the access token to this value.
    pub fn binding(&self) -> String {
        csrf::binding(&self.0)
    }
}

/// Checks `presented` (the one `X-CSRF-Token` header, see
/// [`csrf_header`]) against `bound`, the binding of the session (the access
/// token's `csrf` claim, or the one the refresh cookie carries); `None` (a
/// token without a binding) never matches.
pub fn check_csrf(presented: Option<&str>, bound: Option<&str>) -> Result<(), CsrfError> {
    let presented = presented.ok_or(CsrfError::Missing)?;
    if bound.is_some_and(|claim| csrf::matches(claim, presented)) {
        Ok(())
    } else {
        Err(CsrfError::Mismatch)
    }
}

/// What the refresh cookie holds: the refresh token and the binding of the
/// CSRF value issued with it.
pub fn refresh_cookie_value(refresh_token: &str, csrf: &CsrfValue) -> String {
    format!("{refresh_token}.{}", csrf.binding())
}

/// Splits a refresh cookie into the refresh token and its CSRF binding.
pub fn split_refresh_cookie(value: &str) -> Option<(&str, &str)> {
    value
        .split_once('.')
        .filter(|(token, claim)| !token.is_empty() && !claim.is_empty())
}

/// A cookie sent more than once.
#[derive(Debug, PartialEq, Eq)]
pub struct RepeatedCookie;

/// The value of cookie `name`. `Err` when the request carries it more than
/// once: which one the browser meant is unknowable, so none is used.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, RepeatedCookie> {
    let mut found = None;
    for pair in headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
    {
        let Some((key, value)) = pair.trim().split_once('=') else {
            continue;
        };
        if key.trim() == name {
            if found.is_some() {
                return Err(RepeatedCookie);
            }
            found = Some(value.trim().trim_matches('"'));
        }
    }
    Ok(found)
}

/// The one `X-CSRF-Token` header, if there is exactly one.
pub fn csrf_header(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(CSRF_HEADER).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

impl CookiePolicy {
    /// One `Set-Cookie` value. `max_age`: `Some` for a persistent cookie
    /// (0 clears it), `None` for a session cookie.
    fn set_cookie(
        &self,
        name: &str,
        value: &str,
        path: &str,
        http_only: bool,
        max_age: Option<u64>,
    ) -> HeaderValue {
        let mut cookie = format!("{name}={value}; Path={path}");
        if let Some(max_age) = max_age {
            cookie.push_str(&format!("; Max-Age={max_age}"));
        }
        if let Some(domain) = &self.domain {
            cookie.push_str(&format!("; Domain={domain}"));
        }
        if http_only {
            cookie.push_str("; HttpOnly");
        }
        if self.secure {
            cookie.push_str("; Secure");
        }
        cookie.push_str("; SameSite=Strict");
        // Tokens are base64url and JWS compact, the domain is validated by
        // the settings: every byte is a valid header byte.
        HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The three cookies of a new session (login or refresh).
    pub fn session(
        &self,
        access_token: &str,
        expires_in: u64,
        refresh_token: Option<&str>,
        csrf: &CsrfValue,
    ) -> Vec<HeaderValue> {
        let mut cookies =
            vec![self.set_cookie(ACCESS_COOKIE, access_token, "/", true, Some(expires_in))];
        if let Some(refresh) = refresh_token {
            cookies.push(self.set_cookie(
                REFRESH_COOKIE,
                &refresh_cookie_value(refresh, csrf),
                "/oauth/token",
                true,
                None,
            ));
        }
        cookies.push(self.set_cookie(CSRF_COOKIE, csrf.as_str(), "/", false, None));
        cookies
    }

    /// The three cookies, cleared (`Max-Age=0`).
    pub fn cleared(&self) -> Vec<HeaderValue> {
        vec![
            self.set_cookie(ACCESS_COOKIE, "", "/", true, Some(0)),
            self.set_cookie(REFRESH_COOKIE, "", "/oauth/token", true, Some(0)),
            self.set_cookie(CSRF_COOKIE, "", "/", false, Some(0)),
        ]
    }
}

/// A handler's answer with `Set-Cookie` headers (poem-openapi's responses
/// carry one value per header; a session needs three cookies).
pub struct WithCookies<T> {
    /// The documented response.
    pub response: T,
    /// `Set-Cookie` values, possibly none.
    pub cookies: Vec<HeaderValue>,
}

impl<T> WithCookies<T> {
    /// `response` without cookies.
    pub fn none(response: T) -> Self {
        Self {
            response,
            cookies: Vec::new(),
        }
    }
}

impl<T: ApiResponse> ApiResponse for WithCookies<T> {
    fn meta() -> MetaResponses {
        T::meta()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: IntoResponse> IntoResponse for WithCookies<T> {
    fn into_response(self) -> poem::Response {
        let mut response = self.response.into_response();
        for cookie in self.cookies {
            response.headers_mut().append(header::SET_COOKIE, cookie);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(CSRF_HEADER, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn check(sent: &[&str], bound: Option<&str>) -> Result<(), CsrfError> {
        check_csrf(csrf_header(&with_header(sent)), bound)
    }

    #[test]
    fn the_binding_matches_only_its_own_value() {
        let value = CsrfValue::generate().unwrap();
        let other = CsrfValue::generate().unwrap();
        let bound = value.binding();
        assert_eq!(check(&[value.as_str()], Some(&bound)), Ok(()));
        assert_eq!(check(&[], Some(&bound)), Err(CsrfError::Missing));
        let twice = [value.as_str(), value.as_str()];
        assert_eq!(check(&twice, Some(&bound)), Err(CsrfError::Missing));
        for wrong in [other.as_str(), ""] {
            assert_eq!(check(&[wrong], Some(&bound)), Err(CsrfError::Mismatch));
        }
        assert_eq!(check(&[value.as_str()], None), Err(CsrfError::Mismatch));
        // The claim is the hash, not the value: the value itself never
        // matches as a claim.
        let value_as_claim = Some(value.as_str());
        assert_eq!(
            check(&[value.as_str()], value_as_claim),
            Err(CsrfError::Mismatch)
        );
    }

    #[test]
    fn refresh_cookies_split_back() {
        let csrf = CsrfValue::generate().unwrap();
        let value = refresh_cookie_value("abc_-", &csrf);
        assert_eq!(
            split_refresh_cookie(&value),
            Some(("abc_-", csrf.binding().as_str()))
        );
        assert_eq!(split_refresh_cookie("nodot"), None);
        assert_eq!(split_refresh_cookie(".x"), None);
        assert_eq!(split_refresh_cookie("x."), None);
    }

    #[test]
    fn a_repeated_cookie_is_refused() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        assert_eq!(cookie(&headers, "b"), Ok(Some("2")));
        assert_eq!(cookie(&headers, "c"), Ok(None));
        headers.append(header::COOKIE, HeaderValue::from_static("b=3"));
        assert_eq!(cookie(&headers, "b"), Err(RepeatedCookie));
    }
}
