//! The OAuth 2.0 endpoints: `POST /oauth/token` (RFC 6749), `/oauth/revoke`
//! (RFC 7009), `/oauth/introspect` (RFC 7662), and `POST /logout`.
//!
//! Client authentication is `client_secret_basic` (HTTP Basic with the
//! form-urlencoded id and secret, RFC 6749 §2.3.1) or `client_secret_post`
//! (`client_id` and `client_secret` in the form); using both is an
//! `invalid_request`. The Authorization header is parsed here, leniently,
//! rather than by poem's `Basic` extractor, so every malformed header gets
//! an RFC 6749 error instead of being ignored.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use poem::Request;
use poem::http::header;
use poem_openapi::auth::Basic;
use poem_openapi::payload::{Form, Json};
use poem_openapi::types::Example;
use poem_openapi::{ApiResponse, NewType, Object, OpenApi, SecurityScheme};
use secrecy::SecretString;
use serde::Deserialize;

use super::auth::BearerAuth;
use super::cookies::{self, CsrfValue, REFRESH_COOKIE, WithCookies};
use super::error::{Failure, NO_CACHE, NO_STORE, OAuthError, Status};
use super::session::CookieSession;
use super::{ApiError, ApiTags, HttpState};
use crate::accounts::{Client, ClientCredentials, GrantType};
use crate::metrics::IssuedBy;
use crate::token::{FIRST_PARTY_CLIENT, Introspection};

/// Every grant of `POST /oauth/token`, in the order the discovery document
/// lists them.
pub const GRANT_TYPES: [GrantType; 2] = [GrantType::ClientCredentials, GrantType::RefreshToken];

// A new `GrantType` variant stops this from compiling: give it the next
// index here, list it in `GRANT_TYPES`, and dispatch it in `OAuthApi::token`
// (whose match fails to compile too).
const _: () = {
    const fn index(grant: GrantType) -> usize {
        match grant {
            GrantType::ClientCredentials => 0,
            GrantType::RefreshToken => 1,
        }
    }
    let mut i = 0;
    while i < GRANT_TYPES.len() {
        assert!(
            index(GRANT_TYPES[i]) == i,
            "GRANT_TYPES lists every grant once, by index"
        );
        i += 1;
    }
};

/// A registered client's `client_id` and `client_secret` (HTTP Basic,
/// `client_secret_basic`). Alternatively send them in the form body
/// (`client_secret_post`), never both.
#[derive(SecurityScheme)]
#[oai(ty = "basic")]
pub struct ClientBasicAuth(
    #[expect(
        dead_code,
        reason = "documents the scheme; presented_client parses the header"
    )]
    Basic,
);

/// Client authentication: HTTP Basic, or the form body.
#[derive(SecurityScheme)]
pub enum ClientAuth {
    /// HTTP Basic.
    Basic(
        #[expect(
            dead_code,
            reason = "documents the scheme; presented_client parses the header"
        )]
        ClientBasicAuth,
    ),
    /// Credentials in the form body (or none, for a first-party refresh).
    #[oai(fallback)]
    Body,
}

// Decoded by serde_urlencoded (through poem-openapi's `Form`): serde's
// duplicate-field check refuses a repeated parameter, and a `%` not followed
// by two hex digits is kept literally.
/// A token request (RFC 6749 §4.4 and §6), form-encoded. A repeated
/// parameter is `invalid_request` (RFC 6749 §3.2); unknown parameters are
/// ignored. An empty optional field counts as absent, so the document gives
/// them an empty default: Swagger UI then sends nothing in them (rather than
/// its placeholder `string`, which would be taken for a credential).
#[derive(Object, Deserialize)]
pub struct TokenForm {
    /// `client_credentials` or `refresh_token`.
    #[serde(default)]
    pub grant_type: GrantTypeField,
    /// For `grant_type=refresh_token`: the refresh token to exchange. It is
    /// spent; use the new one returned.
    #[oai(default = "empty")]
    pub refresh_token: Option<String>,
    /// Space-separated scopes, a subset of what the client (or the refresh
    /// token) may have, e.g. `invoices:read reports:read`. Omitted or empty:
    /// all of them.
    #[oai(default = "empty")]
    pub scope: Option<String>,
    /// `client_secret_post`: the client id. Leave empty with HTTP Basic
    /// (**Authorize** → *ClientBasicAuth*) and for a first-party refresh
    /// token (from `/login`).
    #[oai(default = "empty")]
    pub client_id: Option<String>,
    /// `client_secret_post`: the client secret. Leave empty with HTTP Basic.
    #[oai(write_only, default = "empty")]
    pub client_secret: Option<String>,
}

