DROP FUNCTION queue_run;
DROP FUNCTION queue_rerun;
DROP FUNCTION written_by_call;
DROP FUNCTION plan_access;
CREATE INDEX dispatches_unpublished_id_idx ON dispatches (id) WHERE published_at IS NULL;
DROP INDEX dispatches_unpublished_exchange_idx;
ALTER TABLE dispatches DROP COLUMN exchange;
