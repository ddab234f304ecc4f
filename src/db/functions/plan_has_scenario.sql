-- plan_has_scenario: whether a plan runs a scenario: it is in the plan's list
-- and active (contract, section 20: a retired scenario, or one that left the
-- plan, is not run, and naming it in a run's subset or a rerun is 1019). An
-- SQL function, inlined where it is called.
CREATE OR REPLACE FUNCTION plan_has_scenario(p_plan_id BIGINT, p_scenario_id BIGINT)
RETURNS BOOLEAN LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM plan_scenarios ps
                     JOIN scenarios sc ON sc.id = ps.scenario_id
                    WHERE ps.plan_id = p_plan_id AND ps.scenario_id = p_scenario_id
                      AND sc.active)
$$;
