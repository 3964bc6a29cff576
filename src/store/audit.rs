//! The `audit_events` table: append, page through, prune.
//!
//! Events that record a change are written by the change's own transaction
//! ([`insert_audit_in`]), so the trail holds an event exactly when the change
//! committed; events with no transaction of their own (a failed login, an
//! issued token) go through [`Store::insert_audit`], which commits them in
//! groups: every event that arrives while one group is being written goes
//! into the next, in one write-only transaction (never read-then-write, so
//! it cannot meet `SQLITE_BUSY` on upgrade). Callers still wait for their
//! own event's commit, so nothing is acknowledged before it is stored, but
//! a burst of issued tokens costs one commit (one fsync) per group instead
//! of one per token: SQLite has a single writer, and `client_credentials`
//! at thousands per second would otherwise queue on it.

use sqlx::Row as _;
use sqlx::any::AnyRow;

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{Store, StoreError};

/// Most events one group commit writes; the rest wait for the next.
const MAX_GROUP: usize = 512;

/// An event waiting for its group, and who waits for its commit.
type Pending = (AuditRecord, oneshot::Sender<Result<(), StoreError>>);

/// The events waiting for the next group commit, and the one writer.
#[derive(Default)]
pub(super) struct AuditGroups {
    waiting: Mutex<Vec<Pending>>,
    /// Held by the task writing a group: one group at a time, in order.
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for AuditGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditGroups").finish_non_exhaustive()
    }
}

impl AuditGroups {
    /// Takes up to `limit` of the oldest waiting events.
    fn take(&self, limit: usize) -> Vec<Pending> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let split = waiting.len().min(limit);
        let rest = waiting.split_off(split);
        std::mem::replace(&mut *waiting, rest)
    }
}

/// An event to append (the store assigns its id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When it happened (Unix seconds).
    pub occurred_at: i64,
    /// What happened (`login_failed`, `user_created`, …).
    pub event: String,
    /// Who did it (a user id, a client id, `cli`, `scheduler`, …).
    pub actor: String,
    /// What it was done to.
    pub subject: String,
    /// The client's address, for events caused by a request.
    pub client_ip: Option<String>,
    /// `success`, `failure` or `refused`.
    pub outcome: String,
    /// A short, non-secret description.
    pub detail: String,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Grows with every insert; orders events.
    pub id: i64,
    /// The event.
    pub record: AuditRecord,
}

/// Which events to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this event name.
    pub event: Option<String>,
    /// Only this subject.
    pub subject: Option<String>,
    /// Only events at or after this time.
    pub since: Option<i64>,
    /// Only events at or before this time.
    pub until: Option<i64>,
    /// Only events older than this id (the paging cursor).
    pub before_id: Option<i64>,
    /// Only events newer than this id (following the trail).
    pub after_id: Option<i64>,
}

fn audit_from_row(row: &AnyRow) -> Result<AuditRow, StoreError> {
    Ok(AuditRow {
        id: row.try_get("id")?,
        record: AuditRecord {
            occurred_at: row.try_get("occurred_at")?,
            event: row.try_get("event")?,
            actor: row.try_get("actor")?,
            subject: row.try_get("subject")?,
            client_ip: row.try_get("client_ip")?,
            outcome: row.try_get("outcome")?,
            detail: row.try_get("detail")?,
        },
    })
}

/// Appends `record` on `conn`, inside the caller's transaction.
pub(super) async fn insert_audit_in(
    conn: &mut sqlx::AnyConnection,
    record: &AuditRecord,
) -> Result<(), StoreError> {
    insert_audits_in(conn, std::slice::from_ref(record)).await
}

