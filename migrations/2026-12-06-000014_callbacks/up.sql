-- Callbacks (contract, section 21): the callbackUrl of a run or rerun (an
-- automatic retry inherits it), and one delivery per execution.finished
-- event of an execution that has one, written in the transaction that
-- finished it and sent by the deliverer of `serve` (src/callbacks/).
ALTER TABLE executions ADD COLUMN callback_url TEXT;

CREATE TABLE callback_deliveries (
    -- the execution.finished event's eventId, sent as X-PlanQueue-Delivery
    event_id UUID PRIMARY KEY,
    execution_id BIGINT NOT NULL REFERENCES executions (id),
    url TEXT NOT NULL,
    -- the exact bytes of the event's body, signed and POSTed
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    -- when the deliverer may try next; NULL once delivered or given up
    next_attempt_at TIMESTAMPTZ DEFAULT now(),
    -- a deliverer's claim on the row; an expired lease may be claimed again
    lease_until TIMESTAMPTZ,
    last_status INTEGER,
    last_error TEXT,
    first_attempt_at TIMESTAMPTZ,
    last_attempt_at TIMESTAMPTZ,
    delivered_at TIMESTAMPTZ,
    given_up_at TIMESTAMPTZ
);

-- the deliverer's claim: due rows in order
CREATE INDEX callback_deliveries_due_idx ON callback_deliveries (next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
CREATE INDEX callback_deliveries_execution_idx ON callback_deliveries (execution_id);
