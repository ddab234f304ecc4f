DROP INDEX executions_retry_of_idx;
ALTER TABLE executions
    DROP CONSTRAINT executions_retry_of_check,
    DROP COLUMN retry_budget,
    DROP COLUMN retry_of,
    DROP COLUMN trigger;
ALTER TABLE plans DROP COLUMN retry_failed;
