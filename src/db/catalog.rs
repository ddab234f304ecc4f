//! The catalogue plan-queue keeps a copy of (contract, section 20): users,
//! projects, scenarios, environments and plans, written only here, by
//! `PUT /catalog/{kind}/{id}`, `POST /catalog/import` and `plan-queue seed`
//! alike, so each of them refuses the same input with the same words.
//!
//! Rules:
//! * ids are given, not generated (section 5); nothing is ever deleted:
//!   `active: false` retires an entity and history keeps it;
//! * each entity has a version (`catalog_version`, migration 13): 1 when
//!   first written, one more with each change; a write that changes nothing
//!   keeps it. An expected version (`If-Match`) that is not the current one
//!   is [`CatalogError::VersionMismatch`] and nothing changes;
//! * a reference to an entity that does not exist (a plan's scenario, a
//!   project's member, …) is [`CatalogError::UnknownReference`], naming both;
//!   a plan's scenario of another project is [`CatalogError::ForeignScenario`];
//! * lists (a project's `memberIds`, a plan's `scenarioIds` and
//!   `environmentIds`) are sets: stored and answered in id order, once each.
//!
//! Concurrency: a write takes a transaction-scoped advisory lock on its
//! entity (kind and id) before it reads the current version, so writers of
//! one entity go one after another and none loses another's change (the
//! second compares with what the first committed); it reads the entities it
//! refers to `FOR SHARE`, so they cannot move to another project meanwhile.
//! The caller runs a write inside a transaction (one per `PUT`, one for a
//! whole import or seed).

use crate::db::models::MAX_RETRY_FAILED;
use crate::db::schema::{
    environments, plan_environments, plan_scenarios, plans, project_members, projects, scenarios,
    users,
};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};
use diesel::upsert::excluded;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The kinds of the catalogue, as `{kind}` spells them in the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Users,
    Projects,
    Scenarios,
    Environments,
    Plans,
}

impl Kind {
    /// Every kind, in the order an import writes them (each refers only to
    /// kinds before it).
    pub const ALL: [Kind; 5] = [
        Kind::Users,
        Kind::Projects,
        Kind::Scenarios,
        Kind::Environments,
        Kind::Plans,
    ];

    /// The kind a path segment names (`users`, `projects`, `scenarios`,
    /// `environments`, `plans`); `None` for anything else.
    pub fn from_path(segment: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.path() == segment)
    }

    /// The path segment and the fixture's key of the kind.
    pub fn path(self) -> &'static str {
        match self {
            Kind::Users => "users",
            Kind::Projects => "projects",
            Kind::Scenarios => "scenarios",
            Kind::Environments => "environments",
            Kind::Plans => "plans",
        }
    }

    /// One entity of the kind, as messages name it (`plan 614`).
    pub fn entity(self) -> &'static str {
        match self {
            Kind::Users => "user",
            Kind::Projects => "project",
            Kind::Scenarios => "scenario",
            Kind::Environments => "environment",
            Kind::Plans => "plan",
        }
    }
}

fn active_by_default() -> bool {
    true
}

/// A user (section 5); an inactive one may not run or rerun (code 1002).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct User {
    pub id: i64,
    pub username: String,
    #[serde(default = "active_by_default")]
    pub active: bool,
}

/// A project and its members (section 5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Project {
    pub id: i64,
    pub name: String,
    /// Users who may run the project's plans (section 4); each must exist.
    #[serde(default)]
    pub member_ids: Vec<i64>,
    #[serde(default = "active_by_default")]
    pub active: bool,
}

/// A scenario of a project (section 5); a retired one is not run (section 20).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Scenario {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    #[serde(default = "active_by_default")]
    pub active: bool,
}

/// An environment (section 5); `version` is the platform's (`"14"`), not the
/// catalogue's. A retired one is not run (section 20).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Environment {
    pub id: i64,
    pub name: String,
    pub platform: String,
    pub version: String,
    #[serde(default = "active_by_default")]
    pub active: bool,
}

