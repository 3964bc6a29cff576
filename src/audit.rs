//! The audit trail (docs/audit.md): every security event is one log line
//! and one stored row with who did what to whom, from where, and how it
//! ended. Never a password, token, secret or key: entries are built only
//! from the fixed [`Event`] names and from ids, names, scopes and counts.
//!
//! A change records its entry in its own store transaction (the domain
//! module passes [`AuditLog::prepare`]'s record to the store, then calls
//! [`Entry::log`] after the commit); an event without a transaction of its
//! own goes through [`AuditLog::record`], one INSERT. Calls `store` and
//! `clock` only.

use std::net::IpAddr;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::store::{AuditFilter, AuditRecord, AuditRow, Store, StoreError};

/// Largest page of `GET /admin/audit` and of one `audit tail` read.
pub const MAX_LIMIT: u32 = 1000;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: u32 = 100;
/// Longest stored `subject`/`actor`: a caller-supplied name (a username
/// typed at the login form) is cut here.
const MAX_NAME_CHARS: usize = 128;

macro_rules! events {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// What happened. The names are stable: operators filter on them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Event {
            $($(#[$doc])* $variant,)*
        }

        impl Event {
            /// Every event, in the order docs/audit.md lists them.
            pub const ALL: &[Event] = &[$(Event::$variant,)*];

            /// The stored and logged name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Event::$variant => $name,)*
                }
            }
        }
    };
}

events! {
    /// A user logged in.
    LoginSucceeded => "login_succeeded",
    /// Wrong credentials or a disabled user.
    LoginFailed => "login_failed",
    /// A login refused by the throttle.
    LoginThrottled => "login_throttled",
    /// An access token issued by `client_credentials` or `refresh_token`.
    TokenIssued => "token_issued",
    /// A spent or revoked refresh token presented: its family is revoked.
    RefreshTokenReuse => "refresh_token_reuse",
    /// Refresh families revoked because a user has too many sessions.
    SessionsRevoked => "sessions_revoked",
    /// An access token revoked by `/oauth/revoke`.
    TokenRevoked => "token_revoked",
    /// A user logged out.
    Logout => "logout",
    /// A user created.
    UserCreated => "user_created",
    /// A user's roles, password or disabled flag changed.
    UserChanged => "user_changed",
    /// A user deleted.
    UserDeleted => "user_deleted",
    /// A change refused because it would leave no enabled admin.
    LastAdminProtected => "last_admin_protected",
    /// An OAuth client registered.
    ClientCreated => "client_created",
    /// An OAuth client deleted.
    ClientDeleted => "client_deleted",
    /// An OAuth client's secret replaced.
    ClientSecretRotated => "client_secret_rotated",
    /// A signing key generated.
    KeyGenerated => "key_generated",
    /// A key became the signer (a rotation).
    KeyPromoted => "key_promoted",
    /// A key stopped signing (still published).
    KeyRetired => "key_retired",
    /// A retired key removed after its tokens expired.
    KeyPruned => "key_pruned",
    /// An unused next key removed (replaced by an imported key).
    KeyDropped => "key_dropped",
    /// A key revoked (emergency).
    KeyRevoked => "key_revoked",
    /// An operator's key imported as the next key.
    KeyImported => "key_imported",
    /// A master key made for a new store.
    MasterKeyCreated => "master_key_created",
    /// Every private key re-sealed under a new master key (`keys rewrap`).
    MasterKeyRewrapped => "master_key_rewrapped",
}

impl std::str::FromStr for Event {
    type Err = ();
    fn from_str(name: &str) -> Result<Self, ()> {
        Self::ALL
            .iter()
            .copied()
            .find(|e| e.as_str() == name)
            .ok_or(())
    }
}

/// How an event ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It happened.
    Success,
    /// It was attempted and failed (wrong password).
    Failure,
    /// A rule refused it (throttle, last admin, token reuse).
    Refused,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Refused => "refused",
        }
    }
}

/// Who causes the events of an operation, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// A user id (`sub`), a client id, `cli`, `scheduler` or `system`.
    pub name: String,
    /// The client's address, for requests.
    pub client_ip: Option<IpAddr>,
}

impl Actor {
    /// Someone known by `name`, calling from `client_ip`.
    pub fn new(name: impl Into<String>, client_ip: Option<IpAddr>) -> Self {
        Self {
            name: name.into(),
            client_ip,
        }
    }

    /// The server itself (start-up).
    pub fn system() -> Self {
        Self::new("system", None)
    }

    /// The key schedule (scheduled rotation and pruning).
    pub fn scheduler() -> Self {
        Self::new("scheduler", None)
    }

    /// An operator at the command line.
    pub fn cli() -> Self {
        Self::new("cli", None)
    }
}

