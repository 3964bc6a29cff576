//! `keyturn audit tail`: the newest audit events, then (with `--follow`)
//! new ones as they are stored, read from the store every second.

use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::json;

use super::output::{OutputFormat, Table, unix_time};
use crate::app::Services;
use crate::audit::{AuditQuery, MAX_LIMIT, parse_time};
use crate::store::AuditRow;

/// How often `--follow` reads the store.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the newest audit events, oldest first; with --follow, keep
    /// printing new ones as they happen (JSON output: one object a line).
    Tail {
        /// Keep running and print new events as they are stored.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only this event, e.g. login_failed (see docs/audit.md).
        #[arg(long, value_name = "E")]
        event: Option<String>,
        /// Only this subject (a username, client id or kid).
        #[arg(long, value_name = "S")]
        subject: Option<String>,
        /// Only events this recent (a duration such as 1h or 7d) or since
        /// this time (Unix seconds or RFC 3339).
        #[arg(long, value_name = "D")]
        since: Option<String>,
        /// How many of the newest events to print first (1-1000).
        #[arg(long, short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIMIT)))]
        lines: u32,
    },
}

/// Runs an `audit` command.
pub async fn run(
    services: &Services,
    cmd: AuditCommand,
    output: OutputFormat,
) -> anyhow::Result<()> {
    let AuditCommand::Tail {
        follow,
        event,
        subject,
        since,
        lines,
    } = cmd;
    let since = since
        .map(|text| since_time(&text, services.clock.now()))
        .transpose()?;
    let query = AuditQuery {
        event,
        subject,
        since,
        until: None,
        limit: Some(lines),
        cursor: None,
    };
    let audit = &services.audit;
    // Following starts from the newest id read before the page: an event
    // stored in between is then printed once, by the page or the follow.
    let mut last = audit.last_id().await?;
    let mut events = audit.page(&query).await?.events;
    events.reverse();
    if let Some(newest) = events.last() {
        last = last.max(newest.id);
    }
    print(&events, output, true)?;
    if !follow {
        return Ok(());
    }
    loop {
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        let new = audit.after(last, &query).await?;
        if let Some(newest) = new.last() {
            last = newest.id;
            print(&new, output, false)?;
        }
    }
}

/// `--since`: a duration back from now, or a time.
fn since_time(text: &str, now: i64) -> anyhow::Result<i64> {
    if let Some(time) = parse_time(text) {
        return Ok(time);
    }
    let ago = humantime::parse_duration(text).with_context(|| {
        format!("--since {text:?}: expected a duration like 1h or 7d, Unix seconds or RFC 3339")
    })?;
    Ok(now.saturating_sub(i64::try_from(ago.as_secs()).unwrap_or(i64::MAX)))
}

fn print(events: &[AuditRow], output: OutputFormat, header: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match output {
        // One object a line, so a follower can be read line by line.
        OutputFormat::Json => {
            for e in events {
                let r = &e.record;
                let line = json!({
                    "id": e.id,
                    "time": unix_time(r.occurred_at),
                    "event": r.event,
                    "actor": r.actor,
                    "subject": r.subject,
                    "client_ip": r.client_ip,
                    "outcome": r.outcome,
                    "detail": r.detail,
                });
                writeln!(stdout, "{line}")?;
            }
        }
        OutputFormat::Table => {
            if events.is_empty() && !header {
                return Ok(());
            }
            let mut table = Table::new([
                "TIME",
                "EVENT",
                "ACTOR",
                "SUBJECT",
                "CLIENT_IP",
                "OUTCOME",
                "DETAIL",
            ]);
            for e in events {
                let r = &e.record;
                table.row([
                    unix_time(r.occurred_at).as_str(),
                    &r.event,
                    &r.actor,
                    &r.subject,
                    r.client_ip.as_deref().unwrap_or("-"),
                    &r.outcome,
                    &r.detail,
                ]);
            }
            let text = table.render();
            // Followed batches continue the first table without a header.
            let skip = usize::from(!header);
            for line in text.lines().skip(skip) {
                writeln!(stdout, "{line}")?;
            }
        }
    }
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times() {
        assert_eq!(since_time("1h", 10_000).unwrap(), 6_400);
        assert_eq!(since_time("1700000000", 0).unwrap(), 1_700_000_000);
        assert_eq!(
            since_time("2023-11-14T22:13:20Z", 0).unwrap(),
            1_700_000_000
        );
        assert!(since_time("soon", 0).is_err());
    }
}
