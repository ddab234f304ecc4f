-- queue_rerun: a rerun (contract, sections 1, 2 and 8) in one call, what took
-- five round trips (validate and lock the source run, read its pairs, write,
-- commit): every check of the contract in its order, then the write, so that
-- a rerun called outside a transaction is one statement and one commit. It
-- reports a failed check as its code and arguments; the service words the
-- error (src/domain/refusal.rs, called from src/service/rerun.rs).
--
-- Locks (transaction-scoped advisory locks, held in memory, no row written):
--  * the plan, shared: a run of the plan takes it exclusively, so a run
--    waits for the reruns in progress and its in-flight guard sees them, and
--    a rerun that waited for a run reads the run it committed as its source;
--  * each selected pair of the source run, exclusively, in (scenario,
--    environment) order: attempts of one pair are numbered one after another,
--    reruns of disjoint pairs of one plan do not wait for each other.
-- A volatile function reads with a fresh snapshot per statement, so the
-- attempts read after the pair locks include every rerun committed before.
-- p_queue_timeout_secs was added for the message's expiresAt (section 15),
-- p_retry_failed and p_retry_of for issue 19: each signature is another
-- function, so the earlier ones are dropped; its result columns grew too
-- (1019 and 1023 of section 20); p_callback_url for section 21;
-- p_own_transaction for issue 22
DROP FUNCTION IF EXISTS queue_rerun(BIGINT, BIGINT, TEXT, BIGINT[], BIGINT[], TEXT[], TEXT, INTEGER,
                                    INTEGER, BOOLEAN, TIMESTAMPTZ, TEXT, TEXT, TEXT, UUID, BOOLEAN);
DROP FUNCTION IF EXISTS queue_rerun(BIGINT, BIGINT, TEXT, BIGINT[], BIGINT[], TEXT[], TEXT, INTEGER,
                                    INTEGER, BOOLEAN, TIMESTAMPTZ, TEXT, TEXT, TEXT, UUID, BOOLEAN,
                                    INTEGER);
DROP FUNCTION IF EXISTS queue_rerun(BIGINT, BIGINT, TEXT, BIGINT[], BIGINT[], TEXT[], TEXT, INTEGER,
                                    INTEGER, BOOLEAN, TIMESTAMPTZ, TEXT, TEXT, TEXT, UUID, BOOLEAN,
                                    INTEGER, BIGINT);
DROP FUNCTION IF EXISTS queue_rerun(BIGINT, BIGINT, TEXT, BIGINT[], BIGINT[], TEXT[], TEXT, INTEGER,
                                    INTEGER, BOOLEAN, TIMESTAMPTZ, TEXT, TEXT, TEXT, UUID, BOOLEAN,
                                    INTEGER, INTEGER, BIGINT);
DROP FUNCTION IF EXISTS queue_rerun(BIGINT, BIGINT, TEXT, BIGINT[], BIGINT[], TEXT[], TEXT, INTEGER,
                                    INTEGER, BOOLEAN, TIMESTAMPTZ, TEXT, TEXT, TEXT, UUID, BOOLEAN,
                                    INTEGER, INTEGER, BIGINT, TEXT);
