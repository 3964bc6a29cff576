//! The master key's check value (see `keys::MasterKey::check_value`) and
//! whether the store holds anything yet.

use sqlx::Row as _;

use super::{Store, StoreError};

impl Store {
    /// The recorded master key check value, if any.
    pub async fn master_check(&self) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT check_value FROM master_key_check WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("check_value")).transpose()?)
    }

    /// Records `check_value` unless one is recorded already; returns the
    /// value that stands (another process may have recorded first).
    pub async fn record_master_check(
        &self,
        check_value: &str,
        now: i64,
    ) -> Result<String, StoreError> {
        sqlx::query(
            "INSERT INTO master_key_check (id, check_value, created_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(check_value)
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.master_check()
            .await?
            .ok_or_else(|| StoreError::Corrupt("master key check vanished".into()))
    }

    /// Whether the store holds no key, user or client yet: only then may a
    /// new master key be made for it.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM keys) + (SELECT COUNT(*) FROM users) \
             + (SELECT COUNT(*) FROM clients) AS n",
        )
        .fetch_one(&self.pool)
        .await?;
        let n: i64 = row.try_get("n")?;
        Ok(n == 0)
    }
}
