-- Environments carry the one revision counter of their flags and segments.
CREATE TABLE environments (
    name       TEXT PRIMARY KEY,
    revision   BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

-- The current definition of every live flag and segment.
CREATE TABLE definitions (
    env        TEXT NOT NULL REFERENCES environments(name),
    kind       TEXT NOT NULL CHECK (kind IN ('flag', 'segment')),
    key        TEXT NOT NULL,
    version    BIGINT NOT NULL,
    revision   BIGINT NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (env, kind, key)
);

-- Every committed change, in revision order: history, audit and catch-up.
-- A delete is a row with op 'delete' (the tombstone) and no `after`.
CREATE TABLE changes (
    env      TEXT NOT NULL REFERENCES environments(name),
    revision BIGINT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('flag', 'segment')),
    key      TEXT NOT NULL,
    op       TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
    version  BIGINT NOT NULL,
    before   TEXT,
    after    TEXT,
    actor    TEXT NOT NULL,
    at       BIGINT NOT NULL,
    PRIMARY KEY (env, revision)
);
CREATE INDEX changes_by_key ON changes (env, kind, key, revision);
