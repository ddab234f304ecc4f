-- Part two of the contract (sections 6-13): runs, results from runners,
-- events, reading back.

-- a plan may name its framework type (contract, section 13)
ALTER TABLE plans ADD COLUMN framework_type TEXT;

-- pair statuses gain RUNNING; a pair carries its message id (the key a
-- runner's result names) and what the results report
ALTER TABLE execution_pairs DROP CONSTRAINT execution_pairs_status_check;
ALTER TABLE execution_pairs ADD CONSTRAINT execution_pairs_status_check
    CHECK (status IN ('QUEUED', 'RUNNING', 'PASSED', 'FAILED', 'ERROR', 'SKIPPED', 'ABORTED'));
ALTER TABLE execution_pairs
    ADD COLUMN message_id UUID,
    ADD COLUMN started_at TIMESTAMPTZ,
    ADD COLUMN finished_at TIMESTAMPTZ,
    ADD COLUMN duration_ms BIGINT CHECK (duration_ms >= 0),
    ADD COLUMN report_url TEXT,
    ADD COLUMN detail TEXT;

UPDATE execution_pairs p
   SET message_id = d.message_id
  FROM dispatches d
 WHERE d.execution_id = p.execution_id
   AND (d.body::jsonb ->> 'scenarioId')::bigint = p.scenario_id
   AND (d.body::jsonb ->> 'environmentId')::bigint = p.environment_id;

-- "the pair a result names": one probe
CREATE UNIQUE INDEX execution_pairs_message_id_idx ON execution_pairs (message_id)
    WHERE message_id IS NOT NULL;
-- "the in-flight pairs of a source run's chain" (the 1014 guard, onInFlight)
CREATE INDEX execution_pairs_in_flight_idx
    ON execution_pairs (source_execution_id, scenario_id, environment_id, attempt)
    WHERE status IN ('QUEUED', 'RUNNING');

-- an execution counts its pairs not yet terminal: it turns FINISHED (and
-- announces it) when the count reaches 0, without reading its pairs
ALTER TABLE executions ADD COLUMN open_pairs INTEGER NOT NULL DEFAULT 0 CHECK (open_pairs >= 0);
UPDATE executions x
   SET open_pairs = (SELECT count(*) FROM execution_pairs p
                      WHERE p.execution_id = x.id AND p.status IN ('QUEUED', 'RUNNING'));
-- "the plan's executions, newest first" (cursor pages)
CREATE INDEX executions_plan_requested_idx ON executions (plan_id, requested_at DESC, id DESC);

-- the outbox carries more than one kind of message: scenario.rerun,
-- scenario.run and execution.finished (to the events exchange)
ALTER TABLE dispatches ADD COLUMN message_type TEXT NOT NULL DEFAULT 'scenario.rerun'
    CHECK (message_type IN ('scenario.rerun', 'scenario.run', 'execution.finished'));
ALTER TABLE dispatches ALTER COLUMN message_type DROP DEFAULT;
