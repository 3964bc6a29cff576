//! `GET /.well-known/jwks.json`: bytes serialized once per keyset change,
//! served from memory with a strong ETag.

use std::sync::Arc;

use bytes::Bytes;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Header};

use super::{ApiTags, HttpState};

/// A public key (RFC 7517). Never contains private parameters.
#[derive(Debug, Object)]
#[oai(rename = "Jwk")]
pub struct JwkDoc {
    /// `RSA` or `OKP`.
    pub kty: String,
    /// Always `sig`.
    #[oai(rename = "use")]
    pub use_: String,
    /// `RS256` or `EdDSA`.
    pub alg: String,
    /// RFC 7638 thumbprint; matches the `kid` of tokens signed with it.
    pub kid: String,
    /// RSA modulus (base64url).
    pub n: Option<String>,
    /// RSA exponent (base64url).
    pub e: Option<String>,
    /// `Ed25519` for OKP keys.
    pub crv: Option<String>,
    /// Ed25519 public key (base64url).
    pub x: Option<String>,
}

/// A JSON Web Key Set.
#[derive(Debug, Object)]
#[oai(rename = "JwkSet")]
pub struct JwksDoc {
    /// The published keys: current, next and retired.
    pub keys: Vec<JwkDoc>,
}

/// JSON bytes prepared ahead of time, documented with `JwksDoc`'s schema.
pub struct JwksBytes(Bytes);

impl Payload for JwksBytes {
    const CONTENT_TYPE: &'static str = "application/json";

    fn schema_ref() -> MetaSchemaRef {
        JwksDoc::schema_ref()
    }

    fn register(registry: &mut Registry) {
        JwksDoc::register(registry);
    }
}

impl IntoResponse for JwksBytes {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type(Self::CONTENT_TYPE)
            .body(self.0)
    }
}

impl ApiResponse for JwksBytes {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "The key set",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: Self::CONTENT_TYPE,
                    schema: Self::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        JwksDoc::register(registry);
    }
}

#[derive(ApiResponse)]
pub enum JwksResponse {
    /// The published keys.
    #[oai(status = 200)]
    Ok(
        JwksBytes,
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
    ),
    /// The client's copy (`If-None-Match`) is current.
    #[oai(status = 304)]
    NotModified(
        #[oai(header = "ETag")] String,
        #[oai(header = "Cache-Control")] String,
    ),
}

pub struct JwksApi {
    state: Arc<HttpState>,
}

impl JwksApi {
    pub fn new(state: Arc<HttpState>) -> Self {
        Self { state }
    }
}

/// RFC 9110 §13.1.2: weak comparison of a list of entity tags, or `*`.
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let etag = etag.trim_start_matches("W/");
    if_none_match
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == etag)
}

#[OpenApi(tag = "ApiTags::Keys")]
impl JwksApi {
    /// The public signing keys, for verifying keyturn's tokens by `kid`.
    ///
    /// Cache it for `max-age`; a token with an unknown `kid` means it is time
    /// to fetch again. Supports `If-None-Match`.
    #[oai(path = "/.well-known/jwks.json", method = "get")]
    async fn jwks(
        &self,
        #[oai(name = "If-None-Match")] if_none_match: Header<Option<String>>,
    ) -> JwksResponse {
        let keyring = self.state.keyring.get();
        let jwks = keyring.jwks();
        // Never cached past the next planned change of the keyset.
        let mut max_age = i64::try_from(self.state.jwks_max_age.as_secs()).unwrap_or(i64::MAX);
        if let Some(change) = keyring.next_change_at {
            max_age = max_age.min(change - self.state.clock.now()).max(0);
        }
        let cache_control = format!("public, max-age={max_age}");
        match if_none_match.0 {
            Some(tags) if etag_matches(&tags, &jwks.etag) => {
                JwksResponse::NotModified(jwks.etag.clone(), cache_control)
            }
            _ => JwksResponse::Ok(
                JwksBytes(jwks.body.clone()),
                jwks.etag.clone(),
                cache_control,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::etag_matches;

    #[test]
    fn if_none_match_lists() {
        assert!(etag_matches("\"a\"", "\"a\""));
        assert!(etag_matches("\"b\", W/\"a\"", "\"a\""));
        assert!(etag_matches("*", "\"a\""));
        assert!(!etag_matches("\"b\"", "\"a\""));
        assert!(!etag_matches("", "\"a\""));
    }
}
