-- Planned changes: a change to a flag staged now and applied later, once,
-- when it is due (a schedule). Applying one is an ordinary write whose
-- transaction also marks the row applied, so that of several instances
-- racing for it exactly one writes it, and a crash leaves it pending.
CREATE TABLE planned_changes (
    id INTEGER PRIMARY KEY,
    env              TEXT NOT NULL REFERENCES environments(name) ON DELETE CASCADE,
    key              TEXT NOT NULL,
    -- {"patch": {...}} (a JSON merge patch), {"flag": {...}} or {"delete": true}
    change           TEXT NOT NULL,
    -- the version a whole replacement or a delete was made against
    base_version     INTEGER,
    due_at           INTEGER NOT NULL,
    time_zone        TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'applied', 'cancelled', 'failed')),
    created_by       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    finished_by      TEXT,
    applied_revision INTEGER,
    late_ms          INTEGER,
    error            TEXT
);
CREATE INDEX planned_changes_due ON planned_changes (status, due_at);
CREATE INDEX planned_changes_env ON planned_changes (env, id);