/// A plan with its scenarios and environments (sections 5, 13, 15, 20).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Plan {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    /// The framework type its runs use (section 13); stored trimmed and in
    /// upper case; a run or rerun naming another is 1023 (section 20).
    #[serde(default)]
    pub framework_type: Option<String>,
    /// The plan's own run deadline, seconds, 5–604800 (section 15).
    #[serde(default)]
    pub run_timeout_secs: Option<i32>,
    /// Automatic reruns of an execution's `FAILED` and `ERROR` pairs, 0–5,
    /// default 0; a run or rerun body's `retryFailed` wins (section 18).
    #[serde(default)]
    pub retry_failed: i32,
    /// Scenarios of the plan's project, each existing.
    #[serde(default)]
    pub scenario_ids: Vec<i64>,
    #[serde(default)]
    pub environment_ids: Vec<i64>,
    #[serde(default = "active_by_default")]
    pub active: bool,
}

/// One entity of any kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Entity {
    User(User),
    Project(Project),
    Scenario(Scenario),
    Environment(Environment),
    Plan(Plan),
}

/// An entity as stored, with its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub entity: Entity,
    pub version: i64,
}

impl Stored {
    /// The answer's `data` (section 20): the entity's fields with `id` and
    /// `version`. An environment's own `version` (the platform's) keeps its
    /// key; its catalogue version is the answer's `ETag`.
    pub fn to_json(&self) -> Value {
        let mut value = serde_json::to_value(&self.entity).unwrap_or(Value::Null);
        if let (Value::Object(map), false) = (&mut value, self.entity.kind() == Kind::Environments)
        {
            map.insert("version".to_owned(), Value::from(self.version));
        }
        value
    }
}

/// Why a catalogue write was refused; [`CatalogError::Database`] is the
/// database's own failure, every other a client's mistake that changed
/// nothing. The texts are the contract's (1001, 1021).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// 400 code 1001: the body is not an entity of its kind (the text names
    /// the field).
    #[error("{entity} {id}: {problem}")]
    Invalid {
        entity: &'static str,
        id: i64,
        problem: String,
    },
    /// 400 code 1001: `from` refers to an entity that does not exist.
    #[error("{from} {from_id}: {entity} {id} does not exist")]
    UnknownReference {
        from: &'static str,
        from_id: i64,
        entity: &'static str,
        id: i64,
    },
    /// 400 code 1001: a plan's scenario belongs to another project.
    #[error("plan {plan_id}: scenario {scenario_id} is in project {scenario_project_id}, not in the plan's project {project_id}")]
    ForeignScenario {
        plan_id: i64,
        project_id: i64,
        scenario_id: i64,
        scenario_project_id: i64,
    },
    /// 400 code 1001: a scenario would move to another project than that
    /// of a plan that lists it.
    #[error("scenario {scenario_id}: plan {plan_id} of project {plan_project_id} lists it")]
    ScenarioInPlan {
        scenario_id: i64,
        plan_id: i64,
        plan_project_id: i64,
    },
    /// 412 code 1021: the expected version is not the current one (0 for an
    /// entity never written).
    #[error("Version mismatch: current version is {0}")]
    VersionMismatch(i64),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

impl Entity {
    /// The entity of `kind` that the JSON `body` (a fixture row without
    /// `id`, section 20) describes, with `id`; normalised and checked.
    ///
    /// Errors: [`CatalogError::Invalid`] for a body that is not such a row
    /// (unknown field, wrong type, an `id` other than `id`, a bad value).
    pub fn from_body(kind: Kind, id: i64, body: Value) -> Result<Entity, CatalogError> {
        let invalid = |problem: String| CatalogError::Invalid {
            entity: kind.entity(),
            id,
            problem,
        };
        let Value::Object(mut map) = body else {
            return Err(invalid("the body must be a JSON object".to_owned()));
        };
        if let Some(given) = map.get("id") {
            if given.as_i64() != Some(id) {
                return Err(invalid(format!("the body's id {given} is not the path's")));
            }
        }
        map.insert("id".to_owned(), Value::from(id));
        let row = Value::Object(map);
        let entity = match kind {
            Kind::Users => serde_json::from_value(row).map(Entity::User),
            Kind::Projects => serde_json::from_value(row).map(Entity::Project),
            Kind::Scenarios => serde_json::from_value(row).map(Entity::Scenario),
            Kind::Environments => serde_json::from_value(row).map(Entity::Environment),
            Kind::Plans => serde_json::from_value(row).map(Entity::Plan),
        }
        .map_err(|e| invalid(e.to_string()))?;
        entity.checked()
    }

