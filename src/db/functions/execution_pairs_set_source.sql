-- execution_pairs_set_source: the trigger (BEFORE INSERT ON execution_pairs,
-- migration 5) that fills a pair's source_execution_id from its execution
-- when the writer does not give it: the execution's source run, or the
-- execution itself for a full run. queue_rerun and queue_run give it (their
-- execution row, inserted by the same statement, is not visible here).
CREATE OR REPLACE FUNCTION execution_pairs_set_source() RETURNS trigger AS $$
BEGIN
    IF NEW.source_execution_id IS NULL THEN
        SELECT coalesce(x.source_execution_id, x.id) INTO NEW.source_execution_id
          FROM executions x WHERE x.id = NEW.execution_id;
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