/// The `grant_type` of a token request: a plain string (an unknown one is
/// `unsupported_grant_type`, RFC 6749 §5.2), documented with the example
/// `client_credentials` so that Swagger UI's *Try it out* works as it stands.
#[derive(Debug, Default, NewType, Deserialize)]
#[oai(example)]
#[serde(transparent)]
pub struct GrantTypeField(pub String);

impl Example for GrantTypeField {
    fn example() -> Self {
        Self(GrantType::ClientCredentials.as_str().to_owned())
    }
}

impl std::ops::Deref for GrantTypeField {
    type Target = String;

    fn deref(&self) -> &String {
        &self.0
    }
}

/// The documented default of an optional form field: empty, i.e. absent.
fn empty() -> Option<String> {
    Some(String::new())
}

/// A revocation or introspection request (RFC 7009 §2.1, RFC 7662 §2.1).
/// Empty optional fields count as absent (see [`TokenForm`]).
#[derive(Object, Deserialize)]
pub struct TokenQueryForm {
    /// The access token or refresh token.
    #[serde(default)]
    pub token: String,
    /// `access_token` or `refresh_token`. Optional and not needed: the
    /// token's form tells them apart.
    #[oai(default = "empty")]
    pub token_type_hint: Option<String>,
    /// `client_secret_post`: the client id. Leave empty with HTTP Basic.
    #[oai(default = "empty")]
    pub client_id: Option<String>,
    /// `client_secret_post`: the client secret. Leave empty with HTTP Basic.
    #[oai(write_only, default = "empty")]
    pub client_secret: Option<String>,
}

/// Issued tokens (RFC 6749 §5.1).
#[derive(Debug, Object)]
#[oai(example)]
pub struct GrantBody {
    /// Signed JWT access token (`typ: at+jwt`).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Access token lifetime in seconds.
    pub expires_in: u64,
    /// The new refresh token (`refresh_token` grant only).
    #[oai(skip_serializing_if_is_none)]
    pub refresh_token: Option<String>,
    /// The granted scope, space-separated.
    pub scope: String,
}

/// What a token is, if it is valid now (RFC 7662 §2.2).
#[derive(Debug, Default, Object)]
pub struct IntrospectionBody {
    /// Whether the token is valid now. When `false`, nothing else is said.
    pub active: bool,
    /// `access_token` or `refresh_token`.
    #[oai(skip_serializing_if_is_none)]
    pub token_use: Option<String>,
    /// `Bearer`, for access tokens.
    #[oai(skip_serializing_if_is_none)]
    pub token_type: Option<String>,
    /// User id, or the client id for client tokens.
    #[oai(skip_serializing_if_is_none)]
    pub sub: Option<String>,
    /// The client the token was issued to (`first-party` for `/login`).
    #[oai(skip_serializing_if_is_none)]
    pub client_id: Option<String>,
    /// The user's name (user tokens).
    #[oai(skip_serializing_if_is_none)]
    pub username: Option<String>,
    /// Space-separated scopes.
    #[oai(skip_serializing_if_is_none)]
    pub scope: Option<String>,
    /// Roles (access tokens).
    #[oai(skip_serializing_if_is_none)]
    pub roles: Option<Vec<String>>,
    /// Expiry (Unix seconds).
    #[oai(skip_serializing_if_is_none)]
    pub exp: Option<i64>,
    /// Issue time (Unix seconds).
    #[oai(skip_serializing_if_is_none)]
    pub iat: Option<i64>,
    /// Not before (Unix seconds; access tokens).
    #[oai(skip_serializing_if_is_none)]
    pub nbf: Option<i64>,
    /// Issuer.
    #[oai(skip_serializing_if_is_none)]
    pub iss: Option<String>,
    /// Audience (access tokens).
    #[oai(skip_serializing_if_is_none)]
    pub aud: Option<String>,
    /// Token id (access tokens).
    #[oai(skip_serializing_if_is_none)]
    pub jti: Option<String>,
}

impl Example for GrantBody {
    fn example() -> Self {
        Self {
            access_token: super::session::EXAMPLE_JWT.into(),
            token_type: "Bearer".into(),
            expires_in: 900,
            refresh_token: None,
            scope: "invoices:read reports:read".into(),
        }
    }
}

