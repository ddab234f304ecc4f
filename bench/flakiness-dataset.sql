-- A long history for GET /plans/{planId}/flakiness (contract, section 19), on
-- top of fixtures/demo.json: plan 614 gets 100 full runs of 1 000 pairs
-- (scenarios 10000-10499 on environments 222 and 223), each with two
-- reruns: attempt 2 of the 200 pairs that failed first (every fifth), then
-- attempt 3 of the 50 of those that failed again (every twentieth), which
-- pass. 125 000 pairs in all; 150 flaky pairs per run. Used by
-- bench/flakiness.sh (bench/BENCHMARKS.md, "Flakiness over time"). Run on a
-- migrated, seeded database:
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f bench/flakiness-dataset.sql
BEGIN;
INSERT INTO scenarios (id, project_id, name)
SELECT g, 7, 'Generated scenario ' || g FROM generate_series(10000, 10499) g
ON CONFLICT DO NOTHING;

-- run r is execution 40000 + 3r, its reruns 40000 + 3r + 1 and + 2
INSERT INTO executions (id, plan_id, kind, source_execution_id, requested_by, framework_type,
                        requested_at, started_at, finished_at, open_pairs, trigger, retry_of)
SELECT 40000 + 3 * r + a, 614, CASE WHEN a = 0 THEN 'RUN' ELSE 'RERUN' END,
       CASE WHEN a = 0 THEN NULL ELSE 40000 + 3 * r END, 13, 'APPIUM',
       timestamptz '2026-12-01T00:00:00Z' + r * interval '1 day' + a * interval '1 hour',
       timestamptz '2026-12-01T00:01:00Z' + r * interval '1 day' + a * interval '1 hour',
       timestamptz '2026-12-01T00:30:00Z' + r * interval '1 day' + a * interval '1 hour', 0,
       CASE WHEN a = 0 THEN 'USER' ELSE 'RETRY' END,
       CASE WHEN a = 0 THEN NULL ELSE 40000 + 3 * r + a - 1 END
  FROM generate_series(0, 99) r, generate_series(0, 2) a;

INSERT INTO execution_pairs (execution_id, scenario_id, environment_id, status, attempt,
                             source_execution_id, started_at, finished_at)
SELECT 40000 + 3 * r + a - 1, s, e,
       CASE WHEN a = 1 AND (s + e + r) % 5 = 0 THEN 'FAILED'
            WHEN a = 2 AND (s + e + r) % 20 = 0 THEN 'ERROR'
            ELSE 'PASSED' END,
       a, 40000 + 3 * r,
       timestamptz '2026-12-01T00:01:00Z' + r * interval '1 day' + a * interval '1 hour',
       timestamptz '2026-12-01T00:02:00Z' + r * interval '1 day' + a * interval '1 hour'
  FROM generate_series(0, 99) r, generate_series(10000, 10499) s, generate_series(222, 223) e,
       generate_series(1, 3) a
 WHERE a = 1 OR (a = 2 AND (s + e + r) % 5 = 0) OR (a = 3 AND (s + e + r) % 20 = 0);
COMMIT;
ANALYZE executions;
ANALYZE execution_pairs;
