-- the functions may have been created by this migration's first text or
-- by src/db/functions.rs
DROP FUNCTION IF EXISTS queue_run;
DROP FUNCTION IF EXISTS queue_rerun;
DROP FUNCTION IF EXISTS written_by_call;
DROP FUNCTION IF EXISTS plan_access;
CREATE INDEX dispatches_unpublished_id_idx ON dispatches (id) WHERE published_at IS NULL;
DROP INDEX dispatches_unpublished_exchange_idx;
ALTER TABLE dispatches DROP COLUMN exchange;
