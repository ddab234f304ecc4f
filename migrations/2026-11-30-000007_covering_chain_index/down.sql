DROP INDEX execution_pairs_chain_idx;
CREATE INDEX execution_pairs_chain_idx
    ON execution_pairs (source_execution_id, scenario_id, environment_id, attempt DESC);
