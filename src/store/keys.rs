//! The `keys` table: public JWK, sealed private half, state and timestamps.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, bump_version};

/// One stored key, as the database holds it. The private half is sealed
/// (AEAD under the master key); only `keys::seal` can open it.
#[derive(Clone)]
pub struct KeyRow {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// JWS algorithm (`RS256`, `EdDSA`).
    pub alg: String,
    /// `next`, `current`, `retired` or `revoked`.
    pub state: String,
    /// The public JWK as JSON.
    pub public_jwk: String,
    /// Sealed PKCS#8 private key; `None` once revoked or pruned.
    pub sealed_private: Option<Vec<u8>>,
    /// When the key was generated or imported.
    pub created_at: i64,
    /// When the key first appeared in the JWKS.
    pub published_at: i64,
    /// When the key started signing.
    pub activated_at: Option<i64>,
    /// When the key stopped signing.
    pub retired_at: Option<i64>,
    /// When the key was revoked.
    pub revoked_at: Option<i64>,
}

impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("state", &self.state)
            .field(
                "sealed_private",
                &self.sealed_private.as_ref().map(|_| "[sealed]"),
            )
            .finish_non_exhaustive()
    }
}

fn key_from_row(row: &AnyRow) -> Result<KeyRow, sqlx::Error> {
    Ok(KeyRow {
        kid: row.try_get("kid")?,
        alg: row.try_get("alg")?,
        state: row.try_get("state")?,
        public_jwk: row.try_get("public_jwk")?,
        sealed_private: row.try_get("sealed_private")?,
        created_at: row.try_get("created_at")?,
        published_at: row.try_get("published_at")?,
        activated_at: row.try_get("activated_at")?,
        retired_at: row.try_get("retired_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

impl Store {
    /// Every key, oldest first.
    pub async fn list_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, alg, state, public_jwk, sealed_private, created_at, published_at, \
             activated_at, retired_at, revoked_at FROM keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(key_from_row)
            .collect::<Result<_, _>>()
            .map_err(Into::into)
    }

    /// Inserts new keys in one transaction and bumps the keyset version.
    pub async fn insert_keys(&self, keys: &[KeyRow]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for key in keys {
            sqlx::query(
                "INSERT INTO keys (kid, alg, state, public_jwk, sealed_private, created_at, \
                 published_at, activated_at, retired_at, revoked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.state)
            .bind(&key.public_jwk)
            .bind(key.sealed_private.clone())
            .bind(key.created_at)
            .bind(key.published_at)
            .bind(key.activated_at)
            .bind(key.retired_at)
            .bind(key.revoked_at)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_write)?;
        }
        bump_version(&mut tx, "keys").await?;
        tx.commit().await?;
        Ok(())
    }
}
