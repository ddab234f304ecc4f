-- :executions executions of plan 9000 (bench/deadlines-dataset.sql), 1000
-- pairs each, requested now (their deadlines a day and two hours away):
-- 9 in 10 pairs QUEUED, 1 in 10 RUNNING since now. Ids from 2000001.
\set ON_ERROR_STOP on
BEGIN;
INSERT INTO executions (id, plan_id, kind, source_execution_id, requested_by, framework_type,
                        requested_at, started_at, open_pairs)
SELECT 2000000 + a, 9000, 'RUN', NULL, 13, 'JUNIT', now(), now(), 1000
  FROM generate_series(1, :executions) a;
INSERT INTO execution_pairs (execution_id, scenario_id, environment_id, status, attempt,
                             source_execution_id, message_id, started_at)
SELECT 2000000 + a, 90000 + s, 90000 + e, CASE WHEN e <= 2 THEN 'RUNNING' ELSE 'QUEUED' END, 1,
       2000000 + a, gen_random_uuid(), CASE WHEN e <= 2 THEN now() END
  FROM generate_series(1, :executions) a, generate_series(1, 50) s, generate_series(1, 20) e;
COMMIT;
VACUUM ANALYZE executions, execution_pairs;
