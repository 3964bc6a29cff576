//! `GET /admin/audit`: the stored audit trail, newest first, with cursor
//! paging; and [`actor`], who the audit trail names for a request.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::types::Example;
use poem_openapi::{Object, OpenApi};

use super::auth::BearerAuth;
use super::{ApiError, ApiTags, HttpState};
use crate::audit::{Actor, AuditQuery, parse_time};
use crate::store::AuditRow;
use crate::token::AccessClaims;

/// The actor of a change made through the API: the caller's `sub` and
/// address.
pub(super) fn actor(state: &HttpState, claims: &AccessClaims, req: &Request) -> Actor {
    Actor::new(claims.sub.clone(), state.client_addr.of(req))
}

/// One security event.
#[derive(Debug, Object)]
#[oai(example)]
pub struct AuditEventView {
    /// Grows with every event.
    pub id: i64,
    /// When it happened.
    pub time: DateTime<Utc>,
    /// What happened (see docs/audit.md for the list).
    pub event: String,
    /// Who: a user id, a client id, `cli`, `scheduler`, `system`, or
    /// `anonymous`/`unknown` for unauthenticated requests.
    pub actor: String,
    /// What it was done to: a username, a client id or a key id.
    pub subject: String,
    /// The client's address, for events caused by a request.
    pub client_ip: Option<String>,
    /// `success`, `failure` or `refused`.
    pub outcome: String,
    /// A short description; never a password, token, secret or key.
    pub detail: String,
}

impl Example for AuditEventView {
    fn example() -> Self {
        Self {
            id: 4711,
            time: "2026-11-29T04:00:00Z"
                .parse()
                .expect("an RFC 3339 example time"),
            event: "user_created".into(),
            actor: "8a1f5c2e-3b7d-4e09-9c41-6f2d0e8b7a13".into(),
            subject: "alice".into(),
            client_ip: Some("203.0.113.7".into()),
            outcome: "success".into(),
            detail: "id=0b9e4d6a-2c51-4f7e-8d3a-1e6f5b9c2a47 roles=[reader]".into(),
        }
    }
}

impl From<AuditRow> for AuditEventView {
    fn from(row: AuditRow) -> Self {
        let r = row.record;
        Self {
            id: row.id,
            time: DateTime::from_timestamp(r.occurred_at, 0).unwrap_or_default(),
            event: r.event,
            actor: r.actor,
            subject: r.subject,
            client_ip: r.client_ip,
            outcome: r.outcome,
            detail: r.detail,
        }
    }
}

/// A page of events, newest first.
#[derive(Debug, Object)]
#[oai(example)]
pub struct AuditPageView {
    /// The events.
    pub events: Vec<AuditEventView>,
    /// Pass as `cursor` for the next (older) page; `null` on the last one.
    pub next: Option<String>,
}

impl Example for AuditPageView {
    fn example() -> Self {
        Self {
            events: vec![AuditEventView::example()],
            next: Some("YTo0NzEx".into()),
        }
    }
}

pub struct AuditApi {
    state: Arc<HttpState>,
}

impl AuditApi {
    pub fn new(state: Arc<HttpState>) -> Self {
        Self { state }
    }
}

fn time_param(name: &'static str, value: Option<String>) -> Result<Option<i64>, ApiError> {
    value
        .map(|text| {
            parse_time(&text).ok_or_else(|| {
                ApiError::invalid_request(format!(
                    "{name} must be Unix seconds or an RFC 3339 time"
                ))
            })
        })
        .transpose()
}

#[OpenApi(tag = "ApiTags::Admin")]
impl AuditApi {
    /// The audit trail: security events, newest first.
    ///
    /// Filter by `event` (a name from docs/audit.md, e.g. `login_failed`),
    /// `subject` (a username, client id or kid), and time: `since` and
    /// `until` (inclusive) take Unix seconds or RFC 3339
    /// (`2026-11-29T04:00:00Z`). `limit`: 1 to 1000, default 100. `next`
    /// in the answer is the `cursor` of the next, older page (`null` on
    /// the last); pages stay stable while new events arrive.
    #[oai(path = "/admin/audit", method = "get")]
    #[allow(clippy::too_many_arguments)]
    async fn audit(
        &self,
        auth: BearerAuth,
        /// Only this event, e.g. `login_failed`.
        event: Query<Option<String>>,
        /// Only this subject, e.g. `alice`.
        subject: Query<Option<String>>,
        /// At or after: Unix seconds or RFC 3339, e.g. `2026-11-29T00:00:00Z`.
        since: Query<Option<String>>,
        /// At or before: Unix seconds or RFC 3339.
        until: Query<Option<String>>,
        /// Page size, 1 to 1000 (default 100).
        limit: Query<Option<String>>,
        /// The `next` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<AuditPageView>, ApiError> {
        auth.admin(&self.state.tokens)?;
        // Numbers are parsed here, not by poem, so a bad one gets the same
        // 400 body as every other bad parameter.
        let limit = limit
            .0
            .map(|text| {
                text.parse::<u32>()
                    .map_err(|_| ApiError::invalid_request("limit must be 1 to 1000"))
            })
            .transpose()?;
        let query = AuditQuery {
            event: event.0,
            subject: subject.0,
            since: time_param("since", since.0)?,
            until: time_param("until", until.0)?,
            limit,
            cursor: cursor.0,
        };
        let page = self.state.audit.page(&query).await?;
        Ok(Json(AuditPageView {
            events: page.events.into_iter().map(Into::into).collect(),
            next: page.next,
        }))
    }
}
