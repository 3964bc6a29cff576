-- Per-client-id token cutoff: tokens of a client id issued at or before
-- `tokens_valid_after` (Unix seconds) are refused. Set when the client's
-- secret is rotated and when the client is deleted; a separate table, so the
-- cutoff outlives a deleted client and a re-registered id cannot revive the
-- old client's tokens.
CREATE TABLE client_cutoffs (
    client_id          TEXT PRIMARY KEY,
    tokens_valid_after BIGINT NOT NULL
);
