-- queue_run: the run of a plan (contract, section 7) in one call, like
-- queue_rerun: the checks in the contract's order, the plan's lock taken
-- exclusively (it waits for the reruns in progress; runs of one plan go one
-- after another), the in-flight guard, then the run, its pairs (attempt 1,
-- their own source) and one dispatch row per pair (type scenario.run). The
-- service words a failed check (src/domain/refusal.rs, called from
-- src/service/run.rs).
-- p_queue_timeout_secs was added for the message's expiresAt (section 15),
-- p_retry_failed for issue 19: each signature is another function, so the
-- earlier ones are dropped; p_callback_url for section 21, p_own_transaction
-- for issue 22
DROP FUNCTION IF EXISTS queue_run(BIGINT, BIGINT, TEXT, TEXT[], BIGINT[], BIGINT[], BOOLEAN,
                                  INTEGER, BOOLEAN, TIMESTAMPTZ, TEXT, TEXT, TEXT, UUID, BOOLEAN);
DROP FUNCTION IF EXISTS queue_run(BIGINT, BIGINT, TEXT, TEXT[], BIGINT[], BIGINT[], BOOLEAN,
                                  INTEGER, BOOLEAN, TIMESTAMPTZ, TEXT, TEXT, TEXT, UUID, BOOLEAN,
                                  INTEGER);
DROP FUNCTION IF EXISTS queue_run(BIGINT, BIGINT, TEXT, TEXT[], BIGINT[], BIGINT[], BOOLEAN,
                                  INTEGER, BOOLEAN, TIMESTAMPTZ, TEXT, TEXT, TEXT, UUID, BOOLEAN,
                                  INTEGER, INTEGER);
DROP FUNCTION IF EXISTS queue_run(BIGINT, BIGINT, TEXT, TEXT[], BIGINT[], BIGINT[], BOOLEAN,
                                  INTEGER, BOOLEAN, TIMESTAMPTZ, TEXT, TEXT, TEXT, UUID, BOOLEAN,
                                  INTEGER, INTEGER, TEXT);
CREATE OR REPLACE FUNCTION queue_run(
    p_plan_id BIGINT,
    p_user_id BIGINT,
    -- the body's framework type, normalised and checked; NULL: the plan's
    p_framework_type TEXT,
    -- the configured framework types (upper case), for the plan's own
    p_framework_types TEXT[],
    -- the subsets in request order; NULL: every scenario / environment
    p_scenario_ids BIGINT[],
    p_environment_ids BIGINT[],
    p_force BOOLEAN,
    p_max_pairs INTEGER,
    p_dry_run BOOLEAN,
    p_requested_at TIMESTAMPTZ,
    p_requested_at_text TEXT,
    p_correlation_id TEXT,
    p_exchange TEXT,
    -- as queue_rerun's
    p_first_message_id UUID,
    p_replay BOOLEAN,
    -- QUEUE_TIMEOUT_SECS: the message's expiresAt is requestedAt + it
    p_queue_timeout_secs INTEGER,
    -- the body's retryFailed (section 18); NULL: the plan's
    p_retry_failed INTEGER DEFAULT NULL,
    -- the body's callbackUrl, checked (section 21); NULL: no callback
    p_callback_url TEXT DEFAULT NULL,
    -- as queue_rerun's: the call is its transaction's only statement
    p_own_transaction BOOLEAN DEFAULT false,
    -- the failed check (1000, 1002, 1010, 1023, 1006, 1003, 1019, 1018, 1008,
    -- 1014) and its arguments; NULL when the run was accepted
    OUT error_code INTEGER,
    -- 1019: 'scenario' or 'environment', and its id
    OUT error_subject TEXT,
    OUT error_id BIGINT,
    OUT error_count INTEGER,
    OUT error_execution_id BIGINT,
    -- the framework type of the run (1003: the plan's, not configured;
    -- 1023: the plan's, which the body's is not)
    OUT framework_type_used TEXT,
    -- the run (NULL for a dry run) and its pairs, by scenario then environment
    OUT new_execution_id BIGINT,
    OUT queued_scenario_ids BIGINT[],
    OUT queued_environment_ids BIGINT[],
    OUT queued_message_ids UUID[]
) LANGUAGE plpgsql AS $$
DECLARE
    v_plan_framework_type TEXT;
    v_scenarios BIGINT[];
    v_environments BIGINT[];
    v_n INTEGER;
    v_source BIGINT;
    v_id BIGINT;
    -- whether this call bumps the plan's results_version itself (below)
    v_bump BOOLEAN;
    v_seen TEXT;
