//! Bearer authentication for the server's own routes.

use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

use super::error::ApiError;
use crate::token::{AccessClaims, Tokens};

/// An access token from `POST /login` (Swagger's **Authorize** button).
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT")]
pub struct BearerAuth(pub Bearer);

impl BearerAuth {
    /// Validates the token: 401 if it is not acceptable.
    pub fn claims(&self, tokens: &Tokens) -> Result<AccessClaims, ApiError> {
        Ok(tokens.validate(&self.0.token)?)
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
