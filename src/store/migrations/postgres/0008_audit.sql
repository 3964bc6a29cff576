-- The audit trail: one row per security event (see docs/audit.md). Never a
-- password, token, secret or key: `detail` is a short text built by the
-- server from non-secret facts. `id` only grows (a sequence: never
-- reused after pruning), so it orders events and is the paging cursor.
CREATE TABLE audit_events (
    id          BIGSERIAL PRIMARY KEY,
    occurred_at BIGINT NOT NULL,
    event       TEXT NOT NULL,
    actor       TEXT NOT NULL,
    subject     TEXT NOT NULL,
    client_ip   TEXT,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX audit_events_time ON audit_events (occurred_at);
CREATE INDEX audit_events_event ON audit_events (event, id);
CREATE INDEX audit_events_subject ON audit_events (subject, id);
