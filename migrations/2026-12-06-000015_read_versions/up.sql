-- Contract, section 22: reads a live page can poll. Every read of a plan's
-- executions, results and flakiness (and of one execution) answers with an
-- ETag built from the plan's `results_version`, so that a request whose
-- If-None-Match is still current costs one indexed lookup (the plan's
-- primary key), not the read.
--
-- The counter grows with every write that can change one of those answers;
-- triggers keep it, so no write path can forget it:
--   * execution_pairs inserted or updated (a run or rerun queued, a result
--     applied, a pair ended by a cancel, a deadline or a dead letter);
--   * executions inserted or updated (open pairs, started, finished);
--   * a dispatch of an execution first published (a pair's `publishedAt`).
-- Statement-level triggers with transition tables: one bump per plan and
-- statement whatever the number of rows, plans locked in id order. The
-- update changes no indexed column of plans, so it is a HOT update.
ALTER TABLE plans ADD COLUMN results_version BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION bump_results_version_of_executions() RETURNS trigger AS $$
BEGIN
    UPDATE plans p SET results_version = p.results_version + 1
      FROM (SELECT id FROM plans
             WHERE id IN (SELECT plan_id FROM changed_executions)
             ORDER BY id FOR NO KEY UPDATE) l
     WHERE p.id = l.id;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER executions_inserted_bump_results_version
    AFTER INSERT ON executions REFERENCING NEW TABLE AS changed_executions
    FOR EACH STATEMENT EXECUTE FUNCTION bump_results_version_of_executions();
CREATE TRIGGER executions_updated_bump_results_version
    AFTER UPDATE ON executions REFERENCING NEW TABLE AS changed_executions
    FOR EACH STATEMENT EXECUTE FUNCTION bump_results_version_of_executions();

CREATE FUNCTION bump_results_version_of_pairs() RETURNS trigger AS $$
BEGIN
    UPDATE plans p SET results_version = p.results_version + 1
      FROM (SELECT id FROM plans
             WHERE id IN (SELECT x.plan_id FROM executions x
                           WHERE x.id IN (SELECT execution_id FROM changed_pairs))
             ORDER BY id FOR NO KEY UPDATE) l
     WHERE p.id = l.id;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER execution_pairs_inserted_bump_results_version
    AFTER INSERT ON execution_pairs REFERENCING NEW TABLE AS changed_pairs
    FOR EACH STATEMENT EXECUTE FUNCTION bump_results_version_of_pairs();
CREATE TRIGGER execution_pairs_updated_bump_results_version
    AFTER UPDATE ON execution_pairs REFERENCING NEW TABLE AS changed_pairs
    FOR EACH STATEMENT EXECUTE FUNCTION bump_results_version_of_pairs();

CREATE FUNCTION bump_results_version_of_dispatches() RETURNS trigger AS $$
BEGIN
    UPDATE plans p SET results_version = p.results_version + 1
      FROM (SELECT id FROM plans
             WHERE id IN (SELECT x.plan_id FROM executions x
                           WHERE x.id IN (SELECT n.execution_id
                                            FROM published_new n JOIN published_old o USING (id)
                                           WHERE o.published_at IS NULL
                                             AND n.published_at IS NOT NULL))
             ORDER BY id FOR NO KEY UPDATE) l
     WHERE p.id = l.id;
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER dispatches_published_bump_results_version
    AFTER UPDATE ON dispatches
    REFERENCING NEW TABLE AS published_new OLD TABLE AS published_old
    FOR EACH STATEMENT EXECUTE FUNCTION bump_results_version_of_dispatches();
