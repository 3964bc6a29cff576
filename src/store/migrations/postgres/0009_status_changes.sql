-- The status change log: every change that makes an issued access token
-- unacceptable before its `exp`, in commit order. Running servers keep only
-- what changed within the last access-token lifetime in memory and read the
-- log incrementally (rows after the `status` version they hold), so a change
-- costs the same however many users, clients or tokens the store holds.
--   kind 'user':   tokens of user `subject` issued at or before `at` are refused
--   kind 'client': tokens of client `subject` issued at or before `at` are refused
--   kind 'jti':    the access token `subject` is revoked; `at` is its `exp`
-- `until`: after it the entry refuses nothing that is not expired anyway
-- (the writer's access-token lifetime and leeway past `at`), so it can go.
-- `version` is the `status` row of `versions` after the writer bumped it,
-- under that row's lock, so versions are unique and commit in order.
CREATE TABLE status_changes (
    version BIGINT PRIMARY KEY,
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,
    at      BIGINT NOT NULL,
    until   BIGINT NOT NULL
);
CREATE INDEX status_changes_until ON status_changes (until);

-- What the old tables hold that can still refuse a live token. Their rows
-- carry no lifetime: a cutoff is kept a day (the default access-token
-- lifetime is 15 minutes), a revoked jti five minutes past its `exp`.
INSERT INTO status_changes (version, kind, subject, at, until)
SELECT ROW_NUMBER() OVER (ORDER BY kind, subject), kind, subject, at,
       CASE WHEN kind = 'jti' THEN at + 300 ELSE at + 86400 END FROM (
    SELECT 'jti' AS kind, jti AS subject, expires_at AS at FROM revoked_tokens
    UNION ALL
    SELECT 'user', id, tokens_valid_after FROM users WHERE tokens_valid_after > 0
    UNION ALL
    SELECT 'client', client_id, tokens_valid_after FROM client_cutoffs WHERE tokens_valid_after > 0
) AS live;
INSERT INTO versions (name, version) SELECT 'status', COUNT(*) FROM status_changes;

-- Revoked jtis now live in the log alone.
DROP TABLE revoked_tokens;
