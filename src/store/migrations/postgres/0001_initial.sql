-- Timestamps are Unix seconds (UTC). Booleans are 0/1 integers, so the same
-- queries run on SQLite and PostgreSQL through sqlx's Any driver.

CREATE TABLE keys (
    kid            TEXT PRIMARY KEY,
    alg            TEXT NOT NULL,
    state          TEXT NOT NULL,
    public_jwk     TEXT NOT NULL,
    sealed_private BYTEA,
    created_at     BIGINT NOT NULL,
    published_at   BIGINT NOT NULL,
    activated_at   BIGINT,
    retired_at     BIGINT,
    revoked_at     BIGINT
);

-- One counter per data set that running servers mirror in memory; every
-- change bumps it, and servers poll the counters to know when to reload.
CREATE TABLE versions (
    name    TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO versions (name, version) VALUES ('keys', 0), ('users', 0);

CREATE TABLE users (
    id                 TEXT PRIMARY KEY,
    username           TEXT NOT NULL UNIQUE,
    password_hash      TEXT NOT NULL,
    roles              TEXT NOT NULL,
    disabled           BIGINT NOT NULL DEFAULT 0,
    tokens_valid_after BIGINT NOT NULL DEFAULT 0,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id  TEXT NOT NULL,
    user_id    TEXT,
    client_id  TEXT NOT NULL,
    scope      TEXT NOT NULL,
    access_jti TEXT NOT NULL,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
