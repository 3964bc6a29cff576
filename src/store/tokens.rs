//! The `refresh_tokens` table. Only the SHA-256 of a refresh token is stored.

use super::{Store, StoreError};

/// A refresh token as stored: its hash, never the token itself.
#[derive(Debug, Clone)]
pub struct RefreshTokenRow {
    /// base64url SHA-256 of the opaque token.
    pub token_hash: String,
    /// Every token rotated from one login shares a family.
    pub family_id: String,
    /// The user it was issued to (`None` for client-only grants).
    pub user_id: Option<String>,
    /// The OAuth client (`first-party` for `/login`).
    pub client_id: String,
    /// Granted scope, space separated.
    pub scope: String,
    /// `jti` of the access token issued alongside.
    pub access_jti: String,
    /// Issue time.
    pub issued_at: i64,
    /// Expiry time.
    pub expires_at: i64,
}

impl Store {
    /// Records a newly issued refresh token.
    pub async fn insert_refresh_token(&self, token: &RefreshTokenRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, user_id, client_id, scope, \
             access_jti, issued_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&token.token_hash)
        .bind(&token.family_id)
        .bind(token.user_id.clone())
        .bind(&token.client_id)
        .bind(&token.scope)
        .bind(&token.access_jti)
        .bind(token.issued_at)
        .bind(token.expires_at)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_write)?;
        Ok(())
    }

    /// Number of live (unused, unrevoked, unexpired) refresh tokens of a user.
    pub async fn count_live_refresh_tokens(
        &self,
        user_id: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM refresh_tokens WHERE user_id = $1 AND used_at IS NULL \
             AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(user_id)
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(count)
    }
}
