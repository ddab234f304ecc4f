-- Part three of the contract, sections 14-17: every pair ends.

-- why plan-queue itself ended a pair (section 14); NULL when a runner's
-- result set its status
ALTER TABLE execution_pairs ADD COLUMN reason TEXT
    CHECK (reason IN ('CANCELLED', 'QUEUE_TIMEOUT', 'RUN_TIMEOUT', 'DEAD_LETTERED'));

-- a plan's own run deadline (section 15), seconds; NULL: RUN_TIMEOUT_SECS
ALTER TABLE plans ADD COLUMN run_timeout_secs INTEGER
    CHECK (run_timeout_secs BETWEEN 5 AND 604800);

-- the consolidated results show the latest attempt's reason: the chain
-- index covers it, so that read stays an index-only scan (migration 7)
DROP INDEX execution_pairs_chain_idx;
CREATE INDEX execution_pairs_chain_idx
    ON execution_pairs (source_execution_id, scenario_id, environment_id, attempt DESC)
    INCLUDE (execution_id, status, reason);

-- the deadline sweep's lookups, each the first rows of a small partial index:
-- executions with pairs in flight by when they were requested (queue
-- deadline; also the age of the oldest in-flight pair) ...
CREATE INDEX executions_open_requested_idx ON executions (requested_at)
    WHERE open_pairs > 0;
-- ... and running pairs by when they started (run deadline)
CREATE INDEX execution_pairs_running_started_idx ON execution_pairs (started_at)
    WHERE status = 'RUNNING';

-- the outbox carries two more events (sections 16, 17); a rejected result
-- may name no execution
ALTER TABLE dispatches DROP CONSTRAINT dispatches_message_type_check;
ALTER TABLE dispatches ADD CONSTRAINT dispatches_message_type_check
    CHECK (message_type IN ('scenario.rerun', 'scenario.run', 'execution.finished',
                            'execution.cancelled', 'result.rejected'));
ALTER TABLE dispatches ALTER COLUMN execution_id DROP NOT NULL;
