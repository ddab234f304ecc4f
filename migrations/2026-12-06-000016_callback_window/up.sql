-- Callbacks (contract, section 21): a failed delivery is tried again for
-- CALLBACK_RETRY_SECS from when the execution finished, that is from when its
-- delivery row was written (in the transaction that finished it), not from
-- its first attempt. Existing rows take their execution's finish.
ALTER TABLE callback_deliveries ADD COLUMN created_at TIMESTAMPTZ;
UPDATE callback_deliveries c
   SET created_at = coalesce(x.finished_at, c.first_attempt_at, now())
  FROM executions x
 WHERE x.id = c.execution_id;
ALTER TABLE callback_deliveries
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN created_at SET NOT NULL;