    /// The kind of the entity.
    pub fn kind(&self) -> Kind {
        match self {
            Entity::User(_) => Kind::Users,
            Entity::Project(_) => Kind::Projects,
            Entity::Scenario(_) => Kind::Scenarios,
            Entity::Environment(_) => Kind::Environments,
            Entity::Plan(_) => Kind::Plans,
        }
    }

    /// The entity's id.
    pub fn id(&self) -> i64 {
        match self {
            Entity::User(u) => u.id,
            Entity::Project(p) => p.id,
            Entity::Scenario(s) => s.id,
            Entity::Environment(e) => e.id,
            Entity::Plan(p) => p.id,
        }
    }

    /// The entity normalised (lists as sorted sets, a plan's framework type
    /// trimmed and in upper case) and checked: a positive id, a framework
    /// type that is not blank, `runTimeoutSecs` in 5–604800 (section 15),
    /// `retryFailed` in 0–5 (section 18).
    ///
    /// Errors: [`CatalogError::Invalid`] naming the field.
    pub fn checked(mut self) -> Result<Entity, CatalogError> {
        let (entity, id) = (self.kind().entity(), self.id());
        let invalid = |problem: &str| CatalogError::Invalid {
            entity,
            id,
            problem: problem.to_owned(),
        };
        if self.id() <= 0 {
            return Err(invalid("id must be a positive integer"));
        }
        if let Some(field) = self
            .texts()
            .into_iter()
            .find(|(_, text)| text.contains('\0'))
        {
            return Err(invalid(&format!(
                "{} must not contain the NUL character (\\u0000)",
                field.0
            )));
        }
        match &mut self {
            Entity::Project(p) => as_set(&mut p.member_ids),
            Entity::Plan(p) => {
                if let Some(t) = &p.framework_type {
                    let t = t.trim().to_ascii_uppercase();
                    if t.is_empty() {
                        return Err(invalid("frameworkType is blank"));
                    }
                    p.framework_type = Some(t);
                }
                if p.run_timeout_secs
                    .is_some_and(|secs| !(5..=604_800).contains(&secs))
                {
                    return Err(invalid("runTimeoutSecs must be between 5 and 604800"));
                }
                if !(0..=MAX_RETRY_FAILED).contains(&p.retry_failed) {
                    return Err(invalid(&format!(
                        "retryFailed must be between 0 and {MAX_RETRY_FAILED}"
                    )));
                }
                as_set(&mut p.scenario_ids);
                as_set(&mut p.environment_ids);
            }
            _ => {}
        }
        Ok(self)
    }
}

impl Entity {
    /// The entity's text fields with their contract names: what PostgreSQL's
    /// `text` must be able to hold (no NUL character).
    fn texts(&self) -> Vec<(&'static str, &str)> {
        match self {
            Entity::User(u) => vec![("username", &u.username)],
            Entity::Project(p) => vec![("name", &p.name)],
            Entity::Scenario(s) => vec![("name", &s.name)],
            Entity::Environment(e) => vec![
                ("name", &e.name),
                ("platform", &e.platform),
                ("version", &e.version),
            ],
            Entity::Plan(p) => {
                let mut texts = vec![("name", p.name.as_str())];
                if let Some(t) = &p.framework_type {
                    texts.push(("frameworkType", t));
                }
                texts
            }
        }
    }
}

fn as_set(ids: &mut Vec<i64>) {
    ids.sort_unstable();
    ids.dedup();
}

