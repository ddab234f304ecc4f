-- Contract, section 22: reads a live page can poll. Every read of a plan's
-- executions, results and flakiness (and of one execution) answers with an
-- ETag built from the plan's `results_version`, so that a request whose
-- If-None-Match is still current costs one indexed lookup (the plan's
-- primary key), not the read.
--
-- The counter grows with every transaction that can change one of those
-- answers; triggers keep it, so no write path can forget it:
--   * execution_pairs inserted or updated (a run or rerun queued, a result
--     applied, a pair ended by a cancel, a deadline or a dead letter);
--   * executions inserted or updated (open pairs, started, finished);
--   * a dispatch of an execution first published (a pair's `publishedAt`).
-- Deferred constraint triggers: they run at commit, so the plan's row is
-- locked only for the commit itself (reruns of a plan do not wait for each
-- other's whole transaction), and each transaction bumps each plan once
-- (the executions and plans already handled are remembered in a
-- transaction-local setting), however many rows it wrote. The update
-- changes no indexed column of plans: a HOT update.
ALTER TABLE plans ADD COLUMN results_version BIGINT NOT NULL DEFAULT 0;

-- Bumps the results_version of the plan of `execution`, once per
-- transaction and plan; `seen` is the transaction's setting, which already
-- told that `execution` was not handled yet.
CREATE FUNCTION bump_results_version(execution BIGINT, seen TEXT) RETURNS void AS $$
DECLARE
    plan BIGINT;
BEGIN
    SELECT plan_id INTO plan FROM executions WHERE id = execution;
    seen := seen || ',x' || execution || ',';
    IF plan IS NOT NULL AND position(',p' || plan || ',' IN seen) = 0 THEN
        UPDATE plans SET results_version = results_version + 1 WHERE id = plan;
        seen := seen || ',p' || plan || ',';
    END IF;
    PERFORM set_config('plan_queue.read_versions_seen', seen, true);
END
$$ LANGUAGE plpgsql;

-- The triggers' own test is a simple expression (no query): a transaction
-- writing many pairs of one execution pays one lookup, not one per pair.
CREATE FUNCTION bump_results_version_of_execution() RETURNS trigger AS $$
DECLARE
    seen TEXT := coalesce(current_setting('plan_queue.read_versions_seen', true), '');
BEGIN
    IF position(',x' || NEW.id || ',' IN seen) = 0 THEN
        PERFORM bump_results_version(NEW.id, seen);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE FUNCTION bump_results_version_of_pair() RETURNS trigger AS $$
DECLARE
    seen TEXT := coalesce(current_setting('plan_queue.read_versions_seen', true), '');
BEGIN
    IF NEW.execution_id IS NOT NULL
       AND position(',x' || NEW.execution_id || ',' IN seen) = 0 THEN
        PERFORM bump_results_version(NEW.execution_id, seen);
    END IF;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE CONSTRAINT TRIGGER executions_bump_results_version
    AFTER INSERT OR UPDATE ON executions DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bump_results_version_of_execution();

CREATE CONSTRAINT TRIGGER execution_pairs_bump_results_version
    AFTER INSERT OR UPDATE ON execution_pairs DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bump_results_version_of_pair();

CREATE CONSTRAINT TRIGGER dispatches_published_bump_results_version
    AFTER UPDATE OF published_at ON dispatches DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (OLD.published_at IS NULL AND NEW.published_at IS NOT NULL
          AND NEW.execution_id IS NOT NULL)
    EXECUTE FUNCTION bump_results_version_of_pair();
