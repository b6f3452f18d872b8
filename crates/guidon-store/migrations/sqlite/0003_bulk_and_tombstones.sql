-- A tombstone stays in `definitions` (deleted = 1) so a write learns the
-- key's last version from one row; snapshots skip tombstones.
ALTER TABLE definitions ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
INSERT INTO definitions (env, kind, key, version, revision, definition, deleted)
SELECT c.env, c.kind, c.key, c.version, c.revision, '', 1
FROM changes c
WHERE c.op = 'delete'
  AND c.revision = (SELECT MAX(c2.revision) FROM changes c2
                    WHERE c2.env = c.env AND c2.kind = c.kind AND c2.key = c.key)
  AND NOT EXISTS (SELECT 1 FROM definitions d
                  WHERE d.env = c.env AND d.kind = c.kind AND d.key = c.key);

-- A bulk replace commits several changes under one revision.
CREATE TABLE changes_new (
    env      TEXT NOT NULL REFERENCES environments(name),
    revision INTEGER NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('flag', 'segment')),
    key      TEXT NOT NULL,
    op       TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
    version  INTEGER NOT NULL,
    before   TEXT,
    after    TEXT,
    actor    TEXT NOT NULL,
    at       INTEGER NOT NULL,
    PRIMARY KEY (env, revision, kind, key)
);
INSERT INTO changes_new SELECT env, revision, kind, key, op, version, before, after, actor, at FROM changes;
DROP TABLE changes;
ALTER TABLE changes_new RENAME TO changes;
CREATE INDEX changes_by_key ON changes (env, kind, key, revision);
