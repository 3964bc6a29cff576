//! The `status_changes` log: every change that makes issued access tokens
//! unacceptable before their `exp` (a user's or client's cutoff, a revoked
//! `jti`), numbered in commit order, and the PostgreSQL notification that
//! wakes the other instances when anything in the store changes.
//!
//! Why a log: a server's status views hold only what changed within the
//! last access-token lifetime and catch up with "rows after the version I
//! hold", so one change costs the same whether the store holds ten users or
//! a hundred thousand, and memory is bounded by changes, not by users.

use sqlx::Row;

use super::{Store, StoreError};

/// The PostgreSQL channel every committed change is announced on.
pub const CHANGES_CHANNEL: &str = "keyturn_changes";

/// What a status change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// A user's tokens issued at or before `at` are refused.
    User,
    /// A client's tokens issued at or before `at` are refused.
    Client,
    /// One access token (`subject` is its `jti`) is revoked; `at` is its `exp`.
    Jti,
}

impl ChangeKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Client => "client",
            Self::Jti => "jti",
        }
    }
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEntry {
    /// User id, client id or `jti`.
    pub subject: String,
    /// The cutoff (users, clients) or the token's `exp` (`jti`).
    pub at: i64,
    /// After this the entry refuses nothing unexpired and can be forgotten:
    /// `at` plus the writer's access-token lifetime (cutoffs) and leeway.
    pub until: i64,
}

/// The entries of one kind committed after some version, and the version
/// they bring the reader to.
#[derive(Debug, Clone, Default)]
pub struct StatusChanges {
    /// The `status` version read before the entries: every entry up to it
    /// is included.
    pub version: i64,
    /// In commit order.
    pub entries: Vec<StatusEntry>,
}

/// Appends one change inside the caller's transaction. The `status` version
/// row is bumped first: its row lock (PostgreSQL) or the single writer
/// (SQLite) is held until commit, so versions are unique and a reader that
/// sees version `v` committed sees every version below it too. Callers take
/// this lock last in their transaction (after user, family and client
/// locks), so it cannot close a deadlock cycle.
pub(super) async fn record_status_change(
    conn: &mut sqlx::AnyConnection,
    kind: ChangeKind,
    entry: &StatusEntry,
) -> Result<(), StoreError> {
    let version: i64 = sqlx::query_scalar(
        "UPDATE versions SET version = version + 1 WHERE name = 'status' RETURNING version",
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO status_changes (version, kind, subject, at, until) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(version)
    .bind(kind.as_str())
    .bind(&entry.subject)
    .bind(entry.at)
    .bind(entry.until)
    .execute(&mut *conn)
    .await?;
    notify_change(conn).await
}

/// On PostgreSQL, announces the caller's change on [`CHANGES_CHANNEL`] when
/// its transaction commits (identical notifications of one transaction are
/// delivered once); SQLite has no notifications and its readers poll.
pub(super) async fn notify_change(conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
    if conn.backend_name() == "PostgreSQL" {
        // pg_notify returns void, which the Any driver cannot describe.
        sqlx::query("SELECT COUNT(*) FROM (SELECT pg_notify($1, '')) AS sent")
            .bind(CHANGES_CHANNEL)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// A subscription to [`CHANGES_CHANNEL`]: wakes when another instance or
/// the CLI commits a change. Notifications sent while the connection was
/// down are lost, so it only shortens the poll, never replaces it.
pub struct ChangeListener(sqlx::postgres::PgListener);

impl ChangeListener {
    /// Waits for the next notification; reconnects by itself after a lost
    /// connection, and fails when the database cannot be reached.
    pub async fn changed(&mut self) -> Result<(), StoreError> {
        self.0.recv().await?;
        Ok(())
    }
}

impl Store {
    /// A listener for committed changes, on PostgreSQL; `None` on SQLite.
    pub async fn listen_for_changes(&self) -> Result<Option<ChangeListener>, StoreError> {
        let Some(url) = &self.listen_url else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(CHANGES_CHANNEL).await?;
        Ok(Some(ChangeListener(listener)))
    }

    /// The entries of `kind` committed after version `after` that still
    /// matter at `now` (`until` later than it).
    pub async fn status_changes(
        &self,
        kind: ChangeKind,
        after: i64,
        now: i64,
    ) -> Result<StatusChanges, StoreError> {
        // The version first: every row up to it has committed, and rows
        // committing later have higher versions, so nothing is skipped.
        let version: i64 = sqlx::query_scalar("SELECT version FROM versions WHERE name = 'status'")
            .fetch_one(&self.pool)
            .await?;
        let rows = sqlx::query(
            "SELECT subject, at, until FROM status_changes \
             WHERE version > $1 AND version <= $2 AND kind = $3 AND until > $4 ORDER BY version",
        )
        .bind(after)
        .bind(version)
        .bind(kind.as_str())
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let entries = rows
            .iter()
            .map(|row| {
                Ok(StatusEntry {
                    subject: row.try_get("subject")?,
                    at: row.try_get("at")?,
                    until: row.try_get("until")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(StatusChanges { version, entries })
    }

    /// Forgets the entries whose `until` is at or before `now`. Returns how
    /// many went.
    pub async fn prune_status_changes(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM status_changes WHERE until <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
