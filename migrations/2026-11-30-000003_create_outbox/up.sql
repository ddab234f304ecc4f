-- The transactional outbox: one dispatch row per queued pair, written in the
-- rerun's transaction and published by the relay. The body is stored as the
-- exact bytes that go on the wire, so a re-publish is byte-identical.

CREATE TABLE dispatches (
    id BIGSERIAL PRIMARY KEY,
    message_id UUID NOT NULL UNIQUE,
    execution_id BIGINT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    routing_key TEXT NOT NULL,
    body TEXT NOT NULL,
    correlation_id TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ,
    -- publish attempts so far; drives the back-off
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- a relay's claim on the row (lease); expired leases may be claimed again
    locked_until TIMESTAMPTZ,
    last_error TEXT
);
CREATE INDEX dispatches_pending_idx ON dispatches (next_attempt_at, id)
    WHERE published_at IS NULL;
CREATE INDEX dispatches_execution_id_idx ON dispatches (execution_id);

-- Idempotency-Key: the first successful response to a key, per token subject.
CREATE TABLE idempotency_keys (
    subject TEXT NOT NULL,
    key TEXT NOT NULL,
    -- the normalised request the key was first used with
    request TEXT NOT NULL,
    status_code SMALLINT NOT NULL,
    response_body TEXT NOT NULL,
    execution_id BIGINT REFERENCES executions (id) ON DELETE CASCADE,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, key)
);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
