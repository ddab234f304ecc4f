-- plan_active_scenarios: the scenarios a plan runs: those in the plan's list
-- that are active (contract, section 20: a retired scenario, or one that
-- left the plan, is not run, and naming it in a run's subset or a rerun is
-- 1019). The one definition of the rule, used by queue_run and queue_rerun.
--
-- LANGUAGE sql, STABLE, not STRICT and a set (as source_run): PostgreSQL
-- inlines it where it is called in FROM, also inside a sublink, so the
-- caller's plan probes plan_scenarios' primary key and scenarios' like any
-- join. It replaces plan_has_scenario, a scalar function whose body was an
-- EXISTS sublink: PostgreSQL cannot inline that, and planned its body again
-- in every statement that called it (issue 22: 6.5 µs a call).
DROP FUNCTION IF EXISTS plan_has_scenario(BIGINT, BIGINT);
CREATE OR REPLACE FUNCTION plan_active_scenarios(p_plan_id BIGINT)
RETURNS TABLE (scenario_id BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT ps.scenario_id FROM plan_scenarios ps
      JOIN scenarios sc ON sc.id = ps.scenario_id
     WHERE ps.plan_id = p_plan_id AND sc.active
$$;