CREATE OR REPLACE FUNCTION queue_rerun(
    p_plan_id BIGINT,
    p_user_id BIGINT,
    p_framework_type TEXT,
    -- the named pairs in request order (an environment NULL: every
    -- environment its scenario ran on in the source run); empty with statuses
    p_scenario_ids BIGINT[],
    p_environment_ids BIGINT[],
    -- select the source run's pairs by current status instead (section 8)
    p_statuses TEXT[],
    -- 'queue', 'skip' or 'refuse' (section 8)
    p_on_in_flight TEXT,
    p_max_pairs INTEGER,
    p_max_attempts INTEGER,
    p_dry_run BOOLEAN,
    p_requested_at TIMESTAMPTZ,
    -- the same instant as the message's requestedAt (RFC 3339, seconds)
    p_requested_at_text TEXT,
    p_correlation_id TEXT,
    p_exchange TEXT,
    -- the message id of the first queued pair (a random UUID the caller
    -- keeps), and whether this call is made again after a lost connection:
    -- it then looks for that id, and answers what the first call wrote if
    -- it committed
    p_first_message_id UUID,
    p_replay BOOLEAN,
    -- QUEUE_TIMEOUT_SECS: the message's expiresAt is requestedAt + it
    p_queue_timeout_secs INTEGER,
    -- the body's retryFailed (section 18), NULL: the plan's; and the
    -- execution whose failures this rerun retries (queue_retry), NULL: a
    -- user's rerun
    p_retry_failed INTEGER DEFAULT NULL,
    p_retry_of BIGINT DEFAULT NULL,
    -- the body's callbackUrl, checked (section 21; a retry passes its
    -- execution's); NULL: no callback
    p_callback_url TEXT DEFAULT NULL,
    -- this call is its transaction's only statement (the service's rerun
    -- without an Idempotency-Key): the commit follows it at once, so it
    -- bumps the plan's results_version itself (see below); false: the
    -- deferred triggers do it at commit
    p_own_transaction BOOLEAN DEFAULT false,
    -- the failed check (1000, 1002, 1010, 1023, 1004, 1005, 1007, 1019, 1008,
    -- 1016, 1014, 1015) and its arguments; NULL when the rerun was accepted
    OUT error_code INTEGER,
    OUT error_scenario_id BIGINT,
    OUT error_environment_id BIGINT,
    OUT error_execution_id BIGINT,
    OUT error_count INTEGER,
    -- 1019: 'scenario' or 'environment', and its id
    OUT error_subject TEXT,
    OUT error_id BIGINT,
    -- 1023: the plan's framework type
    OUT error_framework_type TEXT,
    -- the rerun (NULL for a dry run) and its source run
    OUT new_execution_id BIGINT,
    OUT source_id BIGINT,
    OUT queued_scenario_ids BIGINT[],
    OUT queued_environment_ids BIGINT[],
    OUT queued_attempts INTEGER[],
    OUT queued_message_ids UUID[],
    OUT skipped_scenario_ids BIGINT[],
    OUT skipped_environment_ids BIGINT[],
    OUT skipped_execution_ids BIGINT[],
    OUT skipped_attempts INTEGER[],
    OUT skipped_statuses TEXT[]
) LANGUAGE plpgsql
-- Generic plans for its statements from the first call of a session: the
-- default (custom plans first, generic only when its estimate is no worse)
-- kept planning most statements again on every call, as their arrays'
-- unnest is estimated at 100 rows without the values (issue 22: 0.3 ms of
-- a 2-pair rerun). Their generic plans probe the same indexes.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_source BIGINT;
    v_id BIGINT;
    -- the selected pairs, in answer order, with their latest attempt
    v_s BIGINT[];
    v_e BIGINT[];
    v_runs INTEGER[];
    v_status TEXT[];
    v_holder BIGINT[];
    v_i INTEGER;
    v_in_flight BOOLEAN;
    -- 1019 of the named pairs: what and which; the first pair's environment
    v_subject TEXT;
    v_subject_id BIGINT;
    v_first_environment BIGINT;
    -- whether this call bumps the plan's results_version itself (below)
    v_bump BOOLEAN;
    v_seen TEXT;
