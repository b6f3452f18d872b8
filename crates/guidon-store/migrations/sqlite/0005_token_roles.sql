-- Two more token roles: `client` (evaluate one environment, read no
-- definition) and `metrics` (/metrics only). SQLite cannot change a CHECK
-- constraint in place: the table is rebuilt with the same rows.
CREATE TABLE tokens_new (
    name         TEXT PRIMARY KEY,
    secret_hash  TEXT NOT NULL UNIQUE,
    role         TEXT NOT NULL CHECK (role IN ('admin', 'sdk', 'client', 'metrics')),
    env          TEXT,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
INSERT INTO tokens_new (name, secret_hash, role, env, created_at, last_used_at, revoked_at)
    SELECT name, secret_hash, role, env, created_at, last_used_at, revoked_at FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_new RENAME TO tokens;
