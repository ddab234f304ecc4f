DROP TRIGGER dispatches_published_bump_results_version ON dispatches;
DROP TRIGGER execution_pairs_bump_results_version ON execution_pairs;
DROP TRIGGER executions_bump_results_version ON executions;
DROP FUNCTION bump_results_version_of_pair();
DROP FUNCTION bump_results_version_of_execution();
DROP FUNCTION bump_results_version(BIGINT, TEXT);
ALTER TABLE plans DROP COLUMN results_version;
