-- The pairs of bench/loop-dataset.sql back to QUEUED (after pgbench wrote them).
\set ON_ERROR_STOP on
UPDATE execution_pairs SET status = 'QUEUED', started_at = NULL, finished_at = NULL,
                           duration_ms = NULL, report_url = NULL, detail = NULL
 WHERE execution_id > 1000000;
UPDATE executions SET open_pairs = 1000, started_at = NULL, finished_at = NULL
 WHERE id > 1000000;
VACUUM ANALYZE executions, execution_pairs;
