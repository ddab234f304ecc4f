-- plan_active_environments: the environments a plan runs on: those in the
-- plan's list that are active (contract, section 20; see
-- plan_active_scenarios, inlined the same way). It replaces
-- plan_has_environment.
DROP FUNCTION IF EXISTS plan_has_environment(BIGINT, BIGINT);
CREATE OR REPLACE FUNCTION plan_active_environments(p_plan_id BIGINT)
RETURNS TABLE (environment_id BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT pe.environment_id FROM plan_environments pe
      JOIN environments en ON en.id = pe.environment_id
     WHERE pe.plan_id = p_plan_id AND en.active
$$;
