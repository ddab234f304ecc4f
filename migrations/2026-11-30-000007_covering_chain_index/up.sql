-- The consolidated results of a plan (GET /plans/{planId}/results) read
-- every attempt of every pair of the source run's chain: 50 000 rows for
-- 1 000 pairs x 50 attempts. Through execution_pairs_chain_idx each row cost
-- a heap fetch, so PostgreSQL preferred a sequential scan and an on-disk
-- sort (110 ms on the dataset of bench/reads-dataset.sql). With the
-- execution and status in the index it is an index-only scan in index order
-- (14 ms; 42 ms right after every row was updated). Same name and key: the
-- rerun's attempt lookup is unchanged (and now index-only too).
DROP INDEX execution_pairs_chain_idx;
CREATE INDEX execution_pairs_chain_idx
    ON execution_pairs (source_execution_id, scenario_id, environment_id, attempt DESC)
    INCLUDE (execution_id, status);
