DROP TABLE execution_pairs;
DROP TABLE executions;
