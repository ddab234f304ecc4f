-- Executions of a plan: a full run ('RUN') or a rerun ('RERUN') made from a
-- source run, and one row per scenario-environment pair of each execution.

CREATE TABLE executions (
    id BIGSERIAL PRIMARY KEY,
    plan_id BIGINT NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('RUN', 'RERUN')),
    -- the full run a rerun was made from; NULL for a full run
    source_execution_id BIGINT REFERENCES executions (id) ON DELETE CASCADE,
    requested_by BIGINT NOT NULL REFERENCES users (id),
    framework_type TEXT,
    requested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at TIMESTAMPTZ,
    finished_at TIMESTAMPTZ,
    CHECK ((kind = 'RUN') = (source_execution_id IS NULL))
);
-- "the plan's latest full run"
CREATE INDEX executions_latest_run_idx ON executions (plan_id, requested_at DESC, id DESC)
    WHERE kind = 'RUN';
-- "the reruns made from a source run"
CREATE INDEX executions_source_execution_id_idx ON executions (source_execution_id)
    WHERE source_execution_id IS NOT NULL;

CREATE TABLE execution_pairs (
    execution_id BIGINT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    scenario_id BIGINT NOT NULL REFERENCES scenarios (id),
    environment_id BIGINT NOT NULL REFERENCES environments (id),
    status TEXT NOT NULL
        CHECK (status IN ('QUEUED', 'PASSED', 'FAILED', 'ERROR', 'SKIPPED', 'ABORTED')),
    attempt INTEGER NOT NULL CHECK (attempt >= 1),
    PRIMARY KEY (execution_id, scenario_id, environment_id)
);
-- the primary key serves "pairs of execution X for scenarios S"; attempts of a
-- pair across a run's chain are found through executions_source_execution_id_idx.
