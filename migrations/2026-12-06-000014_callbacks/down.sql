DROP TABLE callback_deliveries;
ALTER TABLE executions DROP COLUMN callback_url;