BEGIN
    -- the same call again after a lost connection (see queue_rerun)
    IF p_replay AND NOT p_dry_run THEN
        SELECT w.written_execution_id, w.scenario_ids, w.environment_ids, w.message_ids
          INTO new_execution_id, queued_scenario_ids, queued_environment_ids, queued_message_ids
          FROM written_by_call(p_first_message_id) w;
        IF new_execution_id IS NOT NULL THEN
            SELECT x.framework_type INTO framework_type_used
              FROM executions x WHERE x.id = new_execution_id;
            RETURN;
        END IF;
    END IF;

    SELECT a.error_code, a.plan_framework_type INTO error_code, v_plan_framework_type
      FROM plan_access(p_plan_id, p_user_id) a;
    IF error_code IS NOT NULL THEN
        RETURN;
    END IF;
    -- 1023 (section 20): the body names another framework type than the plan's
    IF p_framework_type IS NOT NULL AND v_plan_framework_type IS NOT NULL
       AND p_framework_type IS DISTINCT FROM
           translate(btrim(v_plan_framework_type, E' \t\n\r\f\v'),
                     'abcdefghijklmnopqrstuvwxyz', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ') THEN
        error_code := 1023;
        framework_type_used := translate(btrim(v_plan_framework_type, E' \t\n\r\f\v'),
                                         'abcdefghijklmnopqrstuvwxyz', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ');
        RETURN;
    END IF;

    -- 1006, 1003: the body's framework type, else the plan's, normalised as
    -- the service normalises a body's (trimmed, ASCII upper case)
    framework_type_used := coalesce(
        p_framework_type,
        translate(btrim(v_plan_framework_type, E' \t\n\r\f\v'),
                  'abcdefghijklmnopqrstuvwxyz', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ'));
    IF coalesce(framework_type_used, '') = '' THEN
        error_code := 1006;
        RETURN;
    ELSIF NOT framework_type_used = ANY (p_framework_types) THEN
        error_code := 1003;
        RETURN;
    END IF;

    -- 1019: the first id of a subset (scenarios first, in request order)
    -- that is not the plan's, or retired (section 20)
    SELECT w.id INTO error_id
      FROM unnest(p_scenario_ids) WITH ORDINALITY AS w(id, i)
     WHERE NOT EXISTS (SELECT 1 FROM plan_active_scenarios(p_plan_id) a WHERE a.scenario_id = w.id)
     ORDER BY w.i LIMIT 1;
    IF error_id IS NOT NULL THEN
        error_code := 1019;
        error_subject := 'scenario';
        RETURN;
    END IF;
    SELECT w.id INTO error_id
      FROM unnest(p_environment_ids) WITH ORDINALITY AS w(id, i)
     WHERE NOT EXISTS (SELECT 1 FROM plan_active_environments(p_plan_id) b
                        WHERE b.environment_id = w.id)
     ORDER BY w.i LIMIT 1;
    IF error_id IS NOT NULL THEN
        error_code := 1019;
        error_subject := 'environment';
        RETURN;
    END IF;

    -- the plan's active scenarios and environments (a retired one is not run)
    SELECT array_agg(a.scenario_id ORDER BY a.scenario_id) INTO v_scenarios
      FROM plan_active_scenarios(p_plan_id) a
     WHERE p_scenario_ids IS NULL OR a.scenario_id = ANY (p_scenario_ids);
    SELECT array_agg(b.environment_id ORDER BY b.environment_id) INTO v_environments
      FROM plan_active_environments(p_plan_id) b
     WHERE p_environment_ids IS NULL OR b.environment_id = ANY (p_environment_ids);
    -- 1018, 1008
    v_n := coalesce(cardinality(v_scenarios), 0) * coalesce(cardinality(v_environments), 0);
    IF v_n = 0 THEN
        error_code := 1018;
        RETURN;
    ELSIF v_n > p_max_pairs THEN
        error_code := 1008;
        error_count := v_n;
        RETURN;
    END IF;

    IF NOT p_dry_run THEN
        PERFORM pg_advisory_xact_lock((p_plan_id >> 32)::integer,
                                      ((p_plan_id & 4294967295) - 2147483648)::integer);
    END IF;
    -- 1014 unless force: the first pair (by scenario, then environment) of
    -- the latest run's chain whose latest attempt is in flight, read after
    -- the lock (the reruns committed before it are seen)
    IF NOT p_force THEN
        SELECT src.id INTO v_source FROM source_run(p_plan_id) src;
        IF v_source IS NOT NULL THEN
            SELECT p.execution_id INTO error_execution_id
              FROM execution_pairs p
             WHERE p.source_execution_id = v_source AND p.status IN ('QUEUED', 'RUNNING')
               AND NOT EXISTS (SELECT 1 FROM execution_pairs q
                                WHERE q.source_execution_id = p.source_execution_id
                                  AND q.scenario_id = p.scenario_id
                                  AND q.environment_id = p.environment_id
                                  AND q.attempt > p.attempt)
             ORDER BY p.scenario_id, p.environment_id
             LIMIT 1;
            IF error_execution_id IS NOT NULL THEN
                error_code := 1014;
                RETURN;
            END IF;
        END IF;
    END IF;

    SELECT array_agg(s.id ORDER BY s.o, e.o), array_agg(e.id ORDER BY s.o, e.o)
      INTO queued_scenario_ids, queued_environment_ids
      FROM unnest(v_scenarios) WITH ORDINALITY AS s(id, o),
           unnest(v_environments) WITH ORDINALITY AS e(id, o);
    IF p_dry_run THEN
        RETURN;
    END IF;

    -- the plan's results_version, bumped here in the last statement or by
    -- the deferred triggers at commit, as queue_rerun does it (asked before
    -- nextval)
    v_bump := p_own_transaction AND pg_current_xact_id_if_assigned() IS NULL;
    v_id := nextval('executions_id_seq');
    new_execution_id := v_id;
    IF v_bump THEN
        v_seen := set_config('plan_queue.read_versions_seen',
                             coalesce(current_setting('plan_queue.read_versions_seen', true), '')
                             || ',x' || v_id || ',,p' || p_plan_id || ',', true);
    END IF;
    queued_message_ids := p_first_message_id
                          || ARRAY(SELECT gen_random_uuid() FROM generate_series(2, v_n));
    INSERT INTO executions (id, plan_id, kind, source_execution_id, requested_by,
                            framework_type, requested_at, open_pairs, retry_budget, callback_url)
    VALUES (v_id, p_plan_id, 'RUN', NULL, p_user_id, framework_type_used, p_requested_at, v_n,
            coalesce(p_retry_failed, (SELECT pl.retry_failed FROM plans pl WHERE pl.id = p_plan_id)),
            p_callback_url);
    INSERT INTO execution_pairs (execution_id, scenario_id, environment_id, status, attempt,
                                 source_execution_id, message_id)
    SELECT v_id, t.s, t.e, 'QUEUED', 1, v_id, t.m
      FROM unnest(queued_scenario_ids, queued_environment_ids, queued_message_ids) AS t(s, e, m);
    -- the message body of section 7 (section 2's, attempt 1, its own source;
    -- expiresAt of section 15)
    INSERT INTO dispatches (message_id, execution_id, routing_key, message_type, body,
                            correlation_id, exchange)
    SELECT t.m, v_id, framework_type_used, 'scenario.run',
           format('{"messageId":"%s","executionId":%s,"sourceExecutionId":%s,"planId":%s,'
                  '"userId":%s,"frameworkType":%s,"scenarioId":%s,"environmentId":%s,'
                  '"attempt":1,"requestedAt":%s,"expiresAt":%s,"scenario":{"name":%s},'
                  '"environment":{"name":%s,"platform":%s,"version":%s}}',
                  t.m, v_id, v_id, p_plan_id, p_user_id, to_json(framework_type_used),
                  t.s, t.e, to_json(p_requested_at_text),
                  to_json(to_char(date_trunc('second', p_requested_at) AT TIME ZONE 'UTC'
                                  + make_interval(secs => p_queue_timeout_secs),
                                  'YYYY-MM-DD"T"HH24:MI:SS"Z"')),
                  to_json(sc.name),
                  to_json(en.name), to_json(en.platform), to_json(en.version)),
           p_correlation_id, p_exchange
      FROM unnest(queued_scenario_ids, queued_environment_ids, queued_message_ids)
           WITH ORDINALITY AS t(s, e, m, o)
      JOIN scenarios sc ON sc.id = t.s
      JOIN environments en ON en.id = t.e
     ORDER BY t.o;
    IF v_bump THEN
        UPDATE plans SET results_version = results_version + 1 WHERE id = p_plan_id;
    END IF;
END
$$;