#[derive(ApiResponse)]
pub enum TokenResponse {
    /// Tokens issued.
    #[oai(status = 200)]
    Ok(
        Json<GrantBody>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
    /// Refreshed by the `keyturn_refresh` cookie: the new tokens are in the
    /// three cookies again.
    #[oai(status = 200)]
    Cookie(
        Json<CookieSession>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
}

#[derive(ApiResponse)]
pub enum RevokeResponse {
    /// Revoked, or nothing to revoke (unknown, invalid or expired token, or
    /// one issued to another client): RFC 7009 answers 200 either way.
    #[oai(status = 200)]
    Ok(
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
}

#[derive(ApiResponse)]
pub enum IntrospectResponse {
    /// The token's state.
    #[oai(status = 200)]
    Ok(
        Json<IntrospectionBody>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "Pragma")] String,
    ),
}

#[derive(ApiResponse)]
pub enum LogoutResponse {
    /// Logged out: this access token and its refresh tokens are revoked.
    #[oai(status = 204)]
    Done,
}

/// Client credentials as presented, before checking them.
enum Presented {
    /// No client credentials.
    Nothing,
    /// `client_id=first-party` without a secret: the public first-party
    /// client (refreshing a `/login` token).
    FirstParty,
    /// An id and a secret to check.
    Secret(ClientCredentials),
}

/// Decodes one `application/x-www-form-urlencoded` value (`+` is a
/// space; RFC 6749 Appendix B) with serde_urlencoded. Stricter than that
/// decoder, as befits credentials: a `%` not followed by two hex digits, a
/// raw `&` (which would split the value) and bytes that are not UTF-8 make
/// the value malformed rather than being kept or replaced.
fn form_decode(text: &str) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct One {
        v: String,
    }
    let escapes_well_formed = text.split('%').skip(1).all(|after| {
        after
            .get(..2)
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if !escapes_well_formed {
        return None;
    }
    let One { v } = serde_urlencoded::from_str(&format!("v={text}")).ok()?;
    // serde_urlencoded replaces invalid UTF-8 with U+FFFD.
    (!v.contains(char::REPLACEMENT_CHARACTER)).then_some(v)
}

/// RFC 6749 §2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`.
fn parse_basic(value: &header::HeaderValue) -> Option<ClientCredentials> {
    let value = value.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let encoded = encoded.trim();
    let decoded = STANDARD
        .decode(encoded)
        .or_else(|_| STANDARD_NO_PAD.decode(encoded))
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let id = form_decode(id)?;
    if id.is_empty() {
        return None;
    }
    Some(ClientCredentials {
        id,
        secret: SecretString::from(form_decode(secret)?),
    })
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// Which client credentials the request carries (RFC 6749 §2.3.1: at
/// most one method).
fn presented_client(
    req: &Request,
    client_id: Option<String>,
    client_secret: Option<String>,
) -> Result<Presented, OAuthError> {
    let client_id = non_empty(client_id);
    let client_secret = non_empty(client_secret);
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let basic = parse_basic(value).ok_or_else(|| {
            OAuthError::invalid_client(
                "the Authorization header is not valid HTTP Basic client authentication",
            )
        })?;
        if client_secret.is_some() {
            return Err(OAuthError::invalid_request(
                "use one client authentication method: HTTP Basic or client_secret in the body, not both",
            ));
        }
        if client_id.as_ref().is_some_and(|id| *id != basic.id) {
            return Err(OAuthError::invalid_request(
                "client_id in the body differs from the HTTP Basic client",
            ));
        }
        return Ok(Presented::Secret(basic));
    }
    match (client_id, client_secret) {
        (None, None) => Ok(Presented::Nothing),
        (Some(id), None) if id == FIRST_PARTY_CLIENT => Ok(Presented::FirstParty),
        (Some(_), None) => Err(OAuthError::invalid_client("client_secret is required")),
        (None, Some(_)) => Err(OAuthError::invalid_request(
            "client_secret was sent without client_id",
        )),
        (Some(id), Some(secret)) => Ok(Presented::Secret(ClientCredentials {
            id,
            secret: SecretString::from(secret),
        })),
    }
}

pub struct OAuthApi {
    state: Arc<HttpState>,
}

impl OAuthApi {
    pub fn new(state: Arc<HttpState>) -> Self {
        Self { state }
    }

    /// Authenticates the client if credentials were presented.
    async fn client(
        &self,
        req: &Request,
        presented: Presented,
    ) -> Result<Option<Client>, OAuthError> {
        match presented {
            Presented::Secret(credentials) => {
                let address = self.state.client_addr.of(req);
                let auth = &self.state.client_auth;
                Ok(Some(auth.authenticate(&credentials, address).await?))
            }
            Presented::Nothing | Presented::FirstParty => Ok(None),
        }
    }

    /// Requires an authenticated registered client.
    async fn required_client(
        &self,
        req: &Request,
        client_id: Option<String>,
        client_secret: Option<String>,
    ) -> Result<Client, OAuthError> {
        let presented = presented_client(req, client_id, client_secret)?;
        self.client(req, presented)
            .await?
            .ok_or_else(|| OAuthError::invalid_client("client authentication is required"))
    }

    /// `grant_type=refresh_token` by the `keyturn_refresh` cookie (SPEC
    /// §5a): `X-CSRF-Token` must be the CSRF value issued with that refresh
    /// token; the rotation (and reuse detection) is the usual one, under a
    /// new CSRF value, and all three cookies are set again.
    async fn refresh_by_cookie(
        &self,
        req: &Request,
        form: TokenForm,
    ) -> Result<WithCookies<TokenResponse>, OAuthError> {
        let presented = presented_client(req, form.client_id, form.client_secret)?;
        if matches!(presented, Presented::Secret(_)) {
            return Err(OAuthError::invalid_request(
                "the refresh cookie is first-party: send no client credentials with it",
            ));
        }
        let cookie = cookies::cookie(req.headers(), REFRESH_COOKIE)
            .map_err(|_| OAuthError::invalid_request("send the refresh cookie once"))?
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                OAuthError::invalid_request("refresh_token is required (as a parameter or cookie)")
            })?;
        let (refresh_token, binding) = cookies::split_refresh_cookie(cookie).ok_or_else(|| {
            OAuthError::from(Failure::new(
                Status::BadRequest,
                "invalid_grant",
                "the refresh cookie is malformed",
            ))
        })?;
        cookies::check_csrf(cookies::csrf_header(req.headers()), Some(binding)).inspect_err(
            |why| {
                tracing::info!(
                    audit = "csrf_failed",
                    actor = "browser",
                    subject = "refresh_token",
                    outcome = "refused",
                    detail = %why,
                    "cookie refresh refused"
                );
            },
        )?;
        let csrf = CsrfValue::generate().ok_or_else(|| {
            OAuthError::from(Failure::new(
                Status::Unavailable,
                "temporarily_unavailable",
                "no system randomness for a CSRF value",
            ))
        })?;
        let issued = self
            .state
            .tokens
            .refresh(
                refresh_token,
                None,
                form.scope.as_deref(),
                Some(csrf.binding()),
                self.state.client_addr.of(req),
            )
            .await?;
        self.state
            .metrics
            .token_issued(IssuedBy::Grant(GrantType::RefreshToken));
        let cookies = self.state.cookies.session(
            &issued.access_token,
            issued.expires_in,
            issued.refresh_token.as_deref(),
            &csrf,
        );
        Ok(WithCookies {
            response: TokenResponse::Cookie(
                Json(CookieSession {
                    token_type: "cookie".into(),
                    expires_in: issued.expires_in,
                    csrf_token: csrf.as_str().to_owned(),
                }),
                NO_STORE.into(),
                NO_CACHE.into(),
            ),
            cookies,
        })
    }
}

