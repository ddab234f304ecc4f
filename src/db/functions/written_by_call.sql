-- written_by_call: the execution a call of queue_rerun or queue_run wrote,
-- found by the first message id it was given, with its pairs in answer order
-- (the dispatch rows' order); all NULL when that call did not commit.
CREATE OR REPLACE FUNCTION written_by_call(p_first_message_id UUID,
                                OUT written_execution_id BIGINT, OUT scenario_ids BIGINT[],
                                OUT environment_ids BIGINT[], OUT attempts INTEGER[],
                                OUT message_ids UUID[])
LANGUAGE plpgsql STABLE AS $$
BEGIN
    SELECT f.execution_id INTO written_execution_id
      FROM execution_pairs f WHERE f.message_id = p_first_message_id;
    IF written_execution_id IS NULL THEN
        RETURN;
    END IF;
    SELECT array_agg(p.scenario_id ORDER BY d.id), array_agg(p.environment_id ORDER BY d.id),
           array_agg(p.attempt ORDER BY d.id), array_agg(p.message_id ORDER BY d.id)
      INTO scenario_ids, environment_ids, attempts, message_ids
      FROM execution_pairs p JOIN dispatches d ON d.message_id = p.message_id
     WHERE p.execution_id = written_execution_id;
END
$$;