/// The stored entity of `kind` with `id`; `None` when never written.
///
/// Errors: the database's.
pub fn get(conn: &mut PgConnection, kind: Kind, id: i64) -> QueryResult<Option<Stored>> {
    Ok(match kind {
        Kind::Users => users::table
            .find(id)
            .select((
                users::id,
                users::username,
                users::active,
                users::catalog_version,
            ))
            .first::<(i64, String, bool, i64)>(conn)
            .optional()?
            .map(|(id, username, active, version)| Stored {
                entity: Entity::User(User {
                    id,
                    username,
                    active,
                }),
                version,
            }),
        Kind::Projects => {
            let Some((name, active, version)) = projects::table
                .find(id)
                .select((projects::name, projects::active, projects::catalog_version))
                .first::<(String, bool, i64)>(conn)
                .optional()?
            else {
                return Ok(None);
            };
            let member_ids = project_members::table
                .filter(project_members::project_id.eq(id))
                .select(project_members::user_id)
                .order(project_members::user_id)
                .load(conn)?;
            Some(Stored {
                entity: Entity::Project(Project {
                    id,
                    name,
                    member_ids,
                    active,
                }),
                version,
            })
        }
        Kind::Scenarios => scenarios::table
            .find(id)
            .select((
                scenarios::project_id,
                scenarios::name,
                scenarios::active,
                scenarios::catalog_version,
            ))
            .first::<(i64, String, bool, i64)>(conn)
            .optional()?
            .map(|(project_id, name, active, version)| Stored {
                entity: Entity::Scenario(Scenario {
                    id,
                    project_id,
                    name,
                    active,
                }),
                version,
            }),
        Kind::Environments => environments::table
            .find(id)
            .select((
                environments::name,
                environments::platform,
                environments::version,
                environments::active,
                environments::catalog_version,
            ))
            .first::<(String, String, String, bool, i64)>(conn)
            .optional()?
            .map(
                |(name, platform, platform_version, active, version)| Stored {
                    entity: Entity::Environment(Environment {
                        id,
                        name,
                        platform,
                        version: platform_version,
                        active,
                    }),
                    version,
                },
            ),
        Kind::Plans => {
            let Some((
                project_id,
                name,
                framework_type,
                run_timeout_secs,
                retry_failed,
                active,
                version,
            )) = plans::table
                .find(id)
                .select((
                    plans::project_id,
                    plans::name,
                    plans::framework_type,
                    plans::run_timeout_secs,
                    plans::retry_failed,
                    plans::active,
                    plans::catalog_version,
                ))
                .first::<(i64, String, Option<String>, Option<i32>, i32, bool, i64)>(conn)
                .optional()?
            else {
                return Ok(None);
            };
            let scenario_ids = plan_scenarios::table
                .filter(plan_scenarios::plan_id.eq(id))
                .select(plan_scenarios::scenario_id)
                .order(plan_scenarios::scenario_id)
                .load(conn)?;
            let environment_ids = plan_environments::table
                .filter(plan_environments::plan_id.eq(id))
                .select(plan_environments::environment_id)
                .order(plan_environments::environment_id)
                .load(conn)?;
            Some(Stored {
                entity: Entity::Plan(Plan {
                    id,
                    project_id,
                    name,
                    framework_type,
                    run_timeout_secs,
                    retry_failed,
                    scenario_ids,
                    environment_ids,
                    active,
                }),
                version,
            })
        }
    })
}

/// Creates or replaces `entity` (section 20) inside the caller's
/// transaction: locks it, compares `expected_version` (the `If-Match`) with
/// the current one, and unless it is equal to what is stored checks its
/// references and writes it with the next version. Answers the entity as
/// stored.
///
/// Errors: [`CatalogError::VersionMismatch`], [`CatalogError::UnknownReference`],
/// [`CatalogError::ForeignScenario`], [`CatalogError::ScenarioInPlan`] (the
/// caller rolls back), or the database's.
pub fn put(
    conn: &mut PgConnection,
    entity: Entity,
    expected_version: Option<i64>,
) -> Result<Stored, CatalogError> {
    let (kind, id) = (entity.kind(), entity.id());
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, $2))")
        .bind::<Text, _>(format!("catalog {}", kind.path()))
        .bind::<BigInt, _>(id)
        .execute(conn)?;
    let current = get(conn, kind, id)?;
    let current_version = current.as_ref().map_or(0, |c| c.version);
    if expected_version.is_some_and(|v| v != current_version) {
        return Err(CatalogError::VersionMismatch(current_version));
    }
    // an unchanged entity's references were checked when it was written,
    // and nothing they name is ever deleted: no locks, no write, no WAL
    // flush for a PUT that changes nothing (it took 1 000 FOR SHARE locks
    // on a 1 000-scenario plan, bench/catalog.sh)
    if let Some(current) = current {
        if current.entity == entity {
            return Ok(current);
        }
    }
    check_references(conn, &entity)?;
    let version = current_version + 1;
    write(conn, &entity, version)?;
    Ok(Stored { entity, version })
}

