-- bench/catalog.sh: every plan back on body A (scenarios 1-1000,
-- environments 1-20) at version 1, dead rows of the last phase vacuumed.
UPDATE plans SET catalog_version = 1, name = 'Plan ' || id, active = true;
DELETE FROM plan_scenarios;
DELETE FROM plan_environments;
INSERT INTO plan_scenarios (plan_id, scenario_id)
SELECT p.id, s FROM plans p, generate_series(1, 1000) s;
INSERT INTO plan_environments (plan_id, environment_id)
SELECT p.id, e FROM plans p, generate_series(1, 20) e;
VACUUM ANALYZE plans, plan_scenarios, plan_environments;
