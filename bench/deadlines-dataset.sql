-- The deadline benchmarks' plan (bench/deadlines.sh), on top of
-- fixtures/demo.json: plan 9000 of project 7, 50 scenarios x 20
-- environments = 1000 pairs, framework type JUNIT (no runner: its pairs
-- stay QUEUED until their queue deadline).
\set ON_ERROR_STOP on
BEGIN;
INSERT INTO scenarios (id, project_id, name)
SELECT 90000 + s, 7, 'Deadline scenario ' || s FROM generate_series(1, 50) s;
INSERT INTO environments (id, name, platform, version)
SELECT 90000 + e, 'Deadline device ' || e, 'ANDROID', '14' FROM generate_series(1, 20) e;
INSERT INTO plans (id, project_id, name, framework_type)
VALUES (9000, 7, 'Deadline benchmark (1000 pairs)', 'JUNIT');
INSERT INTO plan_scenarios (plan_id, scenario_id) SELECT 9000, 90000 + s FROM generate_series(1, 50) s;
INSERT INTO plan_environments (plan_id, environment_id)
SELECT 9000, 90000 + e FROM generate_series(1, 20) e;
COMMIT;
