-- Issue 22: a rerun that writes less. queue_rerun and queue_run, called in
-- a transaction that wrote nothing before (the service's one-statement
-- rerun and run), bump their plan's results_version themselves in their
-- last statement and record the new execution and its plan in the
-- transaction's setting `plan_queue.read_versions_seen` (migration 15) first.
-- The WHEN clauses below read that setting when a row is written (a
-- constraint trigger's WHEN is evaluated then, not at commit), so the rows
-- of an execution already handled queue no deferred event at all: no
-- plpgsql call and no after-trigger event per row at commit. Every other
-- writer (results, ends, cancels, retries, SQL of tests and benchmarks) is
-- unchanged: its rows' events are queued and bump the plan once at commit,
-- and the functions' own test (`bump_results_version_of_*`) stays.
DROP TRIGGER executions_bump_results_version ON executions;
DROP TRIGGER execution_pairs_bump_results_version ON execution_pairs;

CREATE CONSTRAINT TRIGGER executions_bump_results_version
    AFTER INSERT OR UPDATE ON executions DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (position(',x' || NEW.id || ','
                   IN coalesce(current_setting('plan_queue.read_versions_seen', true), '')) = 0)
    EXECUTE FUNCTION bump_results_version_of_execution();

CREATE CONSTRAINT TRIGGER execution_pairs_bump_results_version
    AFTER INSERT OR UPDATE ON execution_pairs DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (NEW.execution_id IS NOT NULL
          AND position(',x' || NEW.execution_id || ','
                       IN coalesce(current_setting('plan_queue.read_versions_seen', true), '')) = 0)
    EXECUTE FUNCTION bump_results_version_of_pair();

-- The pair's source run is filled from its execution only when the writer
-- does not give it (migration 5); queue_rerun and queue_run give it, so
-- their rows skip the plpgsql call.
DROP TRIGGER execution_pairs_set_source ON execution_pairs;
CREATE TRIGGER execution_pairs_set_source
    BEFORE INSERT ON execution_pairs
    FOR EACH ROW
    WHEN (NEW.source_execution_id IS NULL)
    EXECUTE FUNCTION execution_pairs_set_source();
