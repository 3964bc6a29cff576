-- OAuth 2.0: registered clients and the access-token revocation list.
-- Timestamps are Unix seconds (UTC); lists are JSON arrays of strings.

CREATE TABLE clients (
    client_id   TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    grant_types TEXT NOT NULL,
    audience    TEXT,
    created_at  BIGINT NOT NULL
);

-- Revoked access tokens, kept until they would have expired anyway.
CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL
);
CREATE INDEX revoked_tokens_expires ON revoked_tokens (expires_at);

-- Logout finds the refresh family of an access token by its jti.
CREATE INDEX refresh_tokens_access_jti ON refresh_tokens (access_jti);
CREATE INDEX refresh_tokens_client ON refresh_tokens (client_id);

INSERT INTO versions (name, version) VALUES ('revocations', 0), ('clients', 0);