/// One event, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    event: Event,
    actor: String,
    subject: String,
    client_ip: Option<IpAddr>,
    outcome: Outcome,
    detail: String,
}

impl Entry {
    /// `event` by `actor` on `subject`, successful, without detail.
    pub fn new(event: Event, actor: &Actor, subject: &str) -> Self {
        Self {
            event,
            actor: bounded(&actor.name),
            subject: bounded(subject),
            client_ip: actor.client_ip,
            outcome: Outcome::Success,
            detail: String::new(),
        }
    }

    /// With this outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// With this short, non-secret description.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into().replace('\0', "\u{fffd}");
        self
    }

    /// The event.
    pub fn event(&self) -> Event {
        self.event
    }

    /// The row to store for this entry at `now`.
    pub fn record_at(&self, now: i64) -> AuditRecord {
        AuditRecord {
            occurred_at: now,
            event: self.event.as_str().to_owned(),
            actor: self.actor.clone(),
            subject: self.subject.clone(),
            client_ip: self.client_ip.map(|ip| ip.to_canonical().to_string()),
            outcome: self.outcome.as_str().to_owned(),
            detail: self.detail.clone(),
        }
    }

    /// The log line (the same facts as the row).
    pub fn log(&self) {
        let client_ip = self.client_ip.map(|ip| ip.to_canonical().to_string());
        let client_ip = client_ip.as_deref().unwrap_or("-");
        if self.outcome == Outcome::Success {
            tracing::info!(audit = self.event.as_str(), actor = %self.actor, subject = %self.subject,
                client_ip, outcome = self.outcome.as_str(), detail = %self.detail, "audit");
        } else {
            tracing::warn!(audit = self.event.as_str(), actor = %self.actor, subject = %self.subject,
                client_ip, outcome = self.outcome.as_str(), detail = %self.detail, "audit");
        }
    }
}

/// A caller-supplied name, cut to [`MAX_NAME_CHARS`].
/// At most [`MAX_NAME_CHARS`], and storable: a NUL (which PostgreSQL text
/// cannot hold, and which only a hostile request sends) becomes U+FFFD.
fn bounded(name: &str) -> String {
    name.chars()
        .take(MAX_NAME_CHARS)
        .map(|c| {
            if c == '\0' {
                char::REPLACEMENT_CHARACTER
            } else {
                c
            }
        })
        .collect()
}

/// Why the trail could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A query parameter is malformed; the text says which.
    #[error("{0}")]
    BadQuery(&'static str),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A query of the trail, as callers give it.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this event name.
    pub event: Option<String>,
    /// Only this subject.
    pub subject: Option<String>,
    /// Only at or after (Unix seconds).
    pub since: Option<i64>,
    /// Only at or before (Unix seconds).
    pub until: Option<i64>,
    /// Page size (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]).
    pub limit: Option<u32>,
    /// From [`AuditPage::next`]: the events older than the last page.
    pub cursor: Option<String>,
}

/// One page of events, newest first.
#[derive(Debug, Clone)]
pub struct AuditPage {
    /// The events.
    pub events: Vec<AuditRow>,
    /// The cursor of the next (older) page; `None` on the last page.
    pub next: Option<String>,
}

/// Parses a time given as Unix seconds or RFC 3339.
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(secs) = text.parse::<i64>() {
        return Some(secs);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp())
}

/// Says that `entry` did not reach the trail (its log line stands).
fn not_stored(entry: &Entry, err: &StoreError) {
    tracing::error!(error = %err, audit = entry.event.as_str(), "audit event not stored");
}

/// The cursor is the last id shown, hidden behind a prefix and base64 so
/// clients treat it as opaque; ids only grow, so a page boundary is stable
/// whatever is inserted meanwhile.
fn encode_cursor(id: i64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("a:{id}"))
}

fn decode_cursor(cursor: &str) -> Option<i64> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix("a:")?.parse().ok().filter(|id| *id > 0)
}

/// Records and reads the trail.
#[derive(Clone)]
pub struct AuditLog {
    store: Store,
    clock: SharedClock,
}

impl AuditLog {
    /// Over `store`, timed by `clock`.
    pub fn new(store: Store, clock: SharedClock) -> Self {
        Self { store, clock }
    }

    /// The row for `entry` now, for the store to write in the transaction
    /// of the change it describes. Log it with [`Entry::log`] after the
    /// commit.
    pub fn prepare(&self, entry: &Entry) -> AuditRecord {
        entry.record_at(self.clock.now())
    }

