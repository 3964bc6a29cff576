-- Login attempts per username, shared by every instance on this store, so N
-- instances together allow one name the policy's attempts per window, not
-- N times that. `name_key` is the hex SHA-256 of the salt below and the
-- lowercased name: never the name in clear. Within the window that began
-- at `window_start` (the window's first attempt), `failures` counts wrong
-- passwords and `pending` attempts counted but not yet settled; a new
-- attempt is admitted while failures + pending is below the limit. A
-- success zeroes `failures`; an attempt without a verdict leaves `pending`.
-- Rows whose window has ended refuse nothing and are pruned.
CREATE TABLE login_throttle (
    name_key     TEXT PRIMARY KEY,
    window_start INTEGER NOT NULL,
    failures     INTEGER NOT NULL,
    pending      INTEGER NOT NULL
);
CREATE INDEX login_throttle_window ON login_throttle (window_start);

-- The salt of `name_key`, random per store (made by the first instance that
-- needs it), so every instance computes the same keys and keys from one
-- deployment say nothing about another's. One row at most.
CREATE TABLE login_throttle_salt (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    salt       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
