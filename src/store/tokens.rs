//! The `refresh_tokens` table (only the SHA-256 of a refresh token is
//! stored), and revoking access tokens by `jti` (entries of the status
//! change log, see `changes`).

use sqlx::Row;
use sqlx::any::AnyRow;

use super::audit::insert_audit_in;
use super::changes::{ChangeKind, StatusEntry, record_status_change};
use super::{AuditRecord, Backend, Store, StoreError};

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
    /// `exp` of the access token issued alongside: its revocation, if the
    /// family is revoked, lasts until then.
    pub access_expires_at: i64,
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
    /// When its family began (the login); the family ends a fixed time
    /// after that, however often it is refreshed.
    pub family_started_at: i64,
}

/// The times a family revocation needs.
#[derive(Debug, Clone, Copy)]
pub struct RevocationTimes {
    /// Now.
    pub now: i64,
    /// Access tokens whose `exp` is at or before this are refused as
    /// expired anyway and need no entry.
    pub live_after: i64,
    /// For rows written before `access_expires_at` existed: their access
    /// token's `exp` is taken as `issued_at` plus this.
    pub legacy_access_ttl: i64,
    /// The accepted clock skew: a revoked token's entry is kept this long
    /// past its `exp`.
    pub leeway: i64,
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
        "t.token_hash, t.family_id, t.user_id, t.client_id, t.scope, t.access_jti, t.issued_at, \
         t.expires_at, t.access_expires_at, t.used_at, t.revoked_at, \
         COALESCE(f.created_at, t.issued_at) AS family_started_at"
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
            access_expires_at: row
                .try_get::<Option<i64>, _>("access_expires_at")?
                .unwrap_or(i64::MAX),
        },
        used_at: row.try_get("used_at")?,
        revoked_at: row.try_get("revoked_at")?,
        family_started_at: row.try_get("family_started_at")?,
    })
}

async fn insert_refresh(
    conn: &mut sqlx::AnyConnection,
    token: &RefreshTokenRow,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, client_id, scope, \
         access_jti, issued_at, expires_at, access_expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&token.token_hash)
    .bind(&token.family_id)
    .bind(token.user_id.clone())
    .bind(&token.client_id)
    .bind(&token.scope)
    .bind(&token.access_jti)
    .bind(token.issued_at)
    .bind(token.expires_at)
    .bind(token.access_expires_at)
    .execute(conn)
    .await
    .map_err(StoreError::from_write)?;
    Ok(())
}

/// Puts an access token on the status change log, revoked until its `exp`
/// plus `leeway`.
async fn insert_revoked(
    conn: &mut sqlx::AnyConnection,
    revoked: &RevokedJti,
    leeway: i64,
) -> Result<(), StoreError> {
    let entry = StatusEntry {
        subject: revoked.jti.clone(),
        at: revoked.expires_at,
        until: revoked.expires_at.saturating_add(leeway),
    };
    record_status_change(conn, ChangeKind::Jti, &entry).await
}

/// Locks a family's row for the rest of the transaction and returns
/// `(created_at, revoked_at)`, or `None` if there is no such family.
/// Rotation and revocation both start here, so on PostgreSQL they take turns
/// per family; on SQLite the dummy write makes the transaction a writer at
/// once (`BEGIN IMMEDIATE` semantics), so two of them never deadlock on the
/// upgrade from reader to writer.
async fn lock_family(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    family_id: &str,
) -> Result<Option<(i64, Option<i64>)>, StoreError> {
    let statement = match backend {
        Backend::Postgres => {
            "SELECT created_at, revoked_at FROM refresh_families WHERE family_id = $1 FOR UPDATE"
        }
        Backend::Sqlite => {
            "UPDATE refresh_families SET family_id = family_id WHERE family_id = $1 \
             RETURNING created_at, revoked_at"
        }
    };
    let row = sqlx::query(statement)
        .bind(family_id)
        .fetch_optional(conn)
        .await?;
    row.map(|row| Ok((row.try_get("created_at")?, row.try_get("revoked_at")?)))
        .transpose()
}

