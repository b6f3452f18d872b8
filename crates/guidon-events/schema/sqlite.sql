-- The event store's schema (its own database file, next to the flag
-- store's). Every statement is idempotent: it runs at each open.

-- Small integer ids for an environment (kind 'env'), its flags and its
-- metrics (one per metric and unit attribute), so the big tables repeat an
-- integer instead of names.
CREATE TABLE IF NOT EXISTS ev_keys (
    id   INTEGER PRIMARY KEY,
    env  TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('env', 'flag', 'metric')),
    key  TEXT NOT NULL,
    attr TEXT NOT NULL,
    UNIQUE (env, kind, key, attr)
);

-- Every event seen, per environment, by its time and id: a retry resends
-- both, and keyed by time first the index grows at its end as events come
-- in (an id alone, random, would dirty a page of the index per event).
CREATE TABLE IF NOT EXISTS ev_seen (
    scope    INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (scope, at, event_id)
) WITHOUT ROWID;

-- Acknowledged events not yet folded into the per-unit tables, in the
-- order they were stored: one row per exposure, one per conversion and
-- unit attribute. Appended at its end by ingestion; a fold deletes the
-- rows it folds in the transaction that folds them.
-- kind: 0 exposure (key: the flag's id), 1 conversion (key: the metric's).
CREATE TABLE IF NOT EXISTS ev_log (
    id      INTEGER PRIMARY KEY,
    kind    INTEGER NOT NULL,
    key     INTEGER NOT NULL,
    unit    TEXT NOT NULL,
    variant TEXT NOT NULL,
    at      INTEGER NOT NULL,
    event   INTEGER NOT NULL,
    value   REAL NOT NULL
);

-- Per flag and unit: the first exposure (time and variant), and whether the
-- unit was exposed to more than one variant.
CREATE TABLE IF NOT EXISTS ev_exposures (
    flag     INTEGER NOT NULL,
    unit     TEXT NOT NULL,
    variant  TEXT NOT NULL,
    first_at INTEGER NOT NULL,
    multiple INTEGER NOT NULL,
    PRIMARY KEY (flag, unit)
) WITHOUT ROWID;

-- Per metric and unit: how many conversions, the sum of their values, the
-- first and the last conversion time.
CREATE TABLE IF NOT EXISTS ev_unit_metrics (
    metric      INTEGER NOT NULL,
    unit        TEXT NOT NULL,
    conversions INTEGER NOT NULL,
    total       REAL NOT NULL,
    first_at    INTEGER NOT NULL,
    last_at     INTEGER NOT NULL,
    PRIMARY KEY (metric, unit)
) WITHOUT ROWID;

-- Every conversion, by metric, unit and time (`event` is a 64-bit hash of
-- the event id: it only tells apart conversions of one unit in one
-- millisecond, and is much smaller than the id).
CREATE TABLE IF NOT EXISTS ev_conversions (
    metric INTEGER NOT NULL,
    unit   TEXT NOT NULL,
    at     INTEGER NOT NULL,
    event  INTEGER NOT NULL,
    value  REAL NOT NULL,
    PRIMARY KEY (metric, unit, at, event)
) WITHOUT ROWID;