/// How many entities of each kind an import wrote (changed or not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub users: usize,
    pub projects: usize,
    pub scenarios: usize,
    pub environments: usize,
    pub plans: usize,
}

/// Puts each of `entities` without an expected version, in the order given
/// (users, projects, scenarios, environments, then plans, so that each
/// refers to what is written before it), inside the caller's transaction.
///
/// Errors: the first refusal of [`put`].
pub fn import(conn: &mut PgConnection, entities: Vec<Entity>) -> Result<Counts, CatalogError> {
    let mut counts = Counts::default();
    for entity in entities {
        *match entity.kind() {
            Kind::Users => &mut counts.users,
            Kind::Projects => &mut counts.projects,
            Kind::Scenarios => &mut counts.scenarios,
            Kind::Environments => &mut counts.environments,
            Kind::Plans => &mut counts.plans,
        } += 1;
        put(conn, entity, None)?;
    }
    Ok(counts)
}

/// The first of `wanted` (sorted) missing from `found` (sorted).
fn first_missing(wanted: &[i64], found: &[i64]) -> Option<i64> {
    wanted
        .iter()
        .copied()
        .find(|id| found.binary_search(id).is_err())
}

/// The references of `entity` exist (read `FOR SHARE`), and a plan's
/// scenarios are of its project.
fn check_references(conn: &mut PgConnection, entity: &Entity) -> Result<(), CatalogError> {
    let unknown = |entity_kind: Kind, id: i64| CatalogError::UnknownReference {
        from: entity.kind().entity(),
        from_id: entity.id(),
        entity: Kind::entity(entity_kind),
        id,
    };
    let project_exists = |conn: &mut PgConnection, project_id: i64| -> QueryResult<bool> {
        Ok(projects::table
            .find(project_id)
            .select(projects::id)
            .for_share()
            .first::<i64>(conn)
            .optional()?
            .is_some())
    };
    match entity {
        Entity::User(_) | Entity::Environment(_) => {}
        Entity::Project(p) => {
            let found: Vec<i64> = users::table
                .filter(users::id.eq_any(&p.member_ids))
                .select(users::id)
                .order(users::id)
                .for_share()
                .load(conn)?;
            if let Some(id) = first_missing(&p.member_ids, &found) {
                return Err(unknown(Kind::Users, id));
            }
        }
        Entity::Scenario(s) => {
            if !project_exists(conn, s.project_id)? {
                return Err(unknown(Kind::Projects, s.project_id));
            }
            let listed_elsewhere: Option<(i64, i64)> = plan_scenarios::table
                .inner_join(plans::table)
                .filter(plan_scenarios::scenario_id.eq(s.id))
                .filter(plans::project_id.ne(s.project_id))
                .select((plans::id, plans::project_id))
                .order(plans::id)
                .first(conn)
                .optional()?;
            if let Some((plan_id, plan_project_id)) = listed_elsewhere {
                return Err(CatalogError::ScenarioInPlan {
                    scenario_id: s.id,
                    plan_id,
                    plan_project_id,
                });
            }
        }
        Entity::Plan(p) => {
            if !project_exists(conn, p.project_id)? {
                return Err(unknown(Kind::Projects, p.project_id));
            }
            let found: Vec<(i64, i64)> = scenarios::table
                .filter(scenarios::id.eq_any(&p.scenario_ids))
                .select((scenarios::id, scenarios::project_id))
                .order(scenarios::id)
                .for_share()
                .load(conn)?;
            let ids: Vec<i64> = found.iter().map(|(id, _)| *id).collect();
            if let Some(id) = first_missing(&p.scenario_ids, &ids) {
                return Err(unknown(Kind::Scenarios, id));
            }
            if let Some((scenario_id, scenario_project_id)) = found
                .into_iter()
                .find(|(_, project)| *project != p.project_id)
            {
                return Err(CatalogError::ForeignScenario {
                    plan_id: p.id,
                    project_id: p.project_id,
                    scenario_id,
                    scenario_project_id,
                });
            }
            let found: Vec<i64> = environments::table
                .filter(environments::id.eq_any(&p.environment_ids))
                .select(environments::id)
                .order(environments::id)
                .for_share()
                .load(conn)?;
            if let Some(id) = first_missing(&p.environment_ids, &found) {
                return Err(unknown(Kind::Environments, id));
            }
        }
    }
    Ok(())
}

