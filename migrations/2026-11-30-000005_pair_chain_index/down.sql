DROP INDEX execution_pairs_chain_idx;
DROP TRIGGER execution_pairs_set_source ON execution_pairs;
DROP FUNCTION execution_pairs_set_source();
ALTER TABLE execution_pairs DROP COLUMN source_execution_id;
