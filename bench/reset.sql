-- Back to the seeded state between phases: drop every rerun (its pairs and
-- dispatch rows go with it by cascade), so each phase starts from the same data.
\set ON_ERROR_STOP on
DELETE FROM executions WHERE kind = 'RERUN';
TRUNCATE idempotency_keys;
VACUUM ANALYZE executions, execution_pairs, dispatches;