/// Appends every record of `records` on `conn`.
///
/// One multi-row INSERT per [`ROWS_PER_INSERT`] records: each statement is a
/// round trip to the database's thread (SQLite) or server (PostgreSQL),
/// and a group commit of a few dozen events one statement each spent more
/// time in those than in its commit.
pub(super) async fn insert_audits_in(
    conn: &mut sqlx::AnyConnection,
    records: &[AuditRecord],
) -> Result<(), StoreError> {
    for chunk in records.chunks(ROWS_PER_INSERT) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|row| {
                let first = row * 7 + 1;
                let params: Vec<String> = (first..first + 7).map(|n| format!("${n}")).collect();
                format!("({})", params.join(", "))
            })
            .collect();
        let sql = format!(
            "INSERT INTO audit_events (occurred_at, event, actor, subject, client_ip, outcome, detail) \
             VALUES {}",
            rows.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for record in chunk {
            query = query
                .bind(record.occurred_at)
                .bind(&record.event)
                .bind(&record.actor)
                .bind(&record.subject)
                .bind(record.client_ip.clone())
                .bind(&record.outcome)
                .bind(&record.detail);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Rows of one audit INSERT (7 parameters each: far below SQLite's 32 766
/// and PostgreSQL's 65 535).
const ROWS_PER_INSERT: usize = 64;

impl Store {
    /// Appends one event, committed with whatever other events are waiting
    /// (see the module's comment); returns once it is stored.
    pub async fn insert_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        let (done, committed) = oneshot::channel();
        self.audit_groups
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((record.clone(), done));
        let writer = Arc::clone(&self.audit_groups.writer).lock_owned().await;
        // Nothing waiting means an earlier group took this event along.
        let group = self.audit_groups.take(MAX_GROUP);
        if !group.is_empty() {
            // The group is written by its own task, which holds the writer:
            // a caller that gives up (its client left) cancels nothing.
            let store = self.clone();
            // It goes on while events wait, so one queued by a caller that
            // gave up while waiting for the writer is never left behind.
            tokio::spawn(async move {
                let _writer = writer;
                let mut group = group;
                while !group.is_empty() {
                    store.commit_audit_group(group).await;
                    group = store.audit_groups.take(MAX_GROUP);
                }
            });
        }
        committed
            .await
            .unwrap_or(Err(StoreError::Unavailable(sqlx::Error::WorkerCrashed)))
    }

    /// Writes `group` in one transaction; if that fails, event by event,
    /// so each caller hears its own event's fate.
    async fn commit_audit_group(&self, group: Vec<Pending>) {
        let records: Vec<AuditRecord> = group.iter().map(|(r, _)| r.clone()).collect();
        let together = async {
            let mut tx = self.pool.begin().await?;
            insert_audits_in(&mut tx, &records).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(())
        };
        if together.await.is_ok() {
            for (_, done) in group {
                let _ = done.send(Ok(()));
            }
            return;
        }
        for (record, done) in group {
            let alone = async {
                let mut conn = self.pool.acquire().await?;
                insert_audit_in(&mut conn, &record).await
            };
            let _ = done.send(alone.await);
        }
    }

    /// Up to `limit` events matching `filter`: newest first, or oldest
    /// first when following (`after_id` set).
    pub async fn list_audit(
        &self,
        filter: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditRow>, StoreError> {
        // Every condition is always present and disabled by a NULL-ish
        // sentinel, so the statement stays one static string.
        let order = if filter.after_id.is_some() {
            "ASC"
        } else {
            "DESC"
        };
        let sql = format!(
            "SELECT id, occurred_at, event, actor, subject, client_ip, outcome, detail \
             FROM audit_events \
             WHERE ($1 = '' OR event = $1) AND ($2 = '' OR subject = $2) \
             AND occurred_at >= $3 AND occurred_at <= $4 AND id < $5 AND id > $6 \
             ORDER BY id {order} LIMIT $7"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(filter.event.clone().unwrap_or_default())
            .bind(filter.subject.clone().unwrap_or_default())
            .bind(filter.since.unwrap_or(i64::MIN))
            .bind(filter.until.unwrap_or(i64::MAX))
            .bind(filter.before_id.unwrap_or(i64::MAX))
            .bind(filter.after_id.unwrap_or(i64::MIN))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_from_row).collect()
    }

    /// The newest event's id (0 for an empty trail).
    pub async fn last_audit_id(&self) -> Result<i64, StoreError> {
        let id: Option<i64> = sqlx::query_scalar("SELECT MAX(id) FROM audit_events")
            .fetch_one(&self.pool)
            .await?;
        Ok(id.unwrap_or(0))
    }

    /// Deletes events older than `cutoff` (Unix seconds); returns how many.
    pub async fn delete_audit_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM audit_events WHERE occurred_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