BEGIN
    -- the same call again after a lost connection, the first having
    -- committed: what it wrote (its skipped pairs are not kept)
    IF p_replay AND NOT p_dry_run THEN
        SELECT w.written_execution_id, w.scenario_ids, w.environment_ids, w.attempts, w.message_ids
          INTO new_execution_id, queued_scenario_ids, queued_environment_ids, queued_attempts,
               queued_message_ids
          FROM written_by_call(p_first_message_id) w;
        IF new_execution_id IS NOT NULL THEN
            SELECT x.source_execution_id INTO source_id FROM executions x WHERE x.id = new_execution_id;
            skipped_scenario_ids := '{}';
            skipped_environment_ids := '{}';
            skipped_execution_ids := '{}';
            skipped_attempts := '{}';
            skipped_statuses := '{}';
            RETURN;
        END IF;
    END IF;

    -- 1000, 1002, 1010: plan_access's checks, inline (one statement less on
    -- the rerun's path), with the plan's lock taken shared in the same
    -- statement (not for a dry run); the source run is read after it
    SELECT CASE WHEN p.project_id IS NULL OR NOT p.active THEN 1000
                WHEN NOT coalesce(u.active, false) THEN 1002
                WHEN NOT EXISTS (SELECT 1 FROM project_members m
                                  WHERE m.project_id = p.project_id
                                    AND m.user_id = p_user_id) THEN 1010
                -- 1023 (section 20): the body names another framework type
                WHEN translate(btrim(p.framework_type, E' \t\n\r\f\v'),
                               'abcdefghijklmnopqrstuvwxyz', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ')
                     <> p_framework_type THEN 1023
           END,
           translate(btrim(p.framework_type, E' \t\n\r\f\v'),
                     'abcdefghijklmnopqrstuvwxyz', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ')
      INTO error_code, error_framework_type
      FROM (SELECT 1) one
      LEFT JOIN plans p ON p.id = p_plan_id
      LEFT JOIN users u ON u.id = p_user_id
      LEFT JOIN LATERAL (SELECT pg_advisory_xact_lock_shared(
                                    (p_plan_id >> 32)::integer,
                                    ((p_plan_id & 4294967295) - 2147483648)::integer)
                          WHERE NOT p_dry_run) l ON true;
    IF error_code IS NOT NULL THEN
        RETURN;
    END IF;

    IF coalesce(cardinality(p_statuses), 0) = 0 THEN
        -- 1004: the plan's latest full run is the source run; then, in the
        -- same statement, the named pairs expanded against it: 1005 or 1007,
        -- whichever the request meets first; 1019 (section 20), the first
        -- named scenario or environment, in request order, that is retired
        -- or no longer in the plan's lists; and the pairs without those
        -- whose environment left (a scenario named without an environment
        -- leaves them out; 1019 for the first pair if none is left)
        SELECT src.id,
               (array_agg(CASE WHEN m.scenario_id IS NULL THEN 1005 ELSE 1007 END
                          ORDER BY m.i, m.environment_id)
                  FILTER (WHERE m.i IS NOT NULL AND (m.scenario_id IS NULL OR m.nth > 1)))[1],
               (array_agg(coalesce(m.scenario_id, m.ws) ORDER BY m.i, m.environment_id)
                  FILTER (WHERE m.i IS NOT NULL AND (m.scenario_id IS NULL OR m.nth > 1)))[1],
               (array_agg(CASE WHEN m.scenario_id IS NULL THEN m.we ELSE m.environment_id END
                          ORDER BY m.i, m.environment_id)
                  FILTER (WHERE m.i IS NOT NULL AND (m.scenario_id IS NULL OR m.nth > 1)))[1],
               (array_agg(CASE WHEN NOT m.ws_active THEN 'scenario' ELSE 'environment' END
                          ORDER BY m.i)
                  FILTER (WHERE NOT m.ws_active OR (m.we IS NOT NULL AND NOT m.we_active)))[1],
               (array_agg(CASE WHEN NOT m.ws_active THEN m.ws ELSE m.we END ORDER BY m.i)
                  FILTER (WHERE NOT m.ws_active OR (m.we IS NOT NULL AND NOT m.we_active)))[1],
               array_agg(m.scenario_id ORDER BY m.i, m.environment_id)
                  FILTER (WHERE m.scenario_id IS NOT NULL AND m.e_active),
               array_agg(m.environment_id ORDER BY m.i, m.environment_id)
                  FILTER (WHERE m.scenario_id IS NOT NULL AND m.e_active),
               (array_agg(m.environment_id ORDER BY m.i, m.environment_id)
                  FILTER (WHERE m.scenario_id IS NOT NULL))[1]
          INTO v_source, error_code, error_scenario_id, error_environment_id, v_subject,
               v_subject_id, v_s, v_e, v_first_environment
          FROM source_run(p_plan_id) src
          LEFT JOIN LATERAL
               (SELECT w.i, w.s AS ws, w.e AS we, sp.scenario_id, sp.environment_id,
                       row_number() OVER (PARTITION BY sp.scenario_id, sp.environment_id
                                          ORDER BY w.i) AS nth,
                       -- the named scenario, the named environment and the
                       -- pair's environment are the plan's and active
                       a.scenario_id IS NOT NULL AS ws_active,
                       b.environment_id IS NOT NULL AS we_active,
                       c.environment_id IS NOT NULL AS e_active
                  FROM unnest(p_scenario_ids, p_environment_ids) WITH ORDINALITY AS w(s, e, i)
                  -- a probe of the source run's pairs per named pair (the
                  -- ORDER BY keeps the subquery whole: the generic plan
                  -- would otherwise hash all the run's pairs)
                  LEFT JOIN LATERAL
                       (SELECT p.scenario_id, p.environment_id FROM execution_pairs p
                         WHERE p.execution_id = src.id AND p.scenario_id = w.s
                           AND (w.e IS NULL OR p.environment_id = w.e)
                         ORDER BY p.environment_id) sp ON true
                  LEFT JOIN plan_active_scenarios(p_plan_id) a ON a.scenario_id = w.s
                  LEFT JOIN plan_active_environments(p_plan_id) b ON b.environment_id = w.e
                  LEFT JOIN plan_active_environments(p_plan_id) c
                    ON c.environment_id = sp.environment_id) m ON true
         GROUP BY src.id;
        IF v_source IS NULL THEN
            error_code := 1004;
            RETURN;
        ELSIF error_code IS NOT NULL THEN
            RETURN;
        END IF;
        source_id := v_source;
        IF v_subject IS NOT NULL THEN
            error_code := 1019;
            error_subject := v_subject;
            error_id := v_subject_id;
            RETURN;
        ELSIF v_s IS NULL THEN
            error_code := 1019;
            error_subject := 'environment';
            error_id := v_first_environment;
            RETURN;
        END IF;
    ELSE
        -- 1004, as above
        SELECT src.id INTO v_source FROM source_run(p_plan_id) src;
        IF v_source IS NULL THEN
            error_code := 1004;
            RETURN;
        END IF;
        source_id := v_source;
        -- 1016: the source run's pairs whose current status is asked for
        SELECT array_agg(sp.scenario_id ORDER BY sp.scenario_id, sp.environment_id),
               array_agg(sp.environment_id ORDER BY sp.scenario_id, sp.environment_id)
          INTO v_s, v_e
          FROM execution_pairs sp
         CROSS JOIN LATERAL
               (SELECT l.status FROM execution_pairs l
                 WHERE l.source_execution_id = v_source
                   AND l.scenario_id = sp.scenario_id AND l.environment_id = sp.environment_id
                 ORDER BY l.attempt DESC LIMIT 1) l
         WHERE sp.execution_id = v_source AND l.status = ANY (p_statuses)
           -- without the pairs that left the plan (section 20)
           AND sp.scenario_id IN (SELECT a.scenario_id FROM plan_active_scenarios(p_plan_id) a)
           AND sp.environment_id IN (SELECT b.environment_id
                                       FROM plan_active_environments(p_plan_id) b);
        IF v_s IS NULL THEN
            error_code := 1016;
            RETURN;
        END IF;
    END IF;
    -- 1008 after expansion
    IF cardinality(v_s) > p_max_pairs THEN
        error_code := 1008;
        error_count := cardinality(v_s);
        RETURN;
    END IF;

    IF NOT p_dry_run THEN
        PERFORM count(pg_advisory_xact_lock(hashint8extended(t.e, hashint8extended(t.s, v_source))))
           FROM (SELECT u.s, u.e FROM unnest(v_s, v_e) AS u(s, e) ORDER BY u.s, u.e) t;
    END IF;

    -- each pair's latest attempt in the source run's chain, read after its
    -- lock: its number (the times it ran), status and execution
    SELECT array_agg(l.attempt ORDER BY t.o), array_agg(l.status ORDER BY t.o),
           array_agg(l.execution_id ORDER BY t.o)
      INTO v_runs, v_status, v_holder
      FROM unnest(v_s, v_e) WITH ORDINALITY AS t(s, e, o)
     CROSS JOIN LATERAL
           (SELECT p.attempt, p.status, p.execution_id FROM execution_pairs p
             WHERE p.source_execution_id = v_source
               AND p.scenario_id = t.s AND p.environment_id = t.e
             ORDER BY p.attempt DESC LIMIT 1) l;

    queued_scenario_ids := '{}';
    queued_environment_ids := '{}';
    queued_attempts := '{}';
    skipped_scenario_ids := '{}';
    skipped_environment_ids := '{}';
    skipped_execution_ids := '{}';
    skipped_attempts := '{}';
    skipped_statuses := '{}';
    FOR v_i IN 1 .. coalesce(cardinality(v_s), 0) LOOP
        -- with statuses, a pair another rerun queued meanwhile is no longer selected
        CONTINUE WHEN coalesce(cardinality(p_statuses), 0) > 0
                  AND NOT v_status[v_i] = ANY (p_statuses);
        v_in_flight := v_status[v_i] IN ('QUEUED', 'RUNNING');
        -- 1014 (onInFlight refuse)
        IF v_in_flight AND p_on_in_flight = 'refuse' THEN
            error_code := 1014;
            error_scenario_id := v_s[v_i];
            error_environment_id := v_e[v_i];
            error_execution_id := v_holder[v_i];
            RETURN;
        ELSIF v_in_flight AND p_on_in_flight = 'skip' THEN
            skipped_scenario_ids := skipped_scenario_ids || v_s[v_i];
            skipped_environment_ids := skipped_environment_ids || v_e[v_i];
            skipped_execution_ids := skipped_execution_ids || v_holder[v_i];
            skipped_attempts := skipped_attempts || v_runs[v_i];
            skipped_statuses := skipped_statuses || v_status[v_i];
        ELSE
            queued_scenario_ids := queued_scenario_ids || v_s[v_i];
            queued_environment_ids := queued_environment_ids || v_e[v_i];
            queued_attempts := queued_attempts || (v_runs[v_i] + 1);
        END IF;
    END LOOP;
    IF cardinality(queued_scenario_ids) = 0 THEN
        IF cardinality(skipped_scenario_ids) > 0 THEN
            -- 1014: nothing left to queue (onInFlight skip)
            error_code := 1014;
            error_scenario_id := skipped_scenario_ids[1];
            error_environment_id := skipped_environment_ids[1];
            error_execution_id := skipped_execution_ids[1];
        ELSE
            error_code := 1016;
        END IF;
        RETURN;
    END IF;
    -- 1015 (MAX_ATTEMPTS)
    FOR v_i IN 1 .. coalesce(cardinality(queued_attempts), 0) LOOP
        IF queued_attempts[v_i] > p_max_attempts THEN
            error_code := 1015;
            error_scenario_id := queued_scenario_ids[v_i];
            error_environment_id := queued_environment_ids[v_i];
            RETURN;
        END IF;
    END LOOP;
    IF p_dry_run THEN
        RETURN;
    END IF;

    -- The plan's results_version (contract, section 22; migration 15). A
    -- call that is its transaction's only statement (p_own_transaction, and
    -- the transaction wrote nothing before it) bumps it here, in its last
    -- statement, after the write's own locks (the read model's rows): the
    -- plan's row is then locked only until the commit that follows, as the
    -- deferred triggers lock it only at commit. It records the rerun and
    -- the plan in the transaction's setting first, so that the triggers'
    -- WHEN (migration 20) queues no event for the rerun's rows. Any other
    -- call (with an Idempotency-Key, whose transaction goes on; queue_retry,
    -- inside the transaction that finished an execution; SQL of tests)
    -- leaves it to the deferred triggers at commit, as every other writer:
    -- a rerun in an open transaction never holds the plan's row, so reruns
    -- of disjoint pairs of one plan do not wait for each other. Asked
    -- before nextval, which can assign the transaction its id.
    v_bump := p_own_transaction AND pg_current_xact_id_if_assigned() IS NULL;

    -- the rerun, its pairs and one dispatch row per pair, in one statement;
    -- the message body of section 2, keys in the contract's order, compact
    -- as the service's own serialisation (docs/asyncapi.yaml), with the
    -- expiresAt of section 15
    v_id := nextval('executions_id_seq');
    new_execution_id := v_id;
    IF v_bump THEN
        v_seen := set_config('plan_queue.read_versions_seen',
                             coalesce(current_setting('plan_queue.read_versions_seen', true), '')
                             || ',x' || v_id || ',,p' || p_plan_id || ',', true);
    END IF;
    WITH t AS (
        SELECT u.s, u.e, u.a, u.o,
               CASE WHEN u.o = 1 THEN p_first_message_id ELSE gen_random_uuid() END AS m
          FROM unnest(queued_scenario_ids, queued_environment_ids, queued_attempts)
               WITH ORDINALITY AS u(s, e, a, o)
    ), new_execution AS (
        INSERT INTO executions (id, plan_id, kind, source_execution_id, requested_by,
                                framework_type, requested_at, open_pairs, trigger, retry_of,
                                retry_budget, callback_url)
        VALUES (v_id, p_plan_id, 'RERUN', v_source, p_user_id, p_framework_type, p_requested_at,
                cardinality(queued_scenario_ids),
                CASE WHEN p_retry_of IS NULL THEN 'USER' ELSE 'RETRY' END, p_retry_of,
                coalesce(p_retry_failed,
                         (SELECT pl.retry_failed FROM plans pl WHERE pl.id = p_plan_id)),
                p_callback_url)
    ), new_pairs AS (
        INSERT INTO execution_pairs (execution_id, scenario_id, environment_id, status, attempt,
                                     source_execution_id, message_id)
        SELECT v_id, t.s, t.e, 'QUEUED', t.a, v_source, t.m FROM t
    ), new_dispatches AS (
        INSERT INTO dispatches (message_id, execution_id, routing_key, message_type, body,
                                correlation_id, exchange)
        SELECT t.m, v_id, p_framework_type, 'scenario.rerun',
               format('{"messageId":"%s","executionId":%s,"sourceExecutionId":%s,"planId":%s,'
                      '"userId":%s,"frameworkType":%s,"scenarioId":%s,"environmentId":%s,'
                      '"attempt":%s,"requestedAt":%s,"expiresAt":%s,"scenario":{"name":%s},'
                      '"environment":{"name":%s,"platform":%s,"version":%s}}',
                      t.m, v_id, v_source, p_plan_id, p_user_id, to_json(p_framework_type),
                      t.s, t.e, t.a, to_json(p_requested_at_text),
                      to_json(to_char(date_trunc('second', p_requested_at) AT TIME ZONE 'UTC'
                                      + make_interval(secs => p_queue_timeout_secs),
                                      'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
                      to_json(sc.name),
                      to_json(en.name), to_json(en.platform), to_json(en.version)),
               p_correlation_id, p_exchange
          FROM t
          JOIN scenarios sc ON sc.id = t.s
          JOIN environments en ON en.id = t.e
         ORDER BY t.o
        RETURNING id, message_id
    )
    SELECT array_agg(d.message_id ORDER BY d.id) INTO queued_message_ids FROM new_dispatches d;
    IF v_bump THEN
        UPDATE plans SET results_version = results_version + 1 WHERE id = p_plan_id;
    END IF;
END
$$;