#[OpenApi(tag = "ApiTags::OAuth")]
impl OAuthApi {
    /// OAuth 2.0 token endpoint (RFC 6749).
    ///
    /// - `grant_type=client_credentials`: a token for a registered client
    ///   itself. Authenticate with HTTP Basic or `client_id` +
    ///   `client_secret` in the form; `scope` may narrow the client's allowed
    ///   scopes. No refresh token.
    /// - `grant_type=refresh_token`: exchange a refresh token for a new
    ///   access token and a new refresh token; the old one is spent, and
    ///   presenting a spent one revokes its whole family. Refresh tokens
    ///   from `/login` need no client authentication.
    ///
    /// Errors follow RFC 6749 §5.2. Every response carries
    /// `Cache-Control: no-store`.
    #[oai(path = "/oauth/token", method = "post")]
    async fn token(
        &self,
        req: &Request,
        _auth: ClientAuth,
        form: Form<TokenForm>,
    ) -> Result<WithCookies<TokenResponse>, OAuthError> {
        let Form(form) = form;
        if form.grant_type.as_str() == GrantType::RefreshToken.as_str()
            && non_empty(form.refresh_token.clone()).is_none()
            && self.state.cookies.enabled
        {
            return self.refresh_by_cookie(req, form).await;
        }
        let presented = presented_client(req, form.client_id, form.client_secret)?;
        let client = self.client(req, presented).await?;
        let scope = form.scope.as_deref();
        let address = self.state.client_addr.of(req);
        let grant = match form.grant_type.as_str() {
            "" => return Err(OAuthError::invalid_request("grant_type is required")),
            name => name.parse::<GrantType>().map_err(|_| {
                let names: Vec<&str> = GRANT_TYPES.iter().map(|g| g.as_str()).collect();
                OAuthError::unsupported_grant_type(format!(
                    "supported grant types: {}",
                    names.join(", ")
                ))
            })?,
        };
        let issued = match grant {
            GrantType::ClientCredentials => {
                let client = client.ok_or_else(|| {
                    OAuthError::invalid_client(
                        "client authentication is required for the client_credentials grant",
                    )
                })?;
                self.state
                    .tokens
                    .client_credentials(&client, scope, address)
                    .await?
            }
            GrantType::RefreshToken => {
                let token = non_empty(form.refresh_token)
                    .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
                self.state
                    .tokens
                    .refresh(&token, client.as_ref(), scope, None, address)
                    .await?
            }
        };
        self.state.metrics.token_issued(IssuedBy::Grant(grant));
        Ok(WithCookies::none(TokenResponse::Ok(
            Json(GrantBody {
                access_token: issued.access_token,
                token_type: "Bearer".into(),
                expires_in: issued.expires_in,
                refresh_token: issued.refresh_token,
                scope: issued.scope,
            }),
            NO_STORE.into(),
            NO_CACHE.into(),
        )))
    }

