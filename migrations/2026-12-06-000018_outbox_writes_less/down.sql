CREATE CONSTRAINT TRIGGER dispatches_published_bump_results_version
    AFTER UPDATE OF published_at ON dispatches DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (OLD.published_at IS NULL AND NEW.published_at IS NOT NULL
          AND NEW.execution_id IS NOT NULL)
    EXECUTE FUNCTION bump_results_version_of_pair();
