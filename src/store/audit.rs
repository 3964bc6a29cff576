//! The `audit_events` table: append, page through, prune.
//!
//! Events that record a change are written by the change's own transaction
//! ([`insert_audit_in`]), so the trail holds an event exactly when the change
//! committed. Events with no transaction of their own (a failed login, an
//! issued token) are committed in groups: every event that arrives while
//! one group is being written goes into the next, in one write-only
//! transaction (never read-then-write, so it cannot meet `SQLITE_BUSY` on
//! upgrade), one multi-row INSERT per 64 events. SQLite has a single
//! writer, and `client_credentials` at thousands per second would otherwise
//! queue on it, one commit (one fsync) per token.
//!
//! A caller either waits for its own event's commit ([`Store::insert_audit`])
//! or only queues it ([`Store::queue_audit`]): the grant that issues tokens
//! by the thousand must not wait for an fsync per group. A queued event is
//! written within one group; it is waited for after all when the trail is
//! failing, when [`MAX_QUEUED`] events already wait or the oldest has waited
//! [`MAX_QUEUE_AGE`], so a store that cannot keep events is heard at once
//! and bounds what a crash can take from the table. [`Store::flush_audit`]
//! waits for everything queued before it (reading the trail, shutting down).

use sqlx::Row as _;
use sqlx::any::AnyRow;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedMutexGuard, oneshot, watch};

use super::{Store, StoreError};

/// Most events one group commit writes; the rest wait for the next.
const MAX_GROUP: usize = 512;

/// Most events [`Store::queue_audit`] leaves unwritten before its callers
/// wait for their commits: what a crash can take from the table at most
/// (each event is in the log before it is queued).
pub const MAX_QUEUED: usize = 2048;

/// How long the oldest queued event may wait before callers of
/// [`Store::queue_audit`] wait for their commits: a store that hangs
/// stops the queueing within this.
pub const MAX_QUEUE_AGE: Duration = Duration::from_millis(250);

/// An event waiting for its group, and who waits for its commit (nobody,
/// once the receiver is gone: a queued event or a caller that gave up).
struct Pending {
    seq: u64,
    queued_at: Instant,
    record: AuditRecord,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The events waiting for the next group commit, and the one writer.
pub(super) struct AuditGroups {
    waiting: Mutex<Waiting>,
    /// Held by the task writing groups: one group at a time, in order.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// The `seq` of the newest event whose group has been written (or has
    /// failed): what [`Store::flush_audit`] waits for.
    written: watch::Sender<u64>,
    /// Set when a group failed to commit, cleared when one commits.
    failing: AtomicBool,
}

#[derive(Default)]
struct Waiting {
    events: Vec<Pending>,
    /// The `seq` of the newest event queued.
    last_seq: u64,
}

impl Default for AuditGroups {
    fn default() -> Self {
        Self {
            waiting: Mutex::default(),
            writer: Arc::default(),
            written: watch::Sender::new(0),
            failing: AtomicBool::new(false),
        }
    }
}

impl std::fmt::Debug for AuditGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditGroups").finish_non_exhaustive()
    }
}

impl AuditGroups {
    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes up to `limit` of the oldest waiting events.
    fn take(&self, limit: usize) -> Vec<Pending> {
        let mut waiting = self.waiting();
        let split = waiting.events.len().min(limit);
        let rest = waiting.events.split_off(split);
        std::mem::replace(&mut waiting.events, rest)
    }

