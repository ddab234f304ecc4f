-- Part three of the contract, section 20: the catalogue over HTTP.
--
-- Nothing is ever deleted: `active = false` retires an entity (users have
-- had the column since migration 1). Each entity carries the version the
-- catalogue answers (and `If-Match` compares): 1 when first written, one
-- more with each change. Named catalog_version, as environments already
-- have a `version` (the platform's version, "14").
ALTER TABLE projects ADD COLUMN active BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE scenarios ADD COLUMN active BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE environments ADD COLUMN active BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE plans ADD COLUMN active BOOLEAN NOT NULL DEFAULT TRUE;

ALTER TABLE users ADD COLUMN catalog_version BIGINT NOT NULL DEFAULT 1 CHECK (catalog_version > 0);
ALTER TABLE projects ADD COLUMN catalog_version BIGINT NOT NULL DEFAULT 1 CHECK (catalog_version > 0);
ALTER TABLE scenarios ADD COLUMN catalog_version BIGINT NOT NULL DEFAULT 1 CHECK (catalog_version > 0);
ALTER TABLE environments ADD COLUMN catalog_version BIGINT NOT NULL DEFAULT 1 CHECK (catalog_version > 0);
ALTER TABLE plans ADD COLUMN catalog_version BIGINT NOT NULL DEFAULT 1 CHECK (catalog_version > 0);

-- the plans that list a scenario or an environment (the checks of a
-- scenario's project against its plans, the reads of the catalogue)
CREATE INDEX plan_scenarios_scenario_id_idx ON plan_scenarios (scenario_id);
CREATE INDEX plan_environments_environment_id_idx ON plan_environments (environment_id);
