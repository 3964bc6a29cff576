//! The `clients` table: registered OAuth clients. Only the SHA-256 of a
//! client secret is stored.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, bump_version};

/// A registered OAuth client as stored.
#[derive(Clone)]
pub struct ClientRow {
    /// The client id (`client_id` and `sub` of its tokens).
    pub client_id: String,
    /// base64url SHA-256 of the secret.
    pub secret_hash: String,
    /// Scopes the client may request.
    pub scopes: Vec<String>,
    /// Grant types the client may use at the token endpoint.
    pub grant_types: Vec<String>,
    /// `aud` of its tokens; `None` means the server's default audience.
    pub audience: Option<String>,
    /// Registration time.
    pub created_at: i64,
}

impl std::fmt::Debug for ClientRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRow")
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .field("grant_types", &self.grant_types)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

/// What servers mirror in memory about each client.
#[derive(Debug, Clone)]
pub struct ClientStatusRow {
    /// The client id.
    pub client_id: String,
    /// Tokens issued before this time belong to an earlier client of the
    /// same id and are refused.
    pub created_at: i64,
    /// Scopes the client may request.
    pub scopes: Vec<String>,
}

macro_rules! client_columns {
    () => {
        "client_id, secret_hash, scopes, grant_types, audience, created_at"
    };
}

fn list_json(items: &[String]) -> String {
    // Serializing a list of strings cannot fail.
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

fn parse_list(row: &AnyRow, column: &'static str) -> Result<Vec<String>, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|source| StoreError::CorruptJson { column, source })
}

fn client_from_row(row: &AnyRow) -> Result<ClientRow, StoreError> {
    Ok(ClientRow {
        client_id: row.try_get("client_id")?,
        secret_hash: row.try_get("secret_hash")?,
        scopes: parse_list(row, "scopes")?,
        grant_types: parse_list(row, "grant_types")?,
        audience: row.try_get("audience")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Registers a client; `Conflict` if the id is taken.
    pub async fn insert_client(&self, client: &ClientRow) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(concat!(
            "INSERT INTO clients (",
            client_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(&client.client_id)
        .bind(&client.secret_hash)
        .bind(list_json(&client.scopes))
        .bind(list_json(&client.grant_types))
        .bind(client.audience.clone())
        .bind(client.created_at)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_write)?;
        bump_version(&mut tx, "clients").await?;
        tx.commit().await?;
        Ok(())
    }

    /// The client with this id, if any.
    pub async fn find_client(&self, client_id: &str) -> Result<Option<ClientRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            client_columns!(),
            " FROM clients WHERE client_id = $1"
        ))
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    /// Every client, by id.
    pub async fn list_clients(&self) -> Result<Vec<ClientRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            client_columns!(),
            " FROM clients ORDER BY client_id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(client_from_row).collect()
    }

    /// The in-memory view of every client.
    pub async fn client_status_rows(&self) -> Result<Vec<ClientStatusRow>, StoreError> {
        let rows = sqlx::query("SELECT client_id, created_at, scopes FROM clients")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ClientStatusRow {
                    client_id: row.try_get("client_id")?,
                    created_at: row.try_get("created_at")?,
                    scopes: parse_list(row, "scopes")?,
                })
            })
            .collect()
    }

    /// Deletes a client and revokes the refresh tokens issued to it; its
    /// access tokens die because servers refuse tokens of unknown clients.
    pub async fn delete_client(&self, client_id: &str, now: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM clients WHERE client_id = $1")
            .bind(client_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE client_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(client_id)
        .execute(&mut *tx)
        .await?;
        bump_version(&mut tx, "clients").await?;
        tx.commit().await?;
        Ok(())
    }
}
