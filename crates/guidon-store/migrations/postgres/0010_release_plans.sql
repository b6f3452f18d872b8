-- Release plans (guarded rollouts): one per flag. The plan and its state
-- are JSON the server reads (guidon_release); the status column lets the
-- executor find the running ones; the version makes every step a
-- compare-and-set, taken in the same transaction as the flag's write.
CREATE TABLE release_plans (
    env        TEXT NOT NULL REFERENCES environments(name) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    plan       TEXT NOT NULL,
    state      TEXT NOT NULL,
    status     TEXT NOT NULL,
    decisions  TEXT NOT NULL,
    version    BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (env, key)
);
CREATE INDEX release_plans_status ON release_plans (status);
