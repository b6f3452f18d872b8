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
ALTER TABLE changes DROP CONSTRAINT changes_pkey;
ALTER TABLE changes ADD PRIMARY KEY (env, revision, kind, key);
