ALTER TABLE execution_pairs DROP COLUMN published_at;
