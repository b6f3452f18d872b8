-- Experiments. Events are kept only as far as results need them: every
-- event's id (a retried batch counts once), per unit the first exposure to
-- each flag, per unit and metric the conversions' totals and time span, and
-- each conversion's time and value (read only for units whose conversions
-- straddle their first exposure or the end of a conversion window).

-- Small integer ids for an environment (kind 'env'), its flags and its
-- metrics (one per metric and unit attribute), so the big tables repeat an
-- integer instead of names. Deleting the environment deletes everything.
CREATE TABLE exp_keys (
    id   INTEGER PRIMARY KEY,
    env  TEXT NOT NULL REFERENCES environments(name) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('env', 'flag', 'metric')),
    key  TEXT NOT NULL,
    attr TEXT NOT NULL,
    UNIQUE (env, kind, key, attr)
);

-- Every event seen, per environment, by its time and id: a retry resends
-- both, and keyed by time first the index grows at its end as events come
-- in (an id alone, random, would dirty a page of the index per event).
CREATE TABLE exp_events (
    scope    INTEGER NOT NULL REFERENCES exp_keys(id) ON DELETE CASCADE,
    at       INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (scope, at, event_id)
) WITHOUT ROWID;

-- Per flag and unit: the first exposure (time and variant), and whether the
-- unit was exposed to more than one variant.
CREATE TABLE exp_exposures (
    flag     INTEGER NOT NULL REFERENCES exp_keys(id) ON DELETE CASCADE,
    unit     TEXT NOT NULL,
    variant  TEXT NOT NULL,
    first_at INTEGER NOT NULL,
    multiple INTEGER NOT NULL,
    PRIMARY KEY (flag, unit)
) WITHOUT ROWID;

-- Per metric and unit: how many conversions, the sum of their values, the
-- first and the last conversion time.
CREATE TABLE exp_unit_metrics (
    metric      INTEGER NOT NULL REFERENCES exp_keys(id) ON DELETE CASCADE,
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
CREATE TABLE exp_conversions (
    metric INTEGER NOT NULL REFERENCES exp_keys(id) ON DELETE CASCADE,
    unit   TEXT NOT NULL,
    at     INTEGER NOT NULL,
    event  INTEGER NOT NULL,
    value  REAL NOT NULL,
    PRIMARY KEY (metric, unit, at, event)
) WITHOUT ROWID;
