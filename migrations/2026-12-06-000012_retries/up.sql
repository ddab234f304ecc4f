-- Part three of the contract, section 18: automatic retries.

-- a plan's retry budget for its executions (0-5); a run or rerun body's
-- retryFailed wins over it
ALTER TABLE plans ADD COLUMN retry_failed INTEGER NOT NULL DEFAULT 0
    CHECK (retry_failed BETWEEN 0 AND 5);

-- who asked for an execution: a user, or plan-queue retrying the failures of
-- the execution retry_of; retry_budget is how many automatic reruns may still
-- follow it (the body's or the plan's retryFailed, one less per retry)
ALTER TABLE executions
    ADD COLUMN trigger TEXT NOT NULL DEFAULT 'USER' CHECK (trigger IN ('USER', 'RETRY')),
    ADD COLUMN retry_of BIGINT REFERENCES executions (id) ON DELETE CASCADE,
    ADD COLUMN retry_budget INTEGER NOT NULL DEFAULT 0 CHECK (retry_budget BETWEEN 0 AND 5),
    ADD CONSTRAINT executions_retry_of_check CHECK ((trigger = 'RETRY') = (retry_of IS NOT NULL));

-- an execution causes at most one automatic rerun: the database refuses a
-- second, whatever path would write it; also the lookup of retryExecutionId
CREATE UNIQUE INDEX executions_retry_of_idx ON executions (retry_of)
    WHERE retry_of IS NOT NULL;
