-- source_run: the plan's source run, its most recent full run (contract,
-- section 1): no row when the plan never ran. The one definition of the
-- rule, used by queue_rerun, queue_run and the reads (src/db/reads.rs).
--
-- LANGUAGE sql, STABLE, not STRICT and a set: PostgreSQL inlines it where it
-- is called in FROM, so the caller's plan is the query below (an index scan
-- of executions_latest_run_idx, partial on the literal kind 'RUN').
CREATE OR REPLACE FUNCTION source_run(p_plan_id BIGINT)
RETURNS TABLE (id BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT x.id FROM executions x
     WHERE x.plan_id = p_plan_id AND x.kind = 'RUN'
     ORDER BY x.requested_at DESC, x.id DESC
     LIMIT 1
$$;
