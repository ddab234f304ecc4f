-- The relay claims the oldest due rows (ORDER BY id LIMIT n): an index in
-- that order finds them without reading and sorting the whole backlog, which
-- made a claim cost grow with the backlog (50 ms per batch of 500 with 100 k
-- rows pending; bench/BENCHMARKS.md).
CREATE INDEX dispatches_unpublished_id_idx ON dispatches (id) WHERE published_at IS NULL;
DROP INDEX dispatches_pending_idx;
