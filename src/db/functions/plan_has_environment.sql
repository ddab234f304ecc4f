-- plan_has_environment: whether a plan runs on an environment: it is in the
-- plan's list and active (contract, section 20; see plan_has_scenario).
CREATE OR REPLACE FUNCTION plan_has_environment(p_plan_id BIGINT, p_environment_id BIGINT)
RETURNS BOOLEAN LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM plan_environments pe
                     JOIN environments en ON en.id = pe.environment_id
                    WHERE pe.plan_id = p_plan_id AND pe.environment_id = p_environment_id
                      AND en.active)
$$;