    /// Token revocation (RFC 7009), by the client the token was issued to.
    ///
    /// A revoked access token is refused by keyturn (its routes and
    /// introspection) until it expires. Unknown, invalid and expired tokens,
    /// and tokens of other clients, including first-party tokens from
    /// `/login` (every refresh token is one; use `POST /logout` for those),
    /// are left alone with 200.
    #[oai(path = "/oauth/revoke", method = "post")]
    async fn revoke(
        &self,
        req: &Request,
        _auth: ClientAuth,
        form: Form<TokenQueryForm>,
    ) -> Result<RevokeResponse, OAuthError> {
        let Form(form) = form;
        let client = self
            .required_client(req, form.client_id, form.client_secret)
            .await?;
        if form.token.is_empty() {
            return Err(OAuthError::invalid_request("token is required"));
        }
        let address = self.state.client_addr.of(req);
        self.state
            .tokens
            .revoke(&form.token, &client, address)
            .await?;
        Ok(RevokeResponse::Ok(NO_STORE.into(), NO_CACHE.into()))
    }

    /// Token introspection (RFC 7662), for any registered client.
    ///
    /// Answers `{"active": false}` for anything not valid now: expired,
    /// revoked, unknown, badly signed, signed by an unknown key, or garbage.
    /// Works for access tokens (of any audience) and refresh tokens.
    #[oai(path = "/oauth/introspect", method = "post")]
    async fn introspect(
        &self,
        req: &Request,
        _auth: ClientAuth,
        form: Form<TokenQueryForm>,
    ) -> Result<IntrospectResponse, OAuthError> {
        let Form(form) = form;
        self.required_client(req, form.client_id, form.client_secret)
            .await?;
        if form.token.is_empty() {
            return Err(OAuthError::invalid_request("token is required"));
        }
        let body = match self.state.tokens.introspect(&form.token).await? {
            Introspection::Inactive => IntrospectionBody::default(),
            Introspection::Access(claims) => IntrospectionBody {
                active: true,
                token_use: Some("access_token".into()),
                token_type: Some("Bearer".into()),
                sub: Some(claims.sub),
                client_id: Some(claims.client_id),
                username: claims.username,
                scope: Some(claims.scope),
                roles: Some(claims.roles),
                exp: Some(claims.exp),
                iat: Some(claims.iat),
                nbf: Some(claims.nbf),
                iss: Some(claims.iss),
                aud: Some(claims.aud),
                jti: Some(claims.jti),
            },
            Introspection::Refresh {
                sub,
                username,
                client_id,
                scope,
                exp,
                iat,
            } => IntrospectionBody {
                active: true,
                token_use: Some("refresh_token".into()),
                sub: Some(sub),
                client_id: Some(client_id),
                username: Some(username),
                scope: Some(scope),
                exp: Some(exp),
                iat: Some(iat),
                iss: Some(self.state.issuer.clone()),
                ..IntrospectionBody::default()
            },
        };
        Ok(IntrospectResponse::Ok(
            Json(body),
            NO_STORE.into(),
            NO_CACHE.into(),
        ))
    }