    /// Whether a queued caller should rather wait for its commit.
    fn must_wait(&self, waiting: &Waiting) -> bool {
        self.failing.load(Ordering::Acquire)
            || waiting.events.len() >= MAX_QUEUED
            || waiting
                .events
                .first()
                .is_some_and(|oldest| oldest.queued_at.elapsed() >= MAX_QUEUE_AGE)
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
    // SQLite finds a named parameter (`$n`) by a linear search of the
    // statement's names, so binding a 448-parameter INSERT by name is
    // quadratic: it showed as 4.6 % of a client_credentials profile.
    // Anonymous `?` parameters are bound in order with no search.
    let numbered = conn.backend_name() != "SQLite";
    for chunk in records.chunks(ROWS_PER_INSERT) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|row| {
                let first = row * 7 + 1;
                let params: Vec<String> = (first..first + 7)
                    .map(|n| {
                        if numbered {
                            format!("${n}")
                        } else {
                            "?".into()
                        }
                    })
                    .collect();
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
        self.enqueue_audit(record, done, &mut self.audit_groups.waiting());
        self.start_audit_writer();
        committed
            .await
            .unwrap_or(Err(StoreError::Unavailable(sqlx::Error::WorkerCrashed)))
    }

    /// Queues one event for the next group commit and returns without
    /// waiting for it, unless the trail is failing or the queue is full or
    /// stuck (see [`MAX_QUEUED`], [`MAX_QUEUE_AGE`]): then as
    /// [`Store::insert_audit`], so the caller hears a store that cannot
    /// keep events, and a slow store slows callers instead of growing the
    /// queue.
    pub async fn queue_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        {
            let mut waiting = self.audit_groups.waiting();
            if !self.audit_groups.must_wait(&waiting) {
                let (done, _nobody_waits) = oneshot::channel();
                self.enqueue_audit(record, done, &mut waiting);
                drop(waiting);
                self.start_audit_writer();
                return Ok(());
            }
        }
        self.insert_audit(record).await
    }

    /// Returns once every event queued before the call has been written
    /// (or has failed to be): what this instance reads of the trail then
    /// holds its own events.
    pub async fn flush_audit(&self) {
        let last = self.audit_groups.waiting().last_seq;
        self.start_audit_writer();
        let mut written = self.audit_groups.written.subscribe();
        // The sender lives as long as the store: this only ends on `last`.
        let _ = written.wait_for(|seq| *seq >= last).await;
    }

    fn enqueue_audit(
        &self,
        record: &AuditRecord,
        done: oneshot::Sender<Result<(), StoreError>>,
        waiting: &mut Waiting,
    ) {
        waiting.last_seq += 1;
        let seq = waiting.last_seq;
        waiting.events.push(Pending {
            seq,
            queued_at: Instant::now(),
            record: record.clone(),
            done,
        });
    }

    /// Starts the group writer unless it runs: it writes groups while events
    /// wait, then stops. An event queued just as it stops sees the writer
    /// held here, and the writer sees that event after letting go.
    fn start_audit_writer(&self) {
        let Ok(writer) = Arc::clone(&self.audit_groups.writer).try_lock_owned() else {
            return;
        };
        // Its own task: a caller that gives up (its client left) cancels
        // nothing.
        let store = self.clone();
        tokio::spawn(async move { store.write_audit_groups(writer).await });
    }

    async fn write_audit_groups(self, writer: OwnedMutexGuard<()>) {
        let groups = &self.audit_groups;
        let mut held = Some(writer);
        while let Some(writer) = held.take() {
            loop {
                let group = groups.take(MAX_GROUP);
                let Some(last) = group.last().map(|p| p.seq) else {
                    break;
                };
                self.commit_audit_group(group).await;
                groups.written.send_replace(last);
            }
            drop(writer);
            if !groups.waiting().events.is_empty() {
                held = Arc::clone(&groups.writer).try_lock_owned().ok();
            }
        }
    }

