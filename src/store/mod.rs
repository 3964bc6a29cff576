//! Persistence: the only module that speaks SQL.
//!
//! One [`Store`] serves SQLite (the embedded default) and PostgreSQL through
//! sqlx's `Any` driver. Queries are written in the subset both dialects share
//! (`$N` placeholders, integers for times and flags); what differs between
//! them (DDL, locking) stays inside this module, chosen by [`Backend`].
//! Domain modules call the typed methods here and never see a row or a
//! connection. Timestamps are Unix seconds, UTC.

mod audit;
mod changes;
mod clients;
mod keys;
mod master;
mod throttle;
mod tokens;
mod users;

pub use audit::{AuditFilter, AuditRecord, AuditRow};
pub use changes::{CHANGES_CHANNEL, ChangeKind, ChangeListener, StatusChanges, StatusEntry};
pub use clients::{ClientRow, ClientStatusRow};
pub use keys::{KeyChange, KeyRow, KeyRowError};
pub use throttle::LoginReservation;
pub use tokens::{RefreshTokenRow, RefreshTokenState, RevocationTimes, RevokedJti};
pub use users::{UserChange, UserRow};

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};

/// What went wrong in the store. Callers map `Conflict`/`NotFound` to their
/// own meaning; `Database` is never shown to a client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness constraint was violated (the row already exists).
    #[error("already exists")]
    Conflict,
    /// The row to change does not exist.
    #[error("not found")]
    NotFound,
    /// The database URL is neither `sqlite://` nor `postgres://`.
    #[error("unsupported database URL scheme (use sqlite:// or postgres://)")]
    UnsupportedUrl,
    /// Stored data could not be decoded (corruption or a foreign writer).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// A JSON column could not be decoded.
    #[error("corrupt stored data in column {column}")]
    CorruptJson {
        /// The column.
        column: &'static str,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored key row names an unknown state or algorithm, or holds what
    /// its state may not.
    #[error("unreadable key row {kid}")]
    KeyRow {
        /// The key.
        kid: String,
        /// What is wrong with the row.
        #[source]
        problem: KeyRowError,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// The database cannot be reached right now (connection refused or
    /// lost, pool exhausted past its timeout, statement timed out): worth
    /// retrying shortly.
    #[error("database unreachable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The text cannot be stored (PostgreSQL holds no NUL in text): input
    /// that should have been refused earlier, reported as bad input.
    #[error("the value contains characters the store cannot hold")]
    UnstorableText,
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    fn from_write(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict,
            _ => err.into(),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if is_unreachable(&err) {
            Self::Unavailable(err)
        } else if is_unstorable_text(&err) {
            Self::UnstorableText
        } else {
            Self::Database(err)
        }
    }
}

/// Whether an error means "the database is not there right now" rather
/// than "this query is wrong".
fn is_unreachable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // PostgreSQL: 57014 query_canceled (statement_timeout), 57P01-03
        // shutting down / cannot connect now, class 08 connection exceptions.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code == "57014" || code.starts_with("57P") || code.starts_with("08")
        }),
        _ => false,
    }
}

/// PostgreSQL 22021 (a NUL or a byte invalid in the encoding) and 22P05
/// (untranslatable character): the value, not the query, is at fault.
fn is_unstorable_text(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.code().is_some_and(|code| code == "22021" || code == "22P05"))
}

/// How long a request waits for a database connection before it is told
/// the store is unavailable (503), instead of hanging.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// PostgreSQL cancels any statement running longer than this (it would
/// otherwise hold a pool connection and a request indefinitely).
const STATEMENT_TIMEOUT_MS: u32 = 5_000;
/// A readiness check gives up after this.
const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Which SQL engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded, single instance.
    Sqlite,
    /// Shared by several instances.
    Postgres,
}

impl FromStr for Backend {
    type Err = StoreError;
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }
}

/// Counters of the data sets servers mirror in memory (see `versions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Versions {
    /// Bumped by every change to the keys table.
    pub keys: i64,
    /// Bumped by every change to OAuth clients.
    pub clients: i64,
    /// The newest entry of the status change log (see `changes`).
    pub status: i64,
}

/// Handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Where a PostgreSQL change listener connects; `None` on SQLite.
    listen_url: Option<String>,
    /// Stand-alone audit events waiting for their group commit.
    audit_groups: Arc<audit::AuditGroups>,
}

