//! The `clients` table: registered OAuth clients. Only the SHA-256 of a
//! client secret is stored.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::audit::insert_audit_in;
use super::changes::{ChangeKind, record_status_change};
use super::users::cutoff_entry;
use super::{AuditRecord, Store, StoreError, bump_version};

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
    /// Tokens of this client id issued at or before this time are refused
    /// (secret rotation, or an earlier client of the same id); 0 if none.
    pub tokens_valid_after: i64,
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
    /// Scopes the client may request.
    pub scopes: Vec<String>,
}

macro_rules! client_columns {
    () => {
        "client_id, secret_hash, scopes, grant_types, audience, created_at"
    };
}

/// `clients` joined with its cutoff, as `c`; the cutoff column is
/// `tokens_valid_after` (0 when the id never had one).
macro_rules! clients_with_cutoff {
    () => {
        "SELECT c.client_id, c.secret_hash, c.scopes, c.grant_types, c.audience, c.created_at, \
         COALESCE(k.tokens_valid_after, 0) AS tokens_valid_after \
         FROM clients c LEFT JOIN client_cutoffs k ON k.client_id = c.client_id"
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
        tokens_valid_after: row.try_get("tokens_valid_after")?,
    })
}

impl Store {
    /// Registers a client and records `audit`; `Conflict` if the id is taken.
    pub async fn insert_client(
        &self,
        client: &ClientRow,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
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
        insert_audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The client with this id, if any.
    pub async fn find_client(&self, client_id: &str) -> Result<Option<ClientRow>, StoreError> {
        let row = sqlx::query(concat!(clients_with_cutoff!(), " WHERE c.client_id = $1"))
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(client_from_row).transpose()
    }

    /// Every client, by id.
    pub async fn list_clients(&self) -> Result<Vec<ClientRow>, StoreError> {
        let rows = sqlx::query(concat!(clients_with_cutoff!(), " ORDER BY c.client_id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(client_from_row).collect()
    }

    /// The in-memory view of every client.
    pub async fn client_status_rows(&self) -> Result<Vec<ClientStatusRow>, StoreError> {
        let rows = sqlx::query("SELECT client_id, scopes FROM clients")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ClientStatusRow {
                    client_id: row.try_get("client_id")?,
                    scopes: parse_list(row, "scopes")?,
                })
            })
            .collect()
    }

    /// Deletes a client and revokes the refresh tokens issued to it. Its
    /// access tokens die with it: the id's cutoff moves to `now` (on the
    /// status change log too), so registering the id again does not revive
    /// them. Records `audit`.
    pub async fn delete_client(
        &self,
        client_id: &str,
        now: i64,
        retention: i64,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM clients WHERE client_id = $1")
            .bind(client_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted == 0 {
            return Err(StoreError::NotFound);
        }
        bump_version(&mut tx, "clients").await?;
        cut_off_client_tokens(&mut tx, client_id, now, retention).await?;
        insert_audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a client's secret hash and refuses every token of the
    /// client issued at or before `now` (and its refresh tokens), in one
    /// transaction, with `audit`. `NotFound` if there is no such client.
    pub async fn rotate_client_secret(
        &self,
        client_id: &str,
        secret_hash: &str,
        now: i64,
        retention: i64,
        audit: &AuditRecord,
    ) -> Result<ClientRow, StoreError> {
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query("UPDATE clients SET secret_hash = $1 WHERE client_id = $2")
            .bind(secret_hash)
            .bind(client_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed == 0 {
            return Err(StoreError::NotFound);
        }
        bump_version(&mut tx, "clients").await?;
        cut_off_client_tokens(&mut tx, client_id, now, retention).await?;
        let row = sqlx::query(concat!(clients_with_cutoff!(), " WHERE c.client_id = $1"))
            .bind(client_id)
            .fetch_one(&mut *tx)
            .await?;
        let client = client_from_row(&row)?;
        insert_audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(client)
    }
}

/// Moves the client id's cutoff to `now` (never back) and revokes the
/// refresh tokens issued to it.
async fn cut_off_client_tokens(
    conn: &mut sqlx::AnyConnection,
    client_id: &str,
    now: i64,
    retention: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO client_cutoffs (client_id, tokens_valid_after) VALUES ($1, $2) \
         ON CONFLICT (client_id) DO UPDATE SET tokens_valid_after = CASE \
         WHEN excluded.tokens_valid_after > client_cutoffs.tokens_valid_after \
         THEN excluded.tokens_valid_after ELSE client_cutoffs.tokens_valid_after END",
    )
    .bind(client_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 WHERE client_id = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(client_id)
    .execute(&mut *conn)
    .await?;
    record_status_change(
        conn,
        ChangeKind::Client,
        &cutoff_entry(client_id, now, retention),
    )
    .await
}
