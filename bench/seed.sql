-- Bench catalogue: :plans plans (each its own project, user 1 a member of all),
-- each with one full run of :scenarios scenarios x 2 environments, and one big
-- plan (id :plans + 1) whose full run has 100 scenarios x 10 environments =
-- 1000 pairs. Scenario ids are plan * 1000 + n; environments 1..10.
-- Usage: psql -v plans=500 -v scenarios=15 -f bench/seed.sql
\set ON_ERROR_STOP on
BEGIN;
TRUNCATE users, projects, project_members, scenarios, environments, plans,
         plan_scenarios, plan_environments, executions, execution_pairs,
         dispatches, idempotency_keys CASCADE;
INSERT INTO users (id, username, active) VALUES (1, 'bench', true);
INSERT INTO environments (id, name, platform, version)
  SELECT e, 'Device ' || e, 'ANDROID', '14' FROM generate_series(1, 10) e;
INSERT INTO projects (id, name) SELECT p, 'Project ' || p FROM generate_series(1, :plans + 1) p;
INSERT INTO project_members (project_id, user_id) SELECT p, 1 FROM generate_series(1, :plans + 1) p;
INSERT INTO plans (id, project_id, name) SELECT p, p, 'Plan ' || p FROM generate_series(1, :plans + 1) p;
INSERT INTO scenarios (id, project_id, name)
  SELECT p * 1000 + s, p, 'Scenario ' || s || ' of plan ' || p
    FROM generate_series(1, :plans) p, generate_series(1, :scenarios) s
  UNION ALL
  SELECT (:plans + 1) * 1000 + s, :plans + 1, 'Scenario ' || s || ' of the big plan'
    FROM generate_series(1, 100) s;
INSERT INTO plan_scenarios (plan_id, scenario_id) SELECT project_id, id FROM scenarios;
INSERT INTO plan_environments (plan_id, environment_id)
  SELECT p, e FROM generate_series(1, :plans) p, generate_series(1, 2) e
  UNION ALL SELECT :plans + 1, e FROM generate_series(1, 10) e;
INSERT INTO executions (id, plan_id, kind, requested_by, requested_at, started_at, finished_at)
  SELECT p, p, 'RUN', 1, now() - interval '1 day', now() - interval '1 day', now() - interval '23 hours'
    FROM generate_series(1, :plans + 1) p;
SELECT setval('executions_id_seq', :plans + 1);
INSERT INTO execution_pairs (execution_id, scenario_id, environment_id, status, attempt)
  SELECT p, p * 1000 + s, e, 'FAILED', 1
    FROM generate_series(1, :plans) p, generate_series(1, :scenarios) s, generate_series(1, 2) e
  UNION ALL
  SELECT :plans + 1, (:plans + 1) * 1000 + s, e, 'FAILED', 1
    FROM generate_series(1, 100) s, generate_series(1, 10) e;
COMMIT;
VACUUM ANALYZE;
