-- A large history for the read endpoints (contract, section 11), on top of
-- fixtures/demo.json: plan 614 gets a full run 20000 of 1 000 pairs with 49
-- reruns of all of them (50 attempts per pair, each pair with its dispatch),
-- and 10 000 more reruns of 2 pairs each (ids 30000-39999); 50 other plans
-- get 1 000 executions each. Used for EXPLAIN (bench/BENCHMARKS.md, "Reads")
-- and the read latency benchmark. Run on a migrated, seeded database:
--   psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f bench/reads-dataset.sql
BEGIN;
INSERT INTO scenarios (id, project_id, name)
SELECT g, 7, 'Generated scenario ' || g FROM generate_series(10000, 10999) g;

-- the source run and its 49 reruns, 1 000 pairs each, one hour apart
INSERT INTO executions (id, plan_id, kind, source_execution_id, requested_by, framework_type,
                        requested_at, started_at, finished_at, open_pairs)
SELECT 20000 + a, 614, CASE WHEN a = 0 THEN 'RUN' ELSE 'RERUN' END,
       CASE WHEN a = 0 THEN NULL ELSE 20000 END, 13, 'APPIUM',
       timestamptz '2026-12-01T00:00:00Z' + a * interval '1 hour',
       timestamptz '2026-12-01T00:01:00Z' + a * interval '1 hour',
       timestamptz '2026-12-01T00:30:00Z' + a * interval '1 hour', 0
  FROM generate_series(0, 49) a;
INSERT INTO execution_pairs (execution_id, scenario_id, environment_id, status, attempt,
                             source_execution_id, message_id, started_at, finished_at,
                             duration_ms, report_url, detail)
SELECT 20000 + a, s, 222,
       (ARRAY['FAILED', 'ERROR', 'PASSED', 'ABORTED', 'SKIPPED'])[1 + (s + a) % 5],
       a + 1, 20000, md5(a || '-' || s)::uuid,
       timestamptz '2026-12-01T00:01:00Z' + a * interval '1 hour',
       timestamptz '2026-12-01T00:02:00Z' + a * interval '1 hour',
       60000, 'https://reports.example/' || (20000 + a) || '/' || s || '/222',
       'generated result ' || s
  FROM generate_series(0, 49) a, generate_series(10000, 10999) s;
INSERT INTO dispatches (message_id, execution_id, routing_key, body, message_type, published_at)
SELECT p.message_id, p.execution_id, 'APPIUM', '{}', 'scenario.rerun', p.started_at
  FROM execution_pairs p WHERE p.execution_id BETWEEN 20000 AND 20049;

-- 10 000 more reruns of plan 614 (of its old run 4980), two pairs each
INSERT INTO executions (id, plan_id, kind, source_execution_id, requested_by, framework_type,
                        requested_at, open_pairs)
SELECT 30000 + g, 614, 'RERUN', 4980, 13, 'APPIUM',
       timestamptz '2026-11-28T00:00:00Z' + (g / 4) * interval '1 minute', 0
  FROM generate_series(0, 9999) g;
INSERT INTO execution_pairs (execution_id, scenario_id, environment_id, status, attempt,
                             source_execution_id)
SELECT 30000 + g, v.s, v.e, 'PASSED', 2 + g, 4980
  FROM generate_series(0, 9999) g, (VALUES (111, 222), (112, 223)) v(s, e);

-- 50 other plans of project 8 with 1 000 runs of one pair each
INSERT INTO plans (id, project_id, name)
SELECT 1000 + p, 8, 'Generated plan ' || p FROM generate_series(1, 50) p;
INSERT INTO executions (id, plan_id, kind, requested_by, framework_type, requested_at,
                        open_pairs)
SELECT 100000 + p * 1000 + g, 1000 + p, 'RUN', 55, 'SELENIUM',
       timestamptz '2026-11-01T00:00:00Z' + g * interval '10 minutes', 0
  FROM generate_series(1, 50) p, generate_series(0, 999) g;
INSERT INTO execution_pairs (execution_id, scenario_id, environment_id, status, attempt)
SELECT x.id, 201, 301, 'PASSED', 1 FROM executions x WHERE x.id >= 100000;
SELECT setval('executions_id_seq', (SELECT max(id) FROM executions));
COMMIT;
ANALYZE;
