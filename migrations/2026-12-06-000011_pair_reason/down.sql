DELETE FROM dispatches WHERE execution_id IS NULL;
ALTER TABLE dispatches ALTER COLUMN execution_id SET NOT NULL;
DELETE FROM dispatches WHERE message_type IN ('execution.cancelled', 'result.rejected');
ALTER TABLE dispatches DROP CONSTRAINT dispatches_message_type_check;
ALTER TABLE dispatches ADD CONSTRAINT dispatches_message_type_check
    CHECK (message_type IN ('scenario.rerun', 'scenario.run', 'execution.finished'));
DROP INDEX execution_pairs_running_started_idx;
DROP INDEX executions_open_requested_idx;
DROP INDEX execution_pairs_chain_idx;
CREATE INDEX execution_pairs_chain_idx
    ON execution_pairs (source_execution_id, scenario_id, environment_id, attempt DESC)
    INCLUDE (execution_id, status);
ALTER TABLE plans DROP COLUMN run_timeout_secs;
ALTER TABLE execution_pairs DROP COLUMN reason;