/// Upserts `entity`'s row with `version`, and replaces its lists by
/// removing what left and adding what came (a plan of 1 000 scenarios that
/// gains one writes one row).
fn write(conn: &mut PgConnection, entity: &Entity, version: i64) -> QueryResult<()> {
    match entity {
        Entity::User(u) => {
            diesel::insert_into(users::table)
                .values((
                    users::id.eq(u.id),
                    users::username.eq(&u.username),
                    users::active.eq(u.active),
                    users::catalog_version.eq(version),
                ))
                .on_conflict(users::id)
                .do_update()
                .set((
                    users::username.eq(excluded(users::username)),
                    users::active.eq(excluded(users::active)),
                    users::catalog_version.eq(excluded(users::catalog_version)),
                ))
                .execute(conn)?;
        }
        Entity::Project(p) => {
            diesel::insert_into(projects::table)
                .values((
                    projects::id.eq(p.id),
                    projects::name.eq(&p.name),
                    projects::active.eq(p.active),
                    projects::catalog_version.eq(version),
                ))
                .on_conflict(projects::id)
                .do_update()
                .set((
                    projects::name.eq(excluded(projects::name)),
                    projects::active.eq(excluded(projects::active)),
                    projects::catalog_version.eq(excluded(projects::catalog_version)),
                ))
                .execute(conn)?;
            replace_list(
                conn,
                "project_members",
                "project_id",
                "user_id",
                p.id,
                &p.member_ids,
            )?;
        }
        Entity::Scenario(s) => {
            diesel::insert_into(scenarios::table)
                .values((
                    scenarios::id.eq(s.id),
                    scenarios::project_id.eq(s.project_id),
                    scenarios::name.eq(&s.name),
                    scenarios::active.eq(s.active),
                    scenarios::catalog_version.eq(version),
                ))
                .on_conflict(scenarios::id)
                .do_update()
                .set((
                    scenarios::project_id.eq(excluded(scenarios::project_id)),
                    scenarios::name.eq(excluded(scenarios::name)),
                    scenarios::active.eq(excluded(scenarios::active)),
                    scenarios::catalog_version.eq(excluded(scenarios::catalog_version)),
                ))
                .execute(conn)?;
        }
        Entity::Environment(e) => {
            diesel::insert_into(environments::table)
                .values((
                    environments::id.eq(e.id),
                    environments::name.eq(&e.name),
                    environments::platform.eq(&e.platform),
                    environments::version.eq(&e.version),
                    environments::active.eq(e.active),
                    environments::catalog_version.eq(version),
                ))
                .on_conflict(environments::id)
                .do_update()
                .set((
                    environments::name.eq(excluded(environments::name)),
                    environments::platform.eq(excluded(environments::platform)),
                    environments::version.eq(excluded(environments::version)),
                    environments::active.eq(excluded(environments::active)),
                    environments::catalog_version.eq(excluded(environments::catalog_version)),
                ))
                .execute(conn)?;
        }
        Entity::Plan(p) => {
            diesel::insert_into(plans::table)
                .values((
                    plans::id.eq(p.id),
                    plans::project_id.eq(p.project_id),
                    plans::name.eq(&p.name),
                    plans::framework_type.eq(&p.framework_type),
                    plans::run_timeout_secs.eq(p.run_timeout_secs),
                    plans::retry_failed.eq(p.retry_failed),
                    plans::active.eq(p.active),
                    plans::catalog_version.eq(version),
                ))
                .on_conflict(plans::id)
                .do_update()
                .set((
                    plans::project_id.eq(excluded(plans::project_id)),
                    plans::name.eq(excluded(plans::name)),
                    plans::framework_type.eq(excluded(plans::framework_type)),
                    plans::run_timeout_secs.eq(excluded(plans::run_timeout_secs)),
                    plans::retry_failed.eq(excluded(plans::retry_failed)),
                    plans::active.eq(excluded(plans::active)),
                    plans::catalog_version.eq(excluded(plans::catalog_version)),
                ))
                .execute(conn)?;
            replace_list(
                conn,
                "plan_scenarios",
                "plan_id",
                "scenario_id",
                p.id,
                &p.scenario_ids,
            )?;
            replace_list(
                conn,
                "plan_environments",
                "plan_id",
                "environment_id",
                p.id,
                &p.environment_ids,
            )?;
        }
    }
    Ok(())
}

