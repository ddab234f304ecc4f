DROP TRIGGER execution_pairs_set_source ON execution_pairs;
CREATE TRIGGER execution_pairs_set_source
    BEFORE INSERT ON execution_pairs
    FOR EACH ROW EXECUTE FUNCTION execution_pairs_set_source();

DROP TRIGGER execution_pairs_bump_results_version ON execution_pairs;
DROP TRIGGER executions_bump_results_version ON executions;
CREATE CONSTRAINT TRIGGER executions_bump_results_version
    AFTER INSERT OR UPDATE ON executions DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bump_results_version_of_execution();
CREATE CONSTRAINT TRIGGER execution_pairs_bump_results_version
    AFTER INSERT OR UPDATE ON execution_pairs DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION bump_results_version_of_pair();
