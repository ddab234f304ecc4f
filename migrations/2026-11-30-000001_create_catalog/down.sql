DROP TABLE plan_environments;
DROP TABLE plan_scenarios;
DROP TABLE plans;
DROP TABLE environments;
DROP TABLE scenarios;
DROP TABLE project_members;
DROP TABLE projects;
DROP TABLE users;
