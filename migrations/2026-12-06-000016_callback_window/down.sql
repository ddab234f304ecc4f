ALTER TABLE callback_deliveries DROP COLUMN created_at;
