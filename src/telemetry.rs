//! Logging: a tracing subscriber writing text or JSON lines to stderr.
//! `RUST_LOG` refines the level (default `info`). Nothing secret is ever
//! passed to a log macro: keys and passwords are redacted types.
//!
//! Lines are formatted on the calling thread but written by a background
//! thread (`tracing-appender`), so a slow stderr (a pipe to a busy log
//! shipper, a full terminal) never holds up a request. The queue is not
//! lossy: when its 128 000 lines are full, callers wait rather than drop
//! lines, because security events must not vanish under load.
//! Colour codes are written only when stderr is a terminal.

use std::io::IsTerminal as _;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Keeps the background writer alive; dropping it flushes what is queued.
/// Hold it until the process ends.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: Option<WorkerGuard>,
}

/// Installs the global subscriber once; later calls do nothing (and return
/// a guard that holds nothing). `default_level` applies when `RUST_LOG` is
/// unset (`info` for the server, `warn` for CLI commands so their output
/// stays clean).
pub fn init(format: LogFormat, default_level: &str) -> LogGuard {
    // sqlx logs PostgreSQL's notices (e.g. "relation _sqlx_migrations
    // already exists, skipping" on every start) at INFO: noise, not news.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_level},sqlx::postgres::notice=warn")));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("keyturn-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    LogGuard {
        _writer: installed.ok().map(|()| guard),
    }
}
