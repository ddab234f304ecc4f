CREATE INDEX dispatches_pending_idx ON dispatches (next_attempt_at, id) WHERE published_at IS NULL;
DROP INDEX dispatches_unpublished_id_idx;
