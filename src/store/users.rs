//! The `users` table, and the refresh-token revocation that user changes imply.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::audit::insert_audit_in;
use super::changes::{ChangeKind, StatusEntry, record_status_change};
use super::tokens::revoke_user_refresh_tokens;
use super::{AuditRecord, Backend, Store, StoreError, bump_version};

/// A user as stored. `password_hash` is a PHC string (argon2id).
#[derive(Clone)]
pub struct UserRow {
    /// Stable id, the `sub` of the user's tokens.
    pub id: String,
    /// Login name, unique.
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Role names.
    pub roles: Vec<String>,
    /// A disabled user cannot log in and their tokens are refused.
    pub disabled: bool,
    /// Tokens of this user issued at or before this time are refused.
    pub tokens_valid_after: i64,
    /// Creation time.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
}

impl std::fmt::Debug for UserRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRow")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("roles", &self.roles)
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// A change to a user; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct UserChange {
    /// New roles.
    pub roles: Option<Vec<String>>,
    /// New password hash.
    pub password_hash: Option<String>,
    /// Enable or disable.
    pub disabled: Option<bool>,
    /// When set, every token of the user issued at or before this time dies:
    /// refresh tokens are revoked and access tokens are refused.
    pub revoke_tokens_at: Option<i64>,
}

/// The columns of a [`UserRow`], as a literal so queries stay static strings.
macro_rules! user_columns {
    () => {
        "id, username, password_hash, roles, disabled, tokens_valid_after, created_at, updated_at"
    };
}

