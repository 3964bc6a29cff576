//! Logging: a tracing subscriber writing text or JSON lines to stderr.
//! `RUST_LOG` refines the level (default `info`). Nothing secret is ever
//! passed to a log macro: keys and passwords are redacted types.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber once; later calls do nothing.
/// `default_level` applies when `RUST_LOG` is unset (`info` for the server,
/// `warn` for CLI commands so their output stays clean).
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