    /// Writes `group` in one transaction; if that fails, event by event,
    /// so each caller hears its own event's fate.
    async fn commit_audit_group(&self, group: Vec<Pending>) {
        let records: Vec<AuditRecord> = group.iter().map(|p| p.record.clone()).collect();
        let together = async {
            let mut tx = self.pool.begin().await?;
            insert_audits_in(&mut tx, &records).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(())
        };
        let failed = together.await.is_err();
        self.audit_groups.failing.store(failed, Ordering::Release);
        if !failed {
            for pending in group {
                let _ = pending.done.send(Ok(()));
            }
            return;
        }
        // Once the store is found unreachable, the rest of the group is not
        // tried one by one (each try could wait for the pool's timeout).
        let mut unreachable = false;
        for pending in group {
            let alone = async {
                let mut conn = self.pool.acquire().await?;
                insert_audit_in(&mut conn, &pending.record).await
            };
            let stored = if unreachable {
                Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut))
            } else {
                alone.await
            };
            unreachable |= matches!(stored, Err(StoreError::Unavailable(_)));
            if let Err(err) = &stored
                && pending.done.is_closed()
            {
                // Nobody hears it: say it here (the event's own log line
                // was written when it was queued).
                tracing::error!(error = %err, audit = %pending.record.event, "queued audit event not stored");
            }
            let _ = pending.done.send(stored);
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/audit.db", dir.path().display());
        (dir, Store::connect(&url).await.unwrap())
    }

    fn event(n: usize) -> AuditRecord {
        AuditRecord {
            occurred_at: 1_700_000_000,
            event: "token_issued".into(),
            actor: "svc".into(),
            subject: "svc".into(),
            client_ip: None,
            outcome: "success".into(),
            detail: format!("n={n}"),
        }
    }

    async fn stored(store: &Store) -> usize {
        store
            .list_audit(&AuditFilter::default(), 10_000)
            .await
            .unwrap()
            .len()
    }

    /// Whether `call` finishes within 100 ms.
    async fn finishes<F: std::future::Future>(call: F) -> Option<F::Output> {
        tokio::time::timeout(Duration::from_millis(100), call)
            .await
            .ok()
    }

    /// A group being written (the writer held here) delays waited-for
    /// events, not queued ones; the flush writes what was queued.
    #[tokio::test]
    async fn queued_events_are_acknowledged_before_their_commit_and_written_by_a_flush() {
        let (_dir, store) = store().await;
        let writing = Arc::clone(&store.audit_groups.writer).lock_owned().await;
        assert!(matches!(
            finishes(store.queue_audit(&event(1))).await,
            Some(Ok(()))
        ));
        let waited = tokio::spawn({
            let store = store.clone();
            async move { store.insert_audit(&event(2)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waited.is_finished(),
            "a waited-for event waits for its commit"
        );
        assert_eq!(stored(&store).await, 0, "nothing committed yet");
        drop(writing);
        store.flush_audit().await;
        assert_eq!(stored(&store).await, 2);
        waited.await.unwrap().unwrap();
    }

    /// Queueing turns into waiting when the queue is full, when its oldest
    /// event has waited too long, and when the trail is failing.
    #[tokio::test]
    async fn queueing_waits_for_the_commit_when_the_queue_is_full_stuck_or_failing() {
        let (_dir, store) = store().await;
        let writing = Arc::clone(&store.audit_groups.writer).lock_owned().await;
        for n in 0..MAX_QUEUED {
            assert!(finishes(store.queue_audit(&event(n))).await.is_some());
        }
        assert!(
            finishes(store.queue_audit(&event(MAX_QUEUED)))
                .await
                .is_none(),
            "full"
        );
        drop(writing);
        store.flush_audit().await;
        // The call that waited queued its event before it was dropped: a
        // caller that gives up still has its event written.
        assert_eq!(stored(&store).await, MAX_QUEUED + 1);

        let writing = Arc::clone(&store.audit_groups.writer).lock_owned().await;
        assert!(finishes(store.queue_audit(&event(0))).await.is_some());
        tokio::time::sleep(MAX_QUEUE_AGE).await;
        assert!(
            finishes(store.queue_audit(&event(1))).await.is_none(),
            "stuck"
        );
        drop(writing);
        store.flush_audit().await;

        store.close().await;
        // The trail does not know yet: this one is queued, and its group
        // fails; from then on callers hear the failure.
        assert!(store.queue_audit(&event(2)).await.is_ok());
        store.flush_audit().await;
        assert!(store.audit_groups.failing.load(Ordering::Acquire));
        assert!(store.queue_audit(&event(3)).await.is_err(), "failing");
    }

    /// Events queued from many tasks at once are each written once, in
    /// groups, with no writer left behind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_queued_events_are_each_written_once() {
        let (_dir, store) = store().await;
        let tasks: Vec<_> = (0..2000)
            .map(|n| {
                let store = store.clone();
                tokio::spawn(async move { store.queue_audit(&event(n)).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        store.flush_audit().await;
        let rows = store
            .list_audit(&AuditFilter::default(), 10_000)
            .await
            .unwrap();
        let details: std::collections::BTreeSet<String> =
            rows.iter().map(|r| r.record.detail.clone()).collect();
        assert_eq!((rows.len(), details.len()), (2000, 2000));
    }
}
