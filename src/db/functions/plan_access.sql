-- plan_access: 1000, 1002, 1010 (contract, sections 1 and 4), the first that
-- applies: who may act on a plan (a retired plan is 1000, section 20); with the plan's own framework type
-- (section 13). PL/pgSQL, as the others: its plans are cached per session
-- (an SQL function that cannot be inlined is planned again on every call).
-- queue_rerun makes the same three checks inline (one statement less on its
-- path); queue_run calls this.
CREATE OR REPLACE FUNCTION plan_access(p_plan_id BIGINT, p_user_id BIGINT,
                            OUT error_code INTEGER, OUT plan_framework_type TEXT)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT CASE WHEN p.project_id IS NULL OR NOT p.active THEN 1000
                WHEN NOT coalesce(u.active, false) THEN 1002
                WHEN NOT EXISTS (SELECT 1 FROM project_members m
                                  WHERE m.project_id = p.project_id
                                    AND m.user_id = p_user_id) THEN 1010
           END,
           p.framework_type
      INTO error_code, plan_framework_type
      FROM (SELECT 1) one
      LEFT JOIN plans p ON p.id = p_plan_id
      LEFT JOIN users u ON u.id = p_user_id;
END
$$;
