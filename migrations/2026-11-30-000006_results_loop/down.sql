ALTER TABLE dispatches DROP COLUMN message_type;
DROP INDEX executions_plan_requested_idx;
ALTER TABLE executions DROP COLUMN open_pairs;
DROP INDEX execution_pairs_in_flight_idx;
DROP INDEX execution_pairs_message_id_idx;
ALTER TABLE execution_pairs
    DROP COLUMN message_id, DROP COLUMN started_at, DROP COLUMN finished_at,
    DROP COLUMN duration_ms, DROP COLUMN report_url, DROP COLUMN detail;
DELETE FROM execution_pairs WHERE status = 'RUNNING';
ALTER TABLE execution_pairs DROP CONSTRAINT execution_pairs_status_check;
ALTER TABLE execution_pairs ADD CONSTRAINT execution_pairs_status_check
    CHECK (status IN ('QUEUED', 'PASSED', 'FAILED', 'ERROR', 'SKIPPED', 'ABORTED'));
ALTER TABLE plans DROP COLUMN framework_type;