    /// Logs `entry` and stores it (in a group commit, see
    /// [`Store::insert_audit`]). A store failure is
    /// logged, not returned: the log line stands, and refusing a login
    /// because the trail is down would turn an audit outage into an
    /// authentication outage.
    pub async fn record(&self, entry: Entry) {
        // A failure is logged there; the action it records stands.
        let _ = self.record_stored(entry).await;
    }

    /// Logs and stores `entry`, and says whether it was stored: for the
    /// actions that must not happen unrecorded (issuing a token to a
    /// client), which fail when their event cannot be kept.
    pub async fn record_stored(&self, entry: Entry) -> Result<(), StoreError> {
        entry.log();
        self.store
            .insert_audit(&self.prepare(&entry))
            .await
            .inspect_err(|err| not_stored(&entry, err))
    }

    /// Logs `entry` and queues it for the next group commit without
    /// waiting for that commit ([`Store::queue_audit`]), unless the trail
    /// is failing or behind: then as [`AuditLog::record_stored`]. For the
    /// event issued by the thousand (a `client_credentials` token), whose
    /// grant would otherwise wait for one fsync per group.
    pub async fn record_queued(&self, entry: Entry) -> Result<(), StoreError> {
        entry.log();
        self.store
            .queue_audit(&self.prepare(&entry))
            .await
            .inspect_err(|err| not_stored(&entry, err))
    }

    /// Waits until the events this instance queued are written: what is
    /// read of the trail afterwards holds them. Also called on shutdown.
    pub async fn flush(&self) {
        self.store.flush_audit().await;
    }

    /// One page of events matching `query`, newest first.
    pub async fn page(&self, query: &AuditQuery) -> Result<AuditPage, AuditError> {
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(AuditError::BadQuery("limit must be 1 to 1000"));
        }
        let before_id = match &query.cursor {
            Some(cursor) => Some(decode_cursor(cursor).ok_or(AuditError::BadQuery(
                "cursor is not one this server returned",
            ))?),
            None => None,
        };
        let mut filter = self.filter(query)?;
        filter.before_id = before_id;
        self.flush().await;
        // One more than asked tells whether there is a next page.
        let mut events = self.store.list_audit(&filter, limit + 1).await?;
        let more = events.len() > limit as usize;
        events.truncate(limit as usize);
        let next = more
            .then(|| events.last().map(|e| encode_cursor(e.id)))
            .flatten();
        Ok(AuditPage { events, next })
    }

    /// Events after id `after` (oldest first, at most [`MAX_LIMIT`]), for
    /// following the trail.
    pub async fn after(&self, after: i64, query: &AuditQuery) -> Result<Vec<AuditRow>, AuditError> {
        let mut filter = self.filter(query)?;
        filter.after_id = Some(after);
        Ok(self.store.list_audit(&filter, MAX_LIMIT).await?)
    }

    /// The newest event's id, 0 if none.
    pub async fn last_id(&self) -> Result<i64, AuditError> {
        Ok(self.store.last_audit_id().await?)
    }

    fn filter(&self, query: &AuditQuery) -> Result<AuditFilter, AuditError> {
        if let Some(event) = &query.event
            && event.parse::<Event>().is_err()
        {
            return Err(AuditError::BadQuery(
                "unknown event name (see docs/audit.md)",
            ));
        }
        if query.subject.as_ref().is_some_and(|s| s.is_empty()) {
            return Err(AuditError::BadQuery("subject must not be empty"));
        }
        if let (Some(since), Some(until)) = (query.since, query.until)
            && since > until
        {
            return Err(AuditError::BadQuery("since is after until"));
        }
        Ok(AuditFilter {
            event: query.event.clone(),
            subject: query.subject.clone(),
            since: query.since,
            until: query.until,
            before_id: None,
            after_id: None,
        })
    }

    /// Deletes events older than `retention`; returns how many.
    pub async fn prune(&self, retention: Duration) -> Result<u64, StoreError> {
        let keep = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
        let cutoff = self.clock.now().saturating_sub(keep);
        self.store.delete_audit_before(cutoff).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_forgeries() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        for bad in ["", "42", "YTo", "!!", &encode_cursor(0), &encode_cursor(-3)] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn times_are_unix_seconds_or_rfc3339() {
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(parse_time("2023-11-14T23:13:20+01:00"), Some(1_700_000_000));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn event_names_parse_back() {
        for event in Event::ALL {
            assert_eq!(event.as_str().parse::<Event>(), Ok(*event));
        }
        assert!("nope".parse::<Event>().is_err());
    }

    #[test]
    fn names_are_bounded() {
        let entry = Entry::new(Event::LoginFailed, &Actor::system(), &"x".repeat(5000));
        assert_eq!(entry.record_at(0).subject.chars().count(), MAX_NAME_CHARS);
    }
}
