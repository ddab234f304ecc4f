-- Issue 22: a read model of the consolidated results (contract, sections 6,
-- 19 and 22). One row per pair of a source run's chain (the run and every
-- rerun made from it): the pair's latest attempt (number, execution, status,
-- reason), how many attempts it has, and the two attempt numbers the flaky
-- rules need. `GET /plans/{id}/results` reads the source run's 1 000 rows in
-- key order (no sort, no attempt scan) and `GET /plans/{id}/flakiness` one
-- range per run, instead of every attempt of every chain.
--
--   flaky (section 6)        = first_failed < last_passed
--   failed first (section 19) = first_failed = 1
--
-- Kept by statement-level triggers on execution_pairs, in the statement's
-- own transaction, so that no write path can forget it (the server
-- functions, the results consumer, the ends, the seed, SQL of tests and
-- benchmarks alike). Each write is O(1) per pair, whatever its history:
--   * INSERT: per pair, the statement's new attempts merged in (count added,
--     latest taken when higher, first failure lowest, last pass highest);
--   * UPDATE: the latest attempt's fields when it is the one updated, first
--     failure and last pass as above (a terminal status never changes: they
--     only move that way); a row whose terminal status changed (never on
--     the service's paths: SQL of tests and benchmarks) gets its pair
--     recomputed from the chain;
--   * DELETE (executions deleted, their pairs by cascade): the pairs
--     recomputed from the chain (gone when nothing is left); TRUNCATE empties it.
CREATE TABLE plan_pair_latest (
    source_execution_id BIGINT NOT NULL,
    scenario_id BIGINT NOT NULL,
    environment_id BIGINT NOT NULL,
    -- the latest (highest) attempt of the pair in the chain
    attempt INTEGER NOT NULL,
    execution_id BIGINT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    attempt_count INTEGER NOT NULL,
    -- the lowest attempt FAILED or ERROR; the highest attempt PASSED
    first_failed INTEGER,
    last_passed INTEGER,
    PRIMARY KEY (source_execution_id, scenario_id, environment_id)
) WITH (fillfactor = 80); -- room on each page: a result's update stays HOT

-- The pairs `keys` (source run, scenario, environment) recomputed from their
-- chains: the slow path, for writes the incremental rules do not cover.
CREATE FUNCTION plan_pair_latest_refresh(keys_source BIGINT[], keys_scenario BIGINT[],
                                         keys_environment BIGINT[]) RETURNS void AS $$
    DELETE FROM plan_pair_latest l
     USING unnest(keys_source, keys_scenario, keys_environment) AS k(src, s, e)
     WHERE l.source_execution_id = k.src AND l.scenario_id = k.s AND l.environment_id = k.e;
    INSERT INTO plan_pair_latest
    SELECT p.source_execution_id, p.scenario_id, p.environment_id, max(p.attempt),
           (array_agg(p.execution_id ORDER BY p.attempt DESC))[1],
           (array_agg(p.status ORDER BY p.attempt DESC))[1],
           (array_agg(p.reason ORDER BY p.attempt DESC))[1],
           count(*),
           min(p.attempt) FILTER (WHERE p.status IN ('FAILED', 'ERROR')),
           max(p.attempt) FILTER (WHERE p.status = 'PASSED')
      FROM (SELECT DISTINCT * FROM unnest(keys_source, keys_scenario, keys_environment)) AS k(src, s, e)
      JOIN execution_pairs p
        ON p.source_execution_id = k.src AND p.scenario_id = k.s AND p.environment_id = k.e
     GROUP BY p.source_execution_id, p.scenario_id, p.environment_id;
$$ LANGUAGE sql
-- probes of the primary key and of the chain index, never a scan of either
SET enable_hashjoin = off SET enable_mergejoin = off;

CREATE FUNCTION plan_pair_latest_inserted() RETURNS trigger AS $$
BEGIN
    INSERT INTO plan_pair_latest AS l
    SELECT n.source_execution_id, n.scenario_id, n.environment_id, max(n.attempt),
           (array_agg(n.execution_id ORDER BY n.attempt DESC))[1],
           (array_agg(n.status ORDER BY n.attempt DESC))[1],
           (array_agg(n.reason ORDER BY n.attempt DESC))[1],
           count(*),
           min(n.attempt) FILTER (WHERE n.status IN ('FAILED', 'ERROR')),
           max(n.attempt) FILTER (WHERE n.status = 'PASSED')
      FROM new_pairs n
     GROUP BY n.source_execution_id, n.scenario_id, n.environment_id
     -- rows locked in key order, as the update trigger does: a rerun and a
     -- results batch that share pairs never wait for each other in a circle
     ORDER BY n.source_execution_id, n.scenario_id, n.environment_id
        ON CONFLICT (source_execution_id, scenario_id, environment_id) DO UPDATE
       SET attempt = greatest(l.attempt, EXCLUDED.attempt),
           execution_id = CASE WHEN EXCLUDED.attempt >= l.attempt THEN EXCLUDED.execution_id
                               ELSE l.execution_id END,
           status = CASE WHEN EXCLUDED.attempt >= l.attempt THEN EXCLUDED.status ELSE l.status END,
           reason = CASE WHEN EXCLUDED.attempt >= l.attempt THEN EXCLUDED.reason ELSE l.reason END,
           attempt_count = l.attempt_count + EXCLUDED.attempt_count,
           first_failed = least(l.first_failed, EXCLUDED.first_failed),
           last_passed = greatest(l.last_passed, EXCLUDED.last_passed);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE FUNCTION plan_pair_latest_updated() RETURNS trigger AS $$
DECLARE
    v_src BIGINT[];
    v_s BIGINT[];
    v_e BIGINT[];
BEGIN
    UPDATE plan_pair_latest l
       SET status = CASE WHEN n.attempt = l.attempt THEN n.status ELSE l.status END,
           reason = CASE WHEN n.attempt = l.attempt THEN n.reason ELSE l.reason END,
           first_failed = least(l.first_failed, n.first_failed),
           last_passed = greatest(l.last_passed, n.last_passed)
      FROM (SELECT DISTINCT ON (u.source_execution_id, u.scenario_id, u.environment_id)
                   u.source_execution_id, u.scenario_id, u.environment_id, u.attempt, u.status,
                   u.reason,
                   min(u.attempt) FILTER (WHERE u.status IN ('FAILED', 'ERROR')) OVER w AS first_failed,
                   max(u.attempt) FILTER (WHERE u.status = 'PASSED') OVER w AS last_passed
              FROM new_pairs u
            WINDOW w AS (PARTITION BY u.source_execution_id, u.scenario_id, u.environment_id)
             ORDER BY u.source_execution_id, u.scenario_id, u.environment_id, u.attempt DESC) n
     WHERE l.source_execution_id = n.source_execution_id AND l.scenario_id = n.scenario_id
       AND l.environment_id = n.environment_id;
    -- a terminal status changed (never on the service's paths: a terminal
    -- status is final; SQL of tests and benchmarks): those pairs from their
    -- chains. The attempt and the primary key of a pair never change.
    IF EXISTS (SELECT 1 FROM old_pairs o WHERE o.status IN ('PASSED', 'FAILED', 'ERROR')) THEN
        -- two transition tables: hashed, not a nested loop (the function's
        -- setting is restored when it returns)
        PERFORM set_config('enable_hashjoin', 'on', true);
        SELECT array_agg(o.source_execution_id), array_agg(o.scenario_id),
               array_agg(o.environment_id) INTO v_src, v_s, v_e
          FROM old_pairs o JOIN new_pairs n
            ON n.execution_id = o.execution_id AND n.scenario_id = o.scenario_id
           AND n.environment_id = o.environment_id
         WHERE o.status IN ('PASSED', 'FAILED', 'ERROR') AND n.status <> o.status;
    END IF;
    IF v_src IS NOT NULL THEN
        PERFORM plan_pair_latest_refresh(v_src, v_s, v_e);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql
-- the transition table has no statistics: without these, PostgreSQL hashes
-- the whole read model for a batch of 250 results (a sequential scan)
SET enable_hashjoin = off SET enable_mergejoin = off;

CREATE FUNCTION plan_pair_latest_deleted() RETURNS trigger AS $$
DECLARE
    v_src BIGINT[];
    v_s BIGINT[];
    v_e BIGINT[];
BEGIN
    SELECT array_agg(k.src), array_agg(k.s), array_agg(k.e) INTO v_src, v_s, v_e
      FROM (SELECT DISTINCT o.source_execution_id AS src, o.scenario_id AS s,
                   o.environment_id AS e FROM old_pairs o) k;
    IF v_src IS NOT NULL THEN
        PERFORM plan_pair_latest_refresh(v_src, v_s, v_e);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE FUNCTION plan_pair_latest_truncated() RETURNS trigger AS $$
BEGIN
    TRUNCATE plan_pair_latest;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER plan_pair_latest_inserted
    AFTER INSERT ON execution_pairs REFERENCING NEW TABLE AS new_pairs
    FOR EACH STATEMENT EXECUTE FUNCTION plan_pair_latest_inserted();
CREATE TRIGGER plan_pair_latest_updated
    AFTER UPDATE ON execution_pairs REFERENCING OLD TABLE AS old_pairs NEW TABLE AS new_pairs
    FOR EACH STATEMENT EXECUTE FUNCTION plan_pair_latest_updated();
CREATE TRIGGER plan_pair_latest_deleted
    AFTER DELETE ON execution_pairs REFERENCING OLD TABLE AS old_pairs
    FOR EACH STATEMENT EXECUTE FUNCTION plan_pair_latest_deleted();
CREATE TRIGGER plan_pair_latest_truncated
    AFTER TRUNCATE ON execution_pairs
    FOR EACH STATEMENT EXECUTE FUNCTION plan_pair_latest_truncated();

-- the pairs written before this migration
SELECT plan_pair_latest_refresh(array_agg(k.src), array_agg(k.s), array_agg(k.e))
  FROM (SELECT DISTINCT source_execution_id AS src, scenario_id AS s, environment_id AS e
          FROM execution_pairs) k;
