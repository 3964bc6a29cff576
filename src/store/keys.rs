//! The `keys` table: public JWK, sealed private half, state and timestamps.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError};

/// One change to the keys table, applied with others in one transaction.
#[derive(Debug, Clone)]
pub enum KeyChange {
    /// A new key.
    Insert(KeyRow),
    /// New state, timestamps or (dropped) private half of an existing key.
    Update(KeyRow),
    /// Remove the key entirely (pruned, or a successor that never signed).
    Delete(String),
}

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

    /// The keyset version and every key, oldest first. The version is read
    /// first: if a writer slips in between, the version is older than the
    /// rows and a later [`Store::apply_key_changes`] fails safe.
    pub async fn keyset(&self) -> Result<(i64, Vec<KeyRow>), StoreError> {
        let version = self.versions().await?.keys;
        Ok((version, self.list_keys().await?))
    }

    /// Applies `changes` in one transaction, only if the keyset is still at
    /// `expected_version`; otherwise nothing changes and the result is
    /// [`StoreError::Conflict`] (another instance or the CLI got there
    /// first). The version bump comes first so that, on PostgreSQL, a
    /// concurrent writer waits on the row lock and then sees the new version.
    pub async fn apply_key_changes(
        &self,
        expected_version: i64,
        changes: &[KeyChange],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let bumped = sqlx::query(
            "UPDATE versions SET version = version + 1 WHERE name = 'keys' AND version = $1",
        )
        .bind(expected_version)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if bumped != 1 {
            return Err(StoreError::Conflict);
        }
        for change in changes {
            match change {
                KeyChange::Insert(key) => insert_key(&mut tx, key).await?,
                KeyChange::Update(key) => {
                    let updated = sqlx::query(
                        "UPDATE keys SET state = $1, sealed_private = $2, activated_at = $3, \
                         retired_at = $4, revoked_at = $5 WHERE kid = $6",
                    )
                    .bind(&key.state)
                    .bind(key.sealed_private.clone())
                    .bind(key.activated_at)
                    .bind(key.retired_at)
                    .bind(key.revoked_at)
                    .bind(&key.kid)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if updated != 1 {
                        return Err(StoreError::NotFound);
                    }
                }
                KeyChange::Delete(kid) => {
                    sqlx::query("DELETE FROM keys WHERE kid = $1")
                        .bind(kid)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_key(conn: &mut sqlx::AnyConnection, key: &KeyRow) -> Result<(), StoreError> {
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
    .execute(conn)
    .await
    .map_err(StoreError::from_write)?;
    Ok(())
}