impl Store {
    /// Connects (creating an SQLite file and its directory if needed) and
    /// applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        install_default_drivers();
        let backend: Backend = url.parse()?;
        let url = match backend {
            Backend::Sqlite => sqlite_url_with_create(url)?,
            Backend::Postgres => postgres_url_with_timeout(url),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 4,
                Backend::Postgres => 10,
            })
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(&url)
            .await?;
        let listen_url = (backend == Backend::Postgres).then(|| url.clone());
        let store = Self {
            pool,
            backend,
            listen_url,
            audit_groups: Arc::default(),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => {
                // WAL lets the CLI write while a server reads; persistent in the file.
                sqlx::query("PRAGMA journal_mode = WAL")
                    .execute(&self.pool)
                    .await?;
                sqlx::migrate!("src/store/migrations/sqlite")
                    .run(&self.pool)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("src/store/migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// Cheap round trip, for readiness checks; gives up after
    /// [`PING_TIMEOUT`] rather than waiting for the pool.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match tokio::time::timeout(PING_TIMEOUT, sqlx::query("SELECT 1").execute(&self.pool)).await
        {
            Ok(done) => done.map(drop).map_err(StoreError::from),
            Err(_) => Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut)),
        }
    }

    /// Current change counters; polled by running servers.
    pub async fn versions(&self) -> Result<Versions, StoreError> {
        let rows = sqlx::query("SELECT name, version FROM versions")
            .fetch_all(&self.pool)
            .await?;
        let mut versions = Versions::default();
        for row in rows {
            let name: String = row.try_get("name")?;
            let version: i64 = row.try_get("version")?;
            match name.as_str() {
                "keys" => versions.keys = version,
                "clients" => versions.clients = version,
                "status" => versions.status = version,
                _ => {}
            }
        }
        Ok(versions)
    }

    /// Closes the pool (used by tests to simulate an unreachable store).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Bumps a change counter inside the caller's transaction (taking its row
/// lock until commit) and, on PostgreSQL, wakes the other instances at
/// commit.
async fn bump_version(
    conn: &mut sqlx::AnyConnection,
    name: &'static str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE versions SET version = version + 1 WHERE name = $1")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    changes::notify_change(conn).await
}

/// Adds a server-side `statement_timeout` to a PostgreSQL URL unless it
/// sets `options` itself.
fn postgres_url_with_timeout(url: &str) -> String {
    if url.contains("options") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options[statement_timeout]={STATEMENT_TIMEOUT_MS}")
}

fn io_failure(path: &Path, err: &std::io::Error) -> StoreError {
    StoreError::Database(sqlx::Error::Configuration(
        format!("cannot create {}: {err}", path.display()).into(),
    ))
}

/// Creates the database's directory (0700) and file (0600) if missing, so
/// password hashes and refresh-token hashes are never readable by other
/// local users whatever the umask. SQLite gives its -wal and -shm files the
/// database file's mode.
fn create_private(path: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        builder.mode(0o700);
        builder.create(parent).map_err(|e| io_failure(parent, &e))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path).map_err(|e| io_failure(path, &e))?;
    Ok(())
}

/// `sqlite://path` → the same with `mode=rwc`, after creating the parent
/// directory and the file privately, so a fresh checkout starts without
/// manual steps.
fn sqlite_url_with_create(url: &str) -> Result<String, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or(StoreError::UnsupportedUrl)?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:" && !query.contains("mode=ro") {
        create_private(Path::new(path))?;
    }
    let query = if query.contains("mode=") {
        query.to_owned()
    } else if query.is_empty() {
        "mode=rwc".to_owned()
    } else {
        format!("{query}&mode=rwc")
    };
    Ok(format!("sqlite://{path}?{query}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_gain_create_mode() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/k.db", dir.path().display());
        let out = sqlite_url_with_create(&url).unwrap();
        assert!(out.ends_with("/sub/k.db?mode=rwc"), "{out}");
        assert!(dir.path().join("sub").is_dir());
        assert_eq!(
            sqlite_url_with_create("sqlite://x.db?mode=ro").unwrap(),
            "sqlite://x.db?mode=ro"
        );
    }

    #[test]
    fn backend_from_url() {
        assert_eq!("sqlite://a.db".parse::<Backend>().unwrap(), Backend::Sqlite);
        assert_eq!(
            "postgres://u@h/db".parse::<Backend>().unwrap(),
            Backend::Postgres
        );
        assert!("mysql://x".parse::<Backend>().is_err());
    }
}
