-- Two more token roles: `client` (evaluate one environment, read no
-- definition) and `metrics` (/metrics only).
ALTER TABLE tokens DROP CONSTRAINT tokens_role_check;
ALTER TABLE tokens ADD CONSTRAINT tokens_role_check
    CHECK (role IN ('admin', 'sdk', 'client', 'metrics'));
