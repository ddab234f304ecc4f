-- A rerun and a run in one round trip each, a rerun locked per pair (issue 11):
-- the schema part. The server functions that do it (queue_rerun, queue_run,
-- plan_access, written_by_call) were first created here; they are source now,
-- one file each under src/db/functions/, applied after the versioned
-- migrations whenever their text changes (src/db/functions.rs, issue 17), so
-- this migration keeps only its schema changes. A database that applied the
-- earlier text of this migration keeps its tables as they are and gets the
-- functions' current text from that step.
--

-- each dispatch row records the exchange (AMQP_EXCHANGE) of the instance
-- that wrote it (issue 12; an event goes to that exchange's `.events`), so
-- that instances with different exchanges may share one database: a relay
-- claims only its exchange's rows, oldest first, through the index below.
-- Rows written before this migration have none; a relay adopts them when it
-- starts (src/relay/upkeep.rs).
ALTER TABLE dispatches ADD COLUMN exchange TEXT;
CREATE INDEX dispatches_unpublished_exchange_idx ON dispatches (exchange, id)
    WHERE published_at IS NULL;
DROP INDEX dispatches_unpublished_id_idx;
