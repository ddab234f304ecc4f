-- Published dispatch rows are deleted after OUTBOX_RETENTION_SECS, oldest
-- first: an index in that order finds them without reading the table.
CREATE INDEX dispatches_published_at_idx ON dispatches (published_at)
    WHERE published_at IS NOT NULL;