fn user_from_row(row: &AnyRow) -> Result<UserRow, StoreError> {
    let roles: String = row.try_get("roles")?;
    Ok(UserRow {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        password_hash: row.try_get("password_hash")?,
        roles: serde_json::from_str(&roles).map_err(|source| StoreError::CorruptJson {
            column: "roles",
            source,
        })?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        tokens_valid_after: row.try_get("tokens_valid_after")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A user's or client's cutoff on the status change log, kept `retention`
/// (the access-token lifetime plus leeway) past it.
pub(super) fn cutoff_entry(subject: &str, cutoff: i64, retention: i64) -> StatusEntry {
    StatusEntry {
        subject: subject.to_owned(),
        at: cutoff,
        until: cutoff.saturating_add(retention),
    }
}

fn roles_json(roles: &[String]) -> String {
    // Serializing a list of strings cannot fail.
    serde_json::to_string(roles).unwrap_or_else(|_| "[]".to_owned())
}

impl Store {
    /// Creates a user and records `audit`; `Conflict` if the username is
    /// taken.
    pub async fn insert_user(&self, user: &UserRow, audit: &AuditRecord) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(concat!(
            "INSERT INTO users (",
            user_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&user.id)
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(roles_json(&user.roles))
        .bind(i64::from(user.disabled))
        .bind(user.tokens_valid_after)
        .bind(user.created_at)
        .bind(user.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_write)?;
        bump_version(&mut tx, "users").await?;
        insert_audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The user with this username, if any.
    pub async fn find_user(&self, username: &str) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// The user with this id (`sub`), if any.
    pub async fn find_user_by_id(&self, id: &str) -> Result<Option<UserRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    /// Every user, by username.
    pub async fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            user_columns!(),
            " FROM users ORDER BY username"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// Changes a user without losing a concurrent change: under the user
    /// write lock (see [`lock_user_writes`]) it reads the user and how many
    /// *other* enabled users hold `guarded_role`, lets `decide` turn that
    /// into a change or refuse, and applies the change, all in one
    /// transaction, with `audit`. Returns the updated user.
    pub async fn update_user<E: From<StoreError>>(
        &self,
        username: &str,
        guarded_role: &str,
        now: i64,
        retention: i64,
        audit: &AuditRecord,
        decide: impl FnOnce(&UserRow, usize) -> Result<UserChange, E>,
    ) -> Result<UserRow, E> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let (mut user, others) = self.locked_user(&mut tx, username, guarded_role).await?;
        let change = decide(&user, others)?;
        if let Some(roles) = &change.roles {
            user.roles = roles.clone();
        }
        if let Some(hash) = &change.password_hash {
            user.password_hash = hash.clone();
        }
        if let Some(disabled) = change.disabled {
            user.disabled = disabled;
        }
        if let Some(at) = change.revoke_tokens_at {
            user.tokens_valid_after = user.tokens_valid_after.max(at);
            revoke_user_refresh_tokens(&mut tx, self.backend, &user.id, at).await?;
        }
        user.updated_at = now;
        sqlx::query(
            "UPDATE users SET roles = $1, password_hash = $2, disabled = $3, \
             tokens_valid_after = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(roles_json(&user.roles))
        .bind(&user.password_hash)
        .bind(i64::from(user.disabled))
        .bind(user.tokens_valid_after)
        .bind(user.updated_at)
        .bind(&user.id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        if change.revoke_tokens_at.is_some() {
            let cutoff = cutoff_entry(&user.id, user.tokens_valid_after, retention);
            record_status_change(&mut tx, ChangeKind::User, &cutoff).await?;
        }
        insert_audit_in(&mut tx, audit).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(user)
    }

    /// Deletes a user and revokes their refresh tokens, if `decide` (given
    /// the user and how many other enabled users hold `guarded_role`, read
    /// under the user write lock) allows it. Their access tokens die with
    /// them: the user's cutoff moves to `now` on the status change log.
    /// Records `audit`.
    pub async fn delete_user<E: From<StoreError>>(
        &self,
        username: &str,
        guarded_role: &str,
        now: i64,
        retention: i64,
        audit: &AuditRecord,
        decide: impl FnOnce(&UserRow, usize) -> Result<(), E>,
    ) -> Result<UserRow, E> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let (user, others) = self.locked_user(&mut tx, username, guarded_role).await?;
        decide(&user, others)?;
        revoke_user_refresh_tokens(&mut tx, self.backend, &user.id, now).await?;
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(&user.id)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        let cutoff = cutoff_entry(&user.id, now, retention);
        record_status_change(&mut tx, ChangeKind::User, &cutoff).await?;
        insert_audit_in(&mut tx, audit).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(user)
    }

    /// Takes the user write lock, then reads the user (`NotFound` if
    /// absent) and, if the user is an enabled holder of `role`, counts the
    /// other enabled users holding it (otherwise the count is 0: no change
    /// to this user can leave the role unheld).
    async fn locked_user(
        &self,
        conn: &mut sqlx::AnyConnection,
        username: &str,
        role: &str,
    ) -> Result<(UserRow, usize), StoreError> {
        lock_user_writes(conn).await?;
        let select = match self.backend {
            // Redundant under the write lock, and kept so the row stays
            // locked should the lock ever be narrowed.
            Backend::Postgres => concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE username = $1 FOR UPDATE"
            ),
            // SQLite has no row locks; the write lock is the database's.
            Backend::Sqlite => concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE username = $1"
            ),
        };
        let row = sqlx::query(select)
            .bind(username)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(StoreError::NotFound)?;
        let user = user_from_row(&row)?;
        if user.disabled || !user.roles.iter().any(|r| r == role) {
            // Only an enabled holder's change can leave the role unheld; the
            // count scans every user, so most changes skip it.
            return Ok((user, 0));
        }
        // Role names hold no '"', so the JSON text contains `"role"` exactly
        // when the list may hold it; '_' in a role is a LIKE wildcard, hence
        // the exact check after.
        let candidates: Vec<String> = sqlx::query_scalar(
            "SELECT roles FROM users WHERE disabled = 0 AND id <> $1 AND roles LIKE $2",
        )
        .bind(&user.id)
        .bind(format!("%\"{role}\"%"))
        .fetch_all(&mut *conn)
        .await?;
        let mut others = 0;
        for roles in candidates {
            let roles: Vec<String> =
                serde_json::from_str(&roles).map_err(|source| StoreError::CorruptJson {
                    column: "roles",
                    source,
                })?;
            others += usize::from(roles.iter().any(|r| r == role));
        }
        Ok((user, others))
    }
}

/// Serialises every write to `users`, on both stores, for the rest of the
/// transaction: bumping the users version first takes a row lock that the
/// next writer waits for (PostgreSQL), and makes the transaction a writer
/// from its first statement (SQLite, so it never has to upgrade a read
/// snapshot and fail with `SQLITE_BUSY`). Under READ COMMITTED each later
/// statement then sees everything the previous writer committed, so a
/// read-modify-write cannot lose an update and the "other admins" count
/// cannot be stale. User writes are rare admin actions; one lock is simple
/// and cannot deadlock.
async fn lock_user_writes(conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
    bump_version(conn, "users").await
}