/// Revokes every refresh token of a user (a password change, disable or
/// delete) after locking each of the user's families, as a rotation does
/// (see [`lock_family`]). Without the locks, on PostgreSQL under READ
/// COMMITTED, an `UPDATE … WHERE user_id` that waited on a rotation's row
/// lock would not see the child that rotation inserted, and that child would
/// stay live (review M1). With them, a rotation either committed first (its
/// child is then revoked here) or runs after this transaction and finds the
/// token it presents revoked. The locks are taken in the order
/// [`Store::start_refresh_family`] takes them, so the two cannot deadlock.
pub(super) async fn revoke_user_refresh_tokens(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    user_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    let lock = match backend {
        Backend::Postgres => {
            "SELECT family_id FROM refresh_families WHERE user_id = $1 \
             ORDER BY created_at DESC, family_id FOR UPDATE"
        }
        // The caller's transaction is already a writer (SQLite has one at a
        // time); the dummy write keeps the two stores' code paths alike.
        Backend::Sqlite => {
            "UPDATE refresh_families SET family_id = family_id WHERE user_id = $1 \
             RETURNING family_id"
        }
    };
    sqlx::query(lock)
        .bind(user_id)
        .fetch_all(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(user_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Revokes a family (locked by the caller) and lists the access tokens
/// issued with it that are still live.
async fn revoke_family_locked(
    conn: &mut sqlx::AnyConnection,
    family_id: &str,
    times: RevocationTimes,
) -> Result<Vec<RevokedJti>, StoreError> {
    sqlx::query(
        "UPDATE refresh_families SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
    )
    .bind(times.now)
    .bind(family_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
    )
    .bind(times.now)
    .bind(family_id)
    .execute(&mut *conn)
    .await?;
    let rows = sqlx::query(
        "SELECT access_jti, COALESCE(access_expires_at, issued_at + $2) AS access_exp \
         FROM refresh_tokens WHERE family_id = $1 \
         AND COALESCE(access_expires_at, issued_at + $2) > $3",
    )
    .bind(family_id)
    .bind(times.legacy_access_ttl)
    .bind(times.live_after)
    .fetch_all(&mut *conn)
    .await?;
    let mut revoked = Vec::with_capacity(rows.len());
    for row in &rows {
        revoked.push(RevokedJti {
            jti: row.try_get("access_jti")?,
            expires_at: row.try_get("access_exp")?,
        });
    }
    for entry in &revoked {
        insert_revoked(conn, entry, times.leeway).await?;
    }
    Ok(revoked)
}

/// A family is dead, and its rows can go, once it is revoked, its newest
/// token has expired, it has passed its absolute lifetime, or no token in it
/// is live any more (all revoked by a user change). Until then even spent
/// rows stay: presenting one is how reuse is detected.
const DEAD_FAMILY: &str = "revoked_at IS NOT NULL OR last_expires_at <= $1 OR created_at <= $2 \
     OR NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = refresh_families.family_id \
     AND t.used_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > $1)";

impl Store {
    /// Records the first refresh token of a new family (a login) for a
    /// user whose password was checked while their cutoff was
    /// `checked_cutoff`. If the user then has more than `max_live` live
    /// families, the oldest are revoked, with their access tokens, which are
    /// returned. One transaction.
    ///
    /// `None`, with nothing written, when the user has changed since the
    /// check (a password change, disable, role removal or delete moved the
    /// cutoff): the user row is read under a share lock (PostgreSQL; SQLite
    /// has one writer), so a change either committed before, and is seen
    /// here, or waits for this transaction and then revokes the new family.
    pub async fn start_refresh_family(
        &self,
        token: &RefreshTokenRow,
        checked_cutoff: i64,
        max_live: i64,
        started_after: i64,
        times: RevocationTimes,
    ) -> Result<Option<Vec<RevokedJti>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO refresh_families (family_id, user_id, created_at, last_expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&token.family_id)
        .bind(token.user_id.clone())
        .bind(token.issued_at)
        .bind(token.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_write)?;
        insert_refresh(&mut tx, token).await?;
        if token.user_id.is_some() {
            let unchanged = match self.backend {
                Backend::Postgres => {
                    "SELECT id FROM users WHERE id = $1 AND tokens_valid_after = $2 \
                     AND disabled = 0 FOR SHARE"
                }
                Backend::Sqlite => {
                    "SELECT id FROM users WHERE id = $1 AND tokens_valid_after = $2 \
                     AND disabled = 0"
                }
            };
            let user: Option<String> = sqlx::query_scalar(unchanged)
                .bind(token.user_id.clone())
                .bind(checked_cutoff)
                .fetch_optional(&mut *tx)
                .await?;
            if user.is_none() {
                tx.rollback().await?;
                return Ok(None);
            }
        }
        let live: Vec<String> = sqlx::query_scalar(
            "SELECT f.family_id FROM refresh_families f WHERE f.user_id = $1 \
             AND f.revoked_at IS NULL AND f.last_expires_at > $2 AND f.created_at > $3 \
             AND EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = f.family_id \
             AND t.used_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > $2) \
             AND f.family_id <> $4 ORDER BY f.created_at DESC, f.family_id",
        )
        .bind(token.user_id.clone())
        .bind(times.now)
        .bind(started_after)
        .bind(&token.family_id)
        .fetch_all(&mut *tx)
        .await?;
        // The new family is one of the `max_live`.
        let others = usize::try_from(max_live.max(1) - 1).unwrap_or(usize::MAX);
        let mut revoked = Vec::new();
        for family_id in live.iter().skip(others) {
            if lock_family(&mut tx, self.backend, family_id)
                .await?
                .is_some()
            {
                revoked.extend(revoke_family_locked(&mut tx, family_id, times).await?);
            }
        }
        tx.commit().await?;
        Ok(Some(revoked))
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
            " FROM refresh_tokens t LEFT JOIN refresh_families f ON f.family_id = t.family_id \
             WHERE t.token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(refresh_from_row).transpose()
    }

    /// Spends `presented` and records `child` (same family) in one
    /// transaction that holds the family's lock. Returns `false`, changing
    /// nothing, when the family is revoked or gone, or the token was
    /// already spent or revoked, including by a concurrent request: exactly
    /// one of two simultaneous uses wins, and a revocation of the family
    /// either waits for this rotation (and then revokes the child too) or
    /// makes it fail. `audit` is recorded only when the rotation happens.
    pub async fn rotate_refresh_token(
        &self,
        presented: &str,
        now: i64,
        child: &RefreshTokenRow,
        audit: &AuditRecord,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let family = lock_family(&mut tx, self.backend, &child.family_id).await?;
        if !matches!(family, Some((_, None))) {
            tx.rollback().await?;
            return Ok(false);
        }
        let spent = sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND family_id = $3 \
             AND used_at IS NULL AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(presented)
        .bind(&child.family_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if spent != 1 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_refresh(&mut tx, child).await?;
        sqlx::query("UPDATE refresh_families SET last_expires_at = $1 WHERE family_id = $2")
            .bind(child.expires_at)
            .bind(&child.family_id)
            .execute(&mut *tx)
            .await?;
        insert_audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Revokes a family: its row, every refresh token in it, and the access
    /// tokens issued with them that are still live (each kept on the
    /// revocation list until its own `exp`). One transaction, under the
    /// family's lock, with `audit` if given; returns the listed `jti`s.
    pub async fn revoke_refresh_family(
        &self,
        family_id: &str,
        times: RevocationTimes,
        audit: Option<&AuditRecord>,
    ) -> Result<Vec<RevokedJti>, StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_family(&mut tx, self.backend, family_id).await?;
        let revoked = revoke_family_locked(&mut tx, family_id, times).await?;
        if let Some(audit) = audit {
            insert_audit_in(&mut tx, audit).await?;
        }
        tx.commit().await?;
        Ok(revoked)
    }

    /// Deletes dead families and all their refresh tokens (see
    /// [`DEAD_FAMILY`]): `now` is the current time, families created at or
    /// before `started_before` have passed their absolute lifetime. Returns
    /// how many token rows went.
    pub async fn prune_refresh_families(
        &self,
        now: i64,
        started_before: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let tokens = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM refresh_tokens WHERE family_id IN \
             (SELECT family_id FROM refresh_families WHERE {DEAD_FAMILY})"
        )))
        .bind(now)
        .bind(started_before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM refresh_families WHERE {DEAD_FAMILY}"
        )))
        .bind(now)
        .bind(started_before)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(tokens)
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

    /// Revokes one access token until its `exp` plus `leeway`, and records
    /// `audit`.
    pub async fn revoke_access_token(
        &self,
        revoked: &RevokedJti,
        leeway: i64,
        audit: &AuditRecord,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_revoked(&mut tx, revoked, leeway).await?;
        insert_audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }
}
