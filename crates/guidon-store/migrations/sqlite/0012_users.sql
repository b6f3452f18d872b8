-- People (the console's accounts) and their sessions. A password is kept
-- only as its argon2id PHC string; a session only as the SHA-256 of the
-- cookie's secret. `roles` is JSON: environment (or "*") -> role.
CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    last_login_at INTEGER
);
CREATE TABLE sessions (
    id_hash    TEXT PRIMARY KEY,
    user_name  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_name);
CREATE INDEX sessions_expiry ON sessions (expires_at);
