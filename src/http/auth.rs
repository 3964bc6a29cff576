//! Authentication of the server's own protected routes: a Bearer header, or
//! the `keyturn_access` cookie when the cookie transport is on (SPEC §5a).
//!
//! Exactly one transport per request (RFC 6750 §2): two `Authorization`
//! headers, or a header and the cookie, are `invalid_request`. A
//! state-changing request authenticated by cookie must carry
//! `X-CSRF-Token` matching the token's `csrf` claim.

use poem::http::{HeaderMap, Method, header};
use poem::{Request, RequestBody};
use poem_openapi::auth::{ApiKey, Bearer};
use poem_openapi::registry::Registry;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions, SecurityScheme};

use super::cookies::{self, ACCESS_COOKIE, CookiePolicy};
use super::error::ApiError;
use crate::token::{AccessClaims, Tokens};

/// An access token from `POST /login` (Swagger's **Authorize** button).
#[derive(SecurityScheme)]
#[oai(rename = "BearerAuth", ty = "bearer", bearer_format = "JWT")]
struct BearerScheme(#[expect(dead_code, reason = "documents the scheme")] Bearer);

/// The `keyturn_access` cookie set by `POST /login` with
/// `"transport":"cookie"` (when `KEYTURN_COOKIES=on`); state-changing
/// requests also need `X-CSRF-Token`.
#[derive(SecurityScheme)]
#[oai(
    rename = "CookieAuth",
    ty = "api_key",
    key_name = "keyturn_access",
    key_in = "cookie"
)]
struct CookieScheme(#[expect(dead_code, reason = "documents the scheme")] ApiKey);

/// How the request presented its access token.
#[derive(Debug, Clone)]
enum Presented {
    /// `Authorization: Bearer …`.
    Bearer(String),
    /// The access cookie, and whether the method changes state.
    Cookie { token: String, state_changing: bool },
}

/// Why no token could be taken from the request.
#[derive(Debug, Clone, Copy)]
enum Refused {
    /// None, or an `Authorization` header that is not Bearer: 401.
    Missing,
    /// More than one transport or header: 400.
    Ambiguous(&'static str),
}

/// The caller's access token, as presented; [`BearerAuth::claims`] checks it.
pub struct BearerAuth {
    presented: Result<Presented, Refused>,
    csrf_header: Option<String>,
}

/// POST, PUT, PATCH, DELETE (and anything else not safe, RFC 9110 §9.2.1).
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The Bearer token of the one `Authorization` header, if any.
fn bearer_header(headers: &HeaderMap) -> Result<Option<String>, Refused> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Refused::Ambiguous(
            "send one Authorization header, not several",
        ));
    }
    let value = value.to_str().map_err(|_| Refused::Missing)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(Refused::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Refused::Missing);
    }
    Ok(Some(token.trim().to_owned()))
}

fn presented(req: &Request) -> Result<Presented, Refused> {
    let headers = req.headers();
    let bearer = bearer_header(headers)?;
    let policy = req.data::<CookiePolicy>();
    let cookie = if policy.is_some_and(|p| p.enabled) {
        cookies::cookie(headers, ACCESS_COOKIE)
            .map_err(|_| Refused::Ambiguous("send the access cookie once"))?
            .filter(|v| !v.is_empty())
    } else {
        None
    };
    match (bearer, cookie) {
        (Some(_), Some(_)) => Err(Refused::Ambiguous(
            "send the access token in one place: the Authorization header or the cookie, not both",
        )),
        (Some(token), None) => Ok(Presented::Bearer(token)),
        (None, Some(token)) => Ok(Presented::Cookie {
            token: token.to_owned(),
            state_changing: changes_state(req.method()),
        }),
        (None, None) => Err(Refused::Missing),
    }
}

impl BearerAuth {
    /// Validates the token: 400 for an ambiguous request, 401 if the token
    /// is not acceptable, 403 `csrf_failed` for a cookie request without
    /// the matching `X-CSRF-Token`.
    pub fn claims(&self, tokens: &Tokens) -> Result<AccessClaims, ApiError> {
        let presented = match &self.presented {
            Ok(presented) => presented,
            Err(Refused::Missing) => {
                return Err(ApiError::invalid_token("a valid bearer token is required"));
            }
            Err(Refused::Ambiguous(why)) => return Err(ApiError::invalid_request(*why)),
        };
        match presented {
            Presented::Bearer(token) => Ok(tokens.validate(token)?),
            Presented::Cookie {
                token,
                state_changing,
            } => {
                let claims = tokens.validate(token)?;
                if *state_changing {
                    cookies::check_csrf(self.csrf_header.as_deref(), claims.csrf.as_deref())
                        .inspect_err(|why| {
                            tracing::info!(audit = "csrf_failed", actor = %claims.sub, outcome = "refused", detail = %why, "cookie request refused");
                        })?;
                }
                Ok(claims)
            }
        }
    }

    /// Whether the token came in the access cookie.
    pub fn by_cookie(&self) -> bool {
        matches!(self.presented, Ok(Presented::Cookie { .. }))
    }

    /// Validates the token and requires the `admin` role: 401 or 403.
    pub fn admin(&self, tokens: &Tokens) -> Result<AccessClaims, ApiError> {
        let claims = self.claims(tokens)?;
        if claims.roles.iter().any(|r| r == "admin") {
            Ok(claims)
        } else {
            Err(ApiError::forbidden("the admin role is required"))
        }
    }
}

impl<'a> ApiExtractor<'a> for BearerAuth {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::SecurityScheme];

    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        BearerScheme::register(registry);
        CookieScheme::register(registry);
    }

    fn security_schemes() -> Vec<&'static str> {
        let mut schemes = BearerScheme::security_schemes();
        schemes.extend(CookieScheme::security_schemes());
        schemes
    }

    async fn from_request(
        req: &'a Request,
        _body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        Ok(Self {
            presented: presented(req),
            csrf_header: cookies::csrf_header(req.headers()).map(str::to_owned),
        })
    }
}
