-- queue_retry: the automatic rerun of a finished execution's failures
-- (contract, section 18), called by the transaction that finished it
-- (results::apply::close_pairs, through src/db/results.rs), so the rerun
-- commits with the last result, deadline or dead letter that finished it,
-- or not at all. A transaction finishes an execution once (its open_pairs
-- reaches 0 under its row lock), and executions_retry_of_idx refuses a
-- second retry of one execution whatever the path.
--
-- Exactly the execution's pairs whose status is FAILED or ERROR (never
-- ABORTED), when its retry budget is above 0: a rerun of the plan's source
-- run written by queue_rerun (the one place a rerun, its pairs, dispatch
-- rows and message bodies are built), trigger RETRY, retry_of this
-- execution, requested by the same user, budget one less. Pairs not in the
-- source run, at MAX_ATTEMPTS, or in flight elsewhere (onInFlight skip) are
-- left out; with none left there is no retry. A refusal of queue_rerun (the
-- user no longer active or a member, the plan gone) also means no retry.
--
-- The retry inherits the execution's callbackUrl (section 21).
-- Returns the retry's execution id, or NULL when there is none.
-- p_queue_timeout_secs was added for the messages' expiresAt (section 15)
DROP FUNCTION IF EXISTS queue_retry(BIGINT, INTEGER, TEXT);
CREATE OR REPLACE FUNCTION queue_retry(p_execution_id BIGINT, p_max_attempts INTEGER,
                                       p_exchange TEXT, p_queue_timeout_secs INTEGER)
RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    v_x executions%ROWTYPE;
    v_source BIGINT;
    v_s BIGINT[];
    v_e BIGINT[];
    v_at TIMESTAMPTZ := clock_timestamp();
    r RECORD;
BEGIN
    SELECT * INTO v_x FROM executions WHERE id = p_execution_id;
    IF v_x.id IS NULL OR v_x.retry_budget <= 0 OR v_x.framework_type IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT src.id INTO v_source FROM source_run(v_x.plan_id) src;
    -- the failures that are pairs of the source run, below MAX_ATTEMPTS
    SELECT array_agg(f.scenario_id ORDER BY f.scenario_id, f.environment_id),
           array_agg(f.environment_id ORDER BY f.scenario_id, f.environment_id)
      INTO v_s, v_e
      FROM execution_pairs f
     WHERE f.execution_id = p_execution_id AND f.status IN ('FAILED', 'ERROR')
       AND EXISTS (SELECT 1 FROM execution_pairs sp
                    WHERE sp.execution_id = v_source
                      AND sp.scenario_id = f.scenario_id AND sp.environment_id = f.environment_id)
       AND (SELECT l.attempt FROM execution_pairs l
             WHERE l.source_execution_id = v_source
               AND l.scenario_id = f.scenario_id AND l.environment_id = f.environment_id
             ORDER BY l.attempt DESC LIMIT 1) < p_max_attempts;
    WHILE coalesce(cardinality(v_s), 0) > 0 LOOP
        SELECT * INTO r
          FROM queue_rerun(p_plan_id => v_x.plan_id, p_user_id => v_x.requested_by,
                           p_framework_type => v_x.framework_type,
                           p_scenario_ids => v_s, p_environment_ids => v_e,
                           p_statuses => '{}', p_on_in_flight => 'skip',
                           p_max_pairs => cardinality(v_s), p_max_attempts => p_max_attempts,
                           p_dry_run => false, p_requested_at => v_at,
                           p_requested_at_text => to_char(v_at AT TIME ZONE 'UTC',
                                                          'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                           p_correlation_id => NULL, p_exchange => p_exchange,
                           p_first_message_id => gen_random_uuid(), p_replay => false,
                           p_queue_timeout_secs => p_queue_timeout_secs,
                           p_retry_failed => v_x.retry_budget - 1,
                           p_retry_of => p_execution_id,
                           p_callback_url => v_x.callback_url);
        IF r.error_code IS NULL THEN
            RETURN r.new_execution_id;
        ELSIF r.error_code NOT IN (1005, 1015) THEN
            RETURN NULL;
        END IF;
        -- a pair that reached MAX_ATTEMPTS (or left the source run) since
        -- it was read above: leave it out and ask again
        SELECT array_agg(t.s ORDER BY t.o), array_agg(t.e ORDER BY t.o)
          INTO v_s, v_e
          FROM unnest(v_s, v_e) WITH ORDINALITY AS t(s, e, o)
         WHERE (t.s, t.e) <> (r.error_scenario_id, r.error_environment_id);
    END LOOP;
    RETURN NULL;
END
$$;
