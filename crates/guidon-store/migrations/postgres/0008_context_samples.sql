-- Recent contexts, for environments that opt in (docs/recent-contexts.md):
-- a bounded sample of the contexts evaluated, kept with the events, not
-- with the flags. Attributes listed in drop_attrs are never stored; those
-- in hash_attrs are stored as a keyed hash (HMAC-SHA-256 with hash_key).
CREATE TABLE ctx_settings (
    env          TEXT PRIMARY KEY REFERENCES environments(name) ON DELETE CASCADE,
    size         BIGINT NOT NULL,
    retention_ms BIGINT NOT NULL,
    drop_attrs   TEXT NOT NULL,
    hash_attrs   TEXT NOT NULL,
    hash_key     TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);

-- Per hour (its start, ms): how many contexts were offered to the sample.
CREATE TABLE ctx_slices (
    env   TEXT NOT NULL REFERENCES environments(name) ON DELETE CASCADE,
    slice BIGINT NOT NULL,
    seen  BIGINT NOT NULL,
    PRIMARY KEY (env, slice)
);

-- Per hour, the offered contexts of highest random priority, at most the
-- sample's size: a uniform sample of that hour.
CREATE TABLE ctx_samples (
    env      TEXT NOT NULL REFERENCES environments(name) ON DELETE CASCADE,
    slice    BIGINT NOT NULL,
    priority BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    context  TEXT NOT NULL,
    PRIMARY KEY (env, slice, priority)
);
