-- The metric catalogue and experiments of an environment: definitions
-- (JSON, checked by the server), versioned so that a change can name the
-- version it replaces. Deleting the environment deletes them.
CREATE TABLE exp_definitions (
    env        TEXT NOT NULL REFERENCES environments(name) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('metric', 'experiment')),
    key        TEXT NOT NULL,
    body       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (env, kind, key)
);
