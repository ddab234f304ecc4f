-- The catalogue a rerun is checked against: users, projects and their members,
-- scenarios, environments, and plans with their scenarios and environments.
-- Ids come from the platform (the fixture gives them), so none is generated here.

CREATE TABLE users (
    id BIGINT PRIMARY KEY CHECK (id > 0),
    username TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT TRUE
);

CREATE TABLE projects (
    id BIGINT PRIMARY KEY CHECK (id > 0),
    name TEXT NOT NULL
);

CREATE TABLE project_members (
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (project_id, user_id)
);
CREATE INDEX project_members_user_id_idx ON project_members (user_id);

CREATE TABLE scenarios (
    id BIGINT PRIMARY KEY CHECK (id > 0),
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name TEXT NOT NULL
);
CREATE INDEX scenarios_project_id_idx ON scenarios (project_id);

CREATE TABLE environments (
    id BIGINT PRIMARY KEY CHECK (id > 0),
    name TEXT NOT NULL,
    platform TEXT NOT NULL,
    version TEXT NOT NULL
);

CREATE TABLE plans (
    id BIGINT PRIMARY KEY CHECK (id > 0),
    project_id BIGINT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name TEXT NOT NULL
);
CREATE INDEX plans_project_id_idx ON plans (project_id);

CREATE TABLE plan_scenarios (
    plan_id BIGINT NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    scenario_id BIGINT NOT NULL REFERENCES scenarios (id) ON DELETE CASCADE,
    PRIMARY KEY (plan_id, scenario_id)
);

CREATE TABLE plan_environments (
    plan_id BIGINT NOT NULL REFERENCES plans (id) ON DELETE CASCADE,
    environment_id BIGINT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    PRIMARY KEY (plan_id, environment_id)
);