    /// Log out: revokes this access token and the refresh token family it
    /// was issued with. Other sessions of the user stay logged in. By
    /// cookie (with `X-CSRF-Token`), also clears the three cookies.
    #[oai(path = "/logout", method = "post", tag = "ApiTags::Auth")]
    async fn logout(
        &self,
        req: &Request,
        auth: BearerAuth,
    ) -> Result<WithCookies<LogoutResponse>, ApiError> {
        let claims = auth.claims(&self.state.tokens)?;
        let address = self.state.client_addr.of(req);
        self.state.tokens.logout(&claims, address).await?;
        Ok(WithCookies {
            response: LogoutResponse::Done,
            cookies: if auth.by_cookie() {
                self.state.cookies.cleared()
            } else {
                Vec::new()
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let encode = |s: &str| {
            header::HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(s))).unwrap()
        };
        let c = parse_basic(&encode("my%20client:s%3Acret+x")).unwrap();
        assert_eq!(c.id, "my client");
        assert_eq!(c.secret.expose_secret(), "s:cret x");
        let c = parse_basic(&encode("svc:a:b")).unwrap();
        assert_eq!(c.secret.expose_secret(), "a:b");
        assert!(parse_basic(&encode("no-colon")).is_none());
        assert!(parse_basic(&encode(":secret")).is_none());
        assert!(parse_basic(&encode("bad%zz:x")).is_none());
        assert!(parse_basic(&header::HeaderValue::from_static("Basic !!!")).is_none());
        assert!(parse_basic(&header::HeaderValue::from_static("Bearer abc")).is_none());
        let lower =
            header::HeaderValue::from_str(&format!("basic {}", STANDARD_NO_PAD.encode("a:b")))
                .unwrap();
        assert_eq!(parse_basic(&lower).unwrap().id, "a");
    }

    #[test]
    fn malformed_basic_encodings_are_refused_as_before() {
        let encode = |s: &str| {
            header::HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(s))).unwrap()
        };
        // What the hand-rolled decoder of bbd6ef6 refused stays refused...
        for malformed in ["svc:%zz", "svc:%4", "svc:abc%", "%ff:x", "svc:%C3%28"] {
            assert!(parse_basic(&encode(malformed)).is_none(), "{malformed}");
        }
        // A raw `&` separates form values: refused now, where bbd6ef6 kept
        // it (no client id or generated secret has one: 401 either way).
        assert!(parse_basic(&encode("a&b:x")).is_none());
        assert!(parse_basic(&encode("svc:x&v=y")).is_none());
        // ...and what it accepted is decoded the same.
        let c = parse_basic(&encode("svc:a=b%3D+%2Bc")).unwrap();
        assert_eq!(c.secret.expose_secret(), "a=b= +c");
        let c = parse_basic(&encode("svc:")).unwrap();
        assert_eq!(c.secret.expose_secret(), "");
        let c = parse_basic(&encode("caf%C3%A9:%26")).unwrap();
        assert_eq!(c.id, "café");
        assert_eq!(c.secret.expose_secret(), "&");
    }

    #[test]
    fn every_grant_type_is_listed_once() {
        let names: Vec<&str> = GRANT_TYPES.iter().map(|g| g.as_str()).collect();
        assert_eq!(names, ["client_credentials", "refresh_token"]);
        for grant in GRANT_TYPES {
            assert_eq!(grant.as_str().parse::<GrantType>().unwrap(), grant);
        }
    }

    #[test]
    fn every_grant_type_has_a_metrics_label() {
        let labels: Vec<&str> = IssuedBy::ALL.iter().map(|by| by.label()).collect();
        assert!(labels.contains(&"login"));
        for grant in GRANT_TYPES {
            assert!(
                IssuedBy::ALL.contains(&IssuedBy::Grant(grant)),
                "{grant} is counted in keyturn_tokens_issued_total"
            );
        }
        assert_eq!(labels.len(), 1 + GRANT_TYPES.len());
    }
}