/// Makes the rows of the list `table` (`owner` → `member`) of `owner_id`
/// exactly `ids`: deletes the others, inserts the missing. `table`,
/// `owner` and `member` are constants of this module, never input.
fn replace_list(
    conn: &mut PgConnection,
    table: &str,
    owner: &str,
    member: &str,
    owner_id: i64,
    ids: &[i64],
) -> QueryResult<()> {
    use diesel::sql_types::Array;
    diesel::sql_query(format!(
        "DELETE FROM {table} WHERE {owner} = $1 AND NOT ({member} = ANY ($2))"
    ))
    .bind::<BigInt, _>(owner_id)
    .bind::<Array<BigInt>, _>(ids)
    .execute(conn)?;
    diesel::sql_query(format!(
        "INSERT INTO {table} ({owner}, {member}) SELECT $1, unnest($2::bigint[]) \
         ON CONFLICT DO NOTHING"
    ))
    .bind::<BigInt, _>(owner_id)
    .bind::<Array<BigInt>, _>(ids)
    .execute(conn)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_body_becomes_its_entity_with_lists_as_sets_and_the_framework_type_in_upper_case() {
        let plan = Entity::from_body(
            Kind::Plans,
            614,
            json!({"projectId": 7, "name": "Checkout smoke", "frameworkType": " appium ",
                   "scenarioIds": [112, 111, 112], "environmentIds": [222]}),
        )
        .unwrap();
        let Entity::Plan(plan) = plan else {
            panic!("not a plan")
        };
        assert_eq!(plan.framework_type.as_deref(), Some("APPIUM"));
        assert_eq!(plan.scenario_ids, vec![111, 112]);
        assert!(plan.active, "active by default");
    }

    #[test]
    fn a_bad_body_names_the_entity_its_id_and_the_problem() {
        let refused = |kind, body| Entity::from_body(kind, 9, body).unwrap_err().to_string();
        assert_eq!(
            refused(
                Kind::Plans,
                json!({"projectId": 7, "name": "x", "runTimeoutSecs": 4})
            ),
            "plan 9: runTimeoutSecs must be between 5 and 604800"
        );
        assert_eq!(
            refused(Kind::Users, json!({"id": 8, "username": "x"})),
            "user 9: the body's id 8 is not the path's"
        );
        assert!(refused(Kind::Users, json!({"username": "x", "extra": 1}))
            .starts_with("user 9: unknown field `extra`"));
        assert_eq!(
            refused(Kind::Scenarios, json!([])),
            "scenario 9: the body must be a JSON object"
        );
        assert_eq!(
            Entity::from_body(Kind::Users, 0, json!({"username": "x"}))
                .unwrap_err()
                .to_string(),
            "user 0: id must be a positive integer"
        );
    }

    #[test]
    fn an_environment_s_answer_keeps_its_own_version_and_others_carry_the_catalogue_s() {
        let environment = Stored {
            entity: Entity::Environment(Environment {
                id: 222,
                name: "Pixel 8".into(),
                platform: "ANDROID".into(),
                version: "14".into(),
                active: true,
            }),
            version: 3,
        };
        assert_eq!(environment.to_json()["version"], "14");
        let user = Stored {
            entity: Entity::User(User {
                id: 13,
                username: "ayse.qa".into(),
                active: false,
            }),
            version: 3,
        };
        assert_eq!(
            user.to_json(),
            json!({"id": 13, "username": "ayse.qa", "active": false, "version": 3})
        );
    }
}
