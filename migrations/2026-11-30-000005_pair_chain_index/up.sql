-- The attempt of a pair is 1 + the times it ran in its source run's chain;
-- attempts in a chain are handed out one after another (the source run is
-- locked), so that count is the chain's highest attempt of the pair. Counting
-- the chain's rows made every rerun cost O(reruns of its source run) (17 ms
-- after ~800 reruns of one run in the benchmark's soak); with the chain's
-- source on each pair and an index on it, the highest attempt is one index
-- probe.

ALTER TABLE execution_pairs ADD COLUMN source_execution_id BIGINT;

UPDATE execution_pairs p
   SET source_execution_id = coalesce(x.source_execution_id, x.id)
  FROM executions x
 WHERE x.id = p.execution_id;

-- filled on insert from the execution when the writer does not give it (the
-- rerun's one-statement write gives it: its execution row, inserted by the
-- same statement, is not visible to a trigger)
CREATE FUNCTION execution_pairs_set_source() RETURNS trigger AS $$
BEGIN
    IF NEW.source_execution_id IS NULL THEN
        SELECT coalesce(x.source_execution_id, x.id) INTO NEW.source_execution_id
          FROM executions x WHERE x.id = NEW.execution_id;
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER execution_pairs_set_source
    BEFORE INSERT ON execution_pairs
    FOR EACH ROW EXECUTE FUNCTION execution_pairs_set_source();

ALTER TABLE execution_pairs ALTER COLUMN source_execution_id SET NOT NULL;

CREATE INDEX execution_pairs_chain_idx
    ON execution_pairs (source_execution_id, scenario_id, environment_id, attempt DESC);
