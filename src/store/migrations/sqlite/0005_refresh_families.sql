-- Refresh sessions: one row per family (one login and every token rotated
-- from it). Rotation and family revocation both lock this row first, so on
-- PostgreSQL a refresh can never slip a child past a revocation.
CREATE TABLE refresh_families (
    family_id  TEXT PRIMARY KEY,
    user_id    TEXT,
    -- The login; the family ends at created_at + KEYTURN_REFRESH_ABSOLUTE_TTL
    -- however often it is refreshed.
    created_at INTEGER NOT NULL,
    -- Expiry of its newest refresh token: once past, nothing in it is live.
    last_expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX refresh_families_user ON refresh_families (user_id);

INSERT INTO refresh_families (family_id, user_id, created_at, last_expires_at, revoked_at)
SELECT family_id, MIN(user_id), MIN(issued_at), MAX(expires_at), NULL
FROM refresh_tokens GROUP BY family_id;

-- The `exp` of the access token issued with each refresh token, so its
-- revocation lasts exactly as long as the token (older rows: unknown).
ALTER TABLE refresh_tokens ADD COLUMN access_expires_at INTEGER;
