//! The `login_throttle` table: login attempts per username shared by every
//! instance on the store (see `accounts::LoginThrottle`). Rows are keyed by
//! a salted hash the caller computes; the name is never stored.

use sqlx::Row as _;

use super::{Store, StoreError};

/// The answer to [`Store::reserve_login_attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginReservation {
    /// The attempt is counted as pending; `window_start` identifies the
    /// window it counts in, for settling it.
    Admitted {
        /// Start of the window the attempt counts in.
        window_start: i64,
    },
    /// The window holds the limit's failures: retry after this many seconds.
    Locked {
        /// Seconds until the window ends (at least 1).
        retry_after: i64,
    },
    /// Attempts still in flight fill the window: retry in a moment.
    Busy,
}

impl Store {
    /// The store's login-throttle salt: the one recorded, or `fresh` if
    /// none was (another instance may record first; its salt stands).
    pub async fn login_throttle_salt(&self, fresh: &str, now: i64) -> Result<String, StoreError> {
        let select = "SELECT salt FROM login_throttle_salt WHERE id = 1";
        if let Some(row) = sqlx::query(select).fetch_optional(&self.pool).await? {
            return Ok(row.try_get("salt")?);
        }
        sqlx::query(
            "INSERT INTO login_throttle_salt (id, salt, created_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(fresh)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(select).fetch_one(&self.pool).await?;
        Ok(row.try_get("salt")?)
    }

    /// Counts one attempt for `name_key` as pending unless failures plus
    /// pending attempts already reach `limit` in its current window
    /// (`window` seconds from the window's first attempt). One statement:
    /// the row is locked while it is read and written (SQLite: the
    /// database write lock; PostgreSQL: the row lock of `ON CONFLICT DO
    /// UPDATE`), so concurrent instances cannot both take the last attempt.
    pub async fn reserve_login_attempt(
        &self,
        name_key: &str,
        now: i64,
        window: i64,
        limit: u32,
    ) -> Result<LoginReservation, StoreError> {
        // `$3`: a window that started at or before it has ended; the SET
        // expressions all read the row as it was.
        let ended_by = now.saturating_sub(window);
        let row = sqlx::query(
            "INSERT INTO login_throttle (name_key, window_start, failures, pending) \
             VALUES ($1, $2, 0, 1) \
             ON CONFLICT (name_key) DO UPDATE SET \
               window_start = CASE WHEN login_throttle.window_start <= $3 THEN $2 \
                              ELSE login_throttle.window_start END, \
               failures = CASE WHEN login_throttle.window_start <= $3 THEN 0 \
                          ELSE login_throttle.failures END, \
               pending = CASE WHEN login_throttle.window_start <= $3 THEN 1 \
                         ELSE login_throttle.pending + 1 END \
             WHERE login_throttle.window_start <= $3 \
                OR login_throttle.failures + login_throttle.pending < $4 \
             RETURNING window_start",
        )
        .bind(name_key)
        .bind(now)
        .bind(ended_by)
        .bind(i64::from(limit))
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            return Ok(LoginReservation::Admitted {
                window_start: row.try_get("window_start")?,
            });
        }
        // Full. Only the wait is read here, outside the statement; a row
        // changed since then can only shorten the wait, never add an attempt.
        let row =
            sqlx::query("SELECT window_start, failures FROM login_throttle WHERE name_key = $1")
                .bind(name_key)
                .fetch_optional(&self.pool)
                .await?;
        let mut locked_until = None;
        if let Some(row) = row {
            let failures: i64 = row.try_get("failures")?;
            let window_start: i64 = row.try_get("window_start")?;
            if failures >= i64::from(limit) {
                locked_until = Some(window_start.saturating_add(window));
            }
        }
        Ok(match locked_until {
            Some(until) if until > now => LoginReservation::Locked {
                retry_after: until - now,
            },
            // Attempts in flight fill the window: they end in moments.
            _ => LoginReservation::Busy,
        })
    }

    /// Settles a pending attempt of the window `window_start` as a failure;
    /// nothing if that window is gone (a new one began: the attempt was
    /// counted in its own window, which has ended).
    pub async fn fail_login_attempt(
        &self,
        name_key: &str,
        window_start: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE login_throttle SET failures = failures + 1, \
               pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END \
             WHERE name_key = $1 AND window_start = $2",
        )
        .bind(name_key)
        .bind(window_start)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Uncounts a pending attempt of the window `window_start` that reached
    /// no verdict; nothing if that window is gone.
    pub async fn release_login_attempt(
        &self,
        name_key: &str,
        window_start: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE login_throttle SET pending = pending - 1 \
             WHERE name_key = $1 AND window_start = $2 AND pending > 0",
        )
        .bind(name_key)
        .bind(window_start)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A successful login for `name_key` (pending in the window
    /// `window_start`): its failures are forgotten, and its slot freed.
    pub async fn clear_login_attempts(
        &self,
        name_key: &str,
        window_start: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE login_throttle SET failures = 0, \
               pending = CASE WHEN window_start = $2 AND pending > 0 THEN pending - 1 \
                         ELSE pending END \
             WHERE name_key = $1",
        )
        .bind(name_key)
        .bind(window_start)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Drops the rows whose window started at or before `ended_by` (the
    /// window has ended: they no longer refuse anything; a pending attempt
    /// of an instance that died is forgotten with them); returns how many.
    pub async fn prune_login_throttle(&self, ended_by: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM login_throttle WHERE window_start <= $1")
            .bind(ended_by)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The keys of the login throttle's rows (tests).
    #[cfg(test)]
    pub(crate) async fn login_throttle_keys(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT name_key FROM login_throttle")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("name_key"))
            .collect::<Result<_, _>>()?)
    }
}
