-- Issue 10's dataset, on top of bench/seed.sql: :reruns reruns of the big
-- plan's full run (execution :plans + 1, 100 scenarios x 10 environments =
-- 1000 pairs), ids 1000001.., attempts 2..:reruns + 1, every pair QUEUED with
-- a message id (md5('r-' || n)::uuid for pair n = 1.., 1000 per rerun, in
-- execution, scenario, environment order) and its published dispatch row.
-- Result ingestion applies a result to each (bench/results.rs); afterwards
-- the big plan's chain is 1000 pairs x (:reruns + 1) attempts, the history
-- the read latency is measured on.
-- Usage: psql -v plans=500 -v reruns=49 -f bench/loop-dataset.sql
\set ON_ERROR_STOP on
BEGIN;
INSERT INTO executions (id, plan_id, kind, source_execution_id, requested_by, framework_type,
                        requested_at, open_pairs)
SELECT 1000000 + a, :plans + 1, 'RERUN', :plans + 1, 1, 'APPIUM',
       now() - interval '1 hour' + a * interval '1 second', 1000
  FROM generate_series(1, :reruns) a;
INSERT INTO execution_pairs (execution_id, scenario_id, environment_id, status, attempt,
                             message_id)
SELECT 1000000 + a, (:plans + 1) * 1000 + s, e, 'QUEUED', a + 1,
       md5('r-' || ((a - 1) * 1000 + (s - 1) * 10 + e))::uuid
  FROM generate_series(1, :reruns) a, generate_series(1, 100) s, generate_series(1, 10) e;
INSERT INTO dispatches (message_id, execution_id, routing_key, body, message_type, published_at)
SELECT message_id, execution_id, 'APPIUM', '{}', 'scenario.rerun', now()
  FROM execution_pairs WHERE execution_id > 1000000;
COMMIT;
VACUUM ANALYZE executions, execution_pairs, dispatches;
