//! The `refresh_tokens` table (only the SHA-256 of a refresh token is
//! stored) and the `revoked_tokens` list of revoked access-token `jti`s.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, bump_version};

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

/// A stored refresh token with its lifecycle marks.
#[derive(Debug, Clone)]
pub struct RefreshTokenState {
    /// The token as issued.
    pub row: RefreshTokenRow,
    /// When it was exchanged for a new one (spent).
    pub used_at: Option<i64>,
    /// When it was revoked (reuse, logout, revocation, user change).
    pub revoked_at: Option<i64>,
}

/// A revoked access token: refused until `expires_at` (its `exp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedJti {
    /// The token's `jti`.
    pub jti: String,
    /// The token's `exp`.
    pub expires_at: i64,
}

macro_rules! refresh_columns {
    () => {
        "token_hash, family_id, user_id, client_id, scope, access_jti, issued_at, expires_at, \
         used_at, revoked_at"
    };
}

fn refresh_from_row(row: &AnyRow) -> Result<RefreshTokenState, StoreError> {
    Ok(RefreshTokenState {
        row: RefreshTokenRow {
            token_hash: row.try_get("token_hash")?,
            family_id: row.try_get("family_id")?,
            user_id: row.try_get("user_id")?,
            client_id: row.try_get("client_id")?,
            scope: row.try_get("scope")?,
            access_jti: row.try_get("access_jti")?,
            issued_at: row.try_get("issued_at")?,
            expires_at: row.try_get("expires_at")?,
        },
        used_at: row.try_get("used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

async fn insert_refresh(
    conn: &mut sqlx::AnyConnection,
    token: &RefreshTokenRow,
) -> Result<(), StoreError> {
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
    .execute(conn)
    .await
    .map_err(StoreError::from_write)?;
    Ok(())
}

async fn insert_revoked(
    conn: &mut sqlx::AnyConnection,
    revoked: &RevokedJti,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO revoked_tokens (jti, expires_at, revoked_at) VALUES ($1, $2, $3) \
         ON CONFLICT (jti) DO NOTHING",
    )
    .bind(&revoked.jti)
    .bind(revoked.expires_at)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

impl Store {
    /// Records a newly issued refresh token.
    pub async fn insert_refresh_token(&self, token: &RefreshTokenRow) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        insert_refresh(&mut conn, token).await
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

    /// The refresh token with this hash, whatever its state.
    pub async fn find_refresh_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<RefreshTokenState>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            refresh_columns!(),
            " FROM refresh_tokens WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(refresh_from_row).transpose()
    }

    /// Spends `presented` and records `child` (same family) in one
    /// transaction. Returns `false`, changing nothing, when the token was
    /// already spent or revoked, including by a concurrent request: the
    /// conditional update lets exactly one of two simultaneous uses win.
    pub async fn rotate_refresh_token(
        &self,
        presented: &str,
        now: i64,
        child: &RefreshTokenRow,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let spent = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 \
             AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(presented)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if spent != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_refresh(&mut tx, child).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Revokes every refresh token of a family and puts the `jti`s of the
    /// access tokens issued with them on the revocation list (those whose
    /// `issued_at + access_ttl` is after `live_after`; older ones have
    /// expired anyway). One transaction; returns the listed `jti`s.
    pub async fn revoke_refresh_family(
        &self,
        family_id: &str,
        now: i64,
        access_ttl: i64,
        live_after: i64,
    ) -> Result<Vec<RevokedJti>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(family_id)
        .execute(&mut *tx)
        .await?;
        let rows = sqlx::query(
            "SELECT access_jti, issued_at FROM refresh_tokens WHERE family_id = $1 \
             AND issued_at + $2 > $3",
        )
        .bind(family_id)
        .bind(access_ttl)
        .bind(live_after)
        .fetch_all(&mut *tx)
        .await?;
        let mut revoked = Vec::with_capacity(rows.len());
        for row in &rows {
            let issued_at: i64 = row.try_get("issued_at")?;
            revoked.push(RevokedJti {
                jti: row.try_get("access_jti")?,
                expires_at: issued_at.saturating_add(access_ttl),
            });
        }
        for entry in &revoked {
            insert_revoked(&mut tx, entry, now).await?;
        }
        bump_version(&mut tx, "revocations").await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// The refresh family an access token was issued with, if any.
    pub async fn refresh_family_of(&self, access_jti: &str) -> Result<Option<String>, StoreError> {
        let family = sqlx::query_scalar(
            "SELECT family_id FROM refresh_tokens WHERE access_jti = $1 LIMIT 1",
        )
        .bind(access_jti)
        .fetch_optional(&self.pool)
        .await?;
        Ok(family)
    }

    /// Puts one access token on the revocation list.
    pub async fn revoke_access_token(
        &self,
        revoked: &RevokedJti,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_revoked(&mut tx, revoked, now).await?;
        bump_version(&mut tx, "revocations").await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revoked access tokens whose `exp` is after `live_after`.
    pub async fn revoked_jtis(&self, live_after: i64) -> Result<Vec<RevokedJti>, StoreError> {
        let rows = sqlx::query("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > $1")
            .bind(live_after)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(RevokedJti {
                    jti: row.try_get("jti")?,
                    expires_at: row.try_get("expires_at")?,
                })
            })
            .collect()
    }

    /// Forgets revoked tokens whose `exp` is at or before `cutoff`: they
    /// are refused as expired now. Returns how many were removed.
    pub async fn delete_expired_revocations(&self, cutoff: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM revoked_tokens WHERE expires_at <= $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
