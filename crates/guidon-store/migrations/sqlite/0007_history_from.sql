-- The oldest revision of each environment whose state and author the change
-- log still holds (0: all of them, back to the empty environment). Raised by
-- Store::compact_history, which deletes the log's rows below it; the state at
-- a revision is rebuilt from the current definitions by undoing the changes
-- after it, so nothing below this is needed for the revisions above.
ALTER TABLE environments ADD COLUMN history_from INTEGER NOT NULL DEFAULT 0;
