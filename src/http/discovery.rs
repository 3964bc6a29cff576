//! Authorization server metadata (RFC 8414) at
//! `/.well-known/oauth-authorization-server`, and the same document at
//! `/.well-known/openid-configuration` for clients and verifiers that only
//! look there. Every URL is built from `KEYTURN_ISSUER`.

use std::sync::Arc;

use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::oauth::GRANT_TYPES;
use super::{ApiTags, HttpState};

const CLIENT_AUTH_METHODS: [&str; 2] = ["client_secret_basic", "client_secret_post"];

/// RFC 8414 §2 authorization server metadata.
#[derive(Debug, Object)]
pub struct ServerMetadata {
    /// The issuer: the `iss` of every token.
    pub issuer: String,
    /// The public signing keys.
    pub jwks_uri: String,
    /// `POST` form requests for tokens.
    pub token_endpoint: String,
    /// RFC 7009 revocation.
    pub revocation_endpoint: String,
    /// RFC 7662 introspection.
    pub introspection_endpoint: String,
    /// `client_credentials` and `refresh_token`.
    pub grant_types_supported: Vec<String>,
    /// Empty: keyturn has no authorization endpoint, so no response types
    /// (RFC 8414 requires the member).
    pub response_types_supported: Vec<String>,
    /// `client_secret_basic`, `client_secret_post`.
    pub token_endpoint_auth_methods_supported: Vec<String>,
    /// As for the token endpoint.
    pub revocation_endpoint_auth_methods_supported: Vec<String>,
    /// As for the token endpoint.
    pub introspection_endpoint_auth_methods_supported: Vec<String>,
    /// Every scope some registered client may request.
    pub scopes_supported: Vec<String>,
    /// The JWS algorithms of the published keys, which sign the access
    /// tokens (keyturn issues no ID tokens; OpenID-aware verifiers read
    /// this member to learn the algorithms).
    pub id_token_signing_alg_values_supported: Vec<String>,
    /// Human documentation: the Swagger UI.
    pub service_documentation: String,
}

pub struct DiscoveryApi {
    state: Arc<HttpState>,
}

impl DiscoveryApi {
    pub fn new(state: Arc<HttpState>) -> Self {
        Self { state }
    }

    fn metadata(&self) -> ServerMetadata {
        let issuer = self.state.issuer.clone();
        let base = issuer.trim_end_matches('/').to_owned();
        let url = |path: &str| format!("{base}{path}");
        let methods = || CLIENT_AUTH_METHODS.map(str::to_owned).to_vec();
        let algorithms = self
            .state
            .keyring
            .get()
            .algorithms()
            .into_iter()
            .map(|alg| alg.as_str().to_owned())
            .collect();
        ServerMetadata {
            jwks_uri: url("/.well-known/jwks.json"),
            token_endpoint: url("/oauth/token"),
            revocation_endpoint: url("/oauth/revoke"),
            introspection_endpoint: url("/oauth/introspect"),
            service_documentation: url("/docs"),
            issuer,
            grant_types_supported: GRANT_TYPES.iter().map(|g| g.as_str().to_owned()).collect(),
            response_types_supported: Vec::new(),
            token_endpoint_auth_methods_supported: methods(),
            revocation_endpoint_auth_methods_supported: methods(),
            introspection_endpoint_auth_methods_supported: methods(),
            scopes_supported: self.state.clients.view().scopes_supported(),
            id_token_signing_alg_values_supported: algorithms,
        }
    }
}

#[OpenApi(tag = "ApiTags::Keys")]
impl DiscoveryApi {
    /// OAuth 2.0 authorization server metadata (RFC 8414): the endpoints,
    /// grants, client authentication methods and signing algorithms.
    #[oai(path = "/.well-known/oauth-authorization-server", method = "get")]
    async fn oauth_metadata(&self) -> Json<ServerMetadata> {
        Json(self.metadata())
    }

    /// The same metadata, at the OpenID Connect discovery location, for
    /// clients and verifiers that look only there.
    #[oai(path = "/.well-known/openid-configuration", method = "get")]
    async fn openid_configuration(&self) -> Json<ServerMetadata> {
        Json(self.metadata())
    }
}
