-- A check value of the master key (HMAC-SHA256 of a fixed label under it;
-- never the key), so a process holding another master key refuses to start
-- or write instead of sealing keys no one else can open. One row at most.

CREATE TABLE master_key_check (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    check_value TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
