//! `plan-queue seed --file F`: upserts a fixture (contract, section 5).
//!
//! Ids are given, not generated. Every row is upserted by id and the
//! membership, plan and result lists of each listed item are replaced, all
//! in one transaction, so seeding the same file twice changes nothing.
//! Executions of a fixture are full runs.

use crate::db::catalog::{
    self, CatalogError, Entity, Environment, Kind, Plan, Project, Scenario, User,
};
use crate::db::models::KIND_RUN;
use crate::db::schema::{environments, execution_pairs, executions, scenarios};
use crate::rules::PairStatus;
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::upsert::excluded;
use serde::Deserialize;

/// A fixture file: the catalogue (section 5, with `active` and the plan
/// fields of sections 13 and 15) and full runs.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Fixture {
    pub users: Vec<User>,
    pub projects: Vec<Project>,
    pub scenarios: Vec<Scenario>,
    pub environments: Vec<Environment>,
    pub plans: Vec<Plan>,
    pub executions: Vec<FixtureExecution>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FixtureExecution {
    pub id: i64,
    pub plan_id: i64,
    pub user_id: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub results: Vec<FixtureResult>,
}

/// Result statuses a fixture may give (contract, section 5): the terminal ones.
pub const RESULT_STATUSES: [PairStatus; 5] = PairStatus::TERMINAL;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FixtureResult {
    pub scenario_id: i64,
    pub environment_id: i64,
    pub status: String,
    /// How long the pair ran, milliseconds, at least 0 (section 13).
    #[serde(default)]
    pub duration_ms: Option<i64>,
    /// Where the pair's report is (section 13).
    #[serde(default)]
    pub report_url: Option<String>,
    /// What the runner said about the result (section 13).
    #[serde(default)]
    pub detail: Option<String>,
}

/// Parses a fixture's text; an error names the field (e.g.
/// `plans[1].runTimeoutSecs`) and, inside a plan, the plan's id.
fn parse(text: &str) -> anyhow::Result<Fixture> {
    let mut reader = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut reader).map_err(|e| {
        let path = e.path().to_string();
        let plan_id = path
            .strip_prefix("plans[")
            .and_then(|rest| rest.split(']').next())
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| {
                let value: serde_json::Value = serde_json::from_str(text).ok()?;
                value["plans"][i]["id"].as_i64()
            });
        match plan_id {
            Some(id) => anyhow::anyhow!("plan {id}: {path}: {}", e.inner()),
            None => anyhow::anyhow!("{path}: {}", e.inner()),
        }
    })
}

impl Fixture {
    /// Reads and parses the fixture at `path`.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read fixture {}", path.display()))?;
        let fixture: Fixture =
            parse(&text).with_context(|| format!("fixture {} is not valid", path.display()))?;
        fixture.check()?;
        Ok(fixture)
    }

    fn check(&self) -> anyhow::Result<()> {
        self.entities()?;
        for execution in &self.executions {
            for result in &execution.results {
                if result.duration_ms.is_some_and(|d| d < 0) {
                    bail!(
                        "execution {}: durationMs {:?} is negative",
                        execution.id,
                        result.duration_ms
                    );
                }
                if !result
                    .status
                    .parse()
                    .is_ok_and(|s| RESULT_STATUSES.contains(&s))
                {
                    bail!(
                        "execution {}: status {:?} is not one of {:?}",
                        execution.id,
                        result.status,
                        RESULT_STATUSES.map(PairStatus::as_str)
                    );
                }
            }
        }
        Ok(())
    }

    /// The catalogue of the fixture as entities, normalised and checked, in
    /// the order an import writes them (`crate::db::catalog::import`).
    ///
    /// Errors: the first entity [`Entity::checked`] refuses.
    pub fn entities(&self) -> Result<Vec<Entity>, CatalogError> {
        let users = self.users.iter().cloned().map(Entity::User);
        let projects = self.projects.iter().cloned().map(Entity::Project);
        let scenarios = self.scenarios.iter().cloned().map(Entity::Scenario);
        let environments = self.environments.iter().cloned().map(Entity::Environment);
        let plans = self.plans.iter().cloned().map(Entity::Plan);
        users
            .chain(projects)
            .chain(scenarios)
            .chain(environments)
            .chain(plans)
            .map(Entity::checked)
            .collect()
    }

    /// Upserts the fixture in one transaction: the catalogue through the
    /// catalogue's own writes (`crate::db::catalog`, the rules of
    /// `POST /catalog/import`: versions, references named with their ids),
    /// then the executions. Returns how many rows of each kind were
    /// written, for the command's report.
    ///
    /// Errors: the first refusal (naming the entity and the id at fault),
    /// or the database's; nothing is written then.
    pub fn upsert(&self, conn: &mut PgConnection) -> anyhow::Result<String> {
        conn.transaction::<_, anyhow::Error, _>(|conn| self.upsert_in_transaction(conn))
            .context("seeding failed (nothing was written)")?;
        Ok(format!(
            "{} users, {} projects, {} scenarios, {} environments, {} plans, {} executions",
            self.users.len(),
            self.projects.len(),
            self.scenarios.len(),
            self.environments.len(),
            self.plans.len(),
            self.executions.len()
        ))
    }

    fn upsert_in_transaction(&self, conn: &mut PgConnection) -> anyhow::Result<()> {
        catalog::import(conn, self.entities()?)?;
        for e in &self.executions {
            upsert_execution(conn, e)?;
        }
        // keep generated execution ids clear of the given ones
        diesel::sql_query(
            "SELECT setval(pg_get_serial_sequence('executions', 'id'), \
                    GREATEST((SELECT max(id) FROM executions), 1))",
        )
        .execute(conn)?;
        Ok(())
    }
}

/// The first entity an execution names that does not exist, as
/// `execution <x>: <entity> <id> does not exist` (no foreign key error).
fn check_execution_references(conn: &mut PgConnection, e: &FixtureExecution) -> anyhow::Result<()> {
    let unknown = |kind: Kind, id: i64| CatalogError::UnknownReference {
        from: "execution",
        from_id: e.id,
        entity: kind.entity(),
        id,
    };
    if catalog::get(conn, Kind::Plans, e.plan_id)?.is_none() {
        return Err(unknown(Kind::Plans, e.plan_id).into());
    }
    if catalog::get(conn, Kind::Users, e.user_id)?.is_none() {
        return Err(unknown(Kind::Users, e.user_id).into());
    }
    for r in &e.results {
        let scenario = scenarios::table.find(r.scenario_id).select(scenarios::id);
        if scenario.first::<i64>(conn).optional()?.is_none() {
            return Err(unknown(Kind::Scenarios, r.scenario_id).into());
        }
        let environment = environments::table
            .find(r.environment_id)
            .select(environments::id);
        if environment.first::<i64>(conn).optional()?.is_none() {
            return Err(unknown(Kind::Environments, r.environment_id).into());
        }
    }
    Ok(())
}

/// Upserts a full run and replaces its results. Refuses an id that belongs to
/// a rerun plan-queue made: overwriting it would rewrite that rerun's pairs
/// and hand out its attempts again.
fn upsert_execution(conn: &mut PgConnection, e: &FixtureExecution) -> anyhow::Result<()> {
    check_execution_references(conn, e)?;
    let existing: Option<String> = executions::table
        .find(e.id)
        .select(executions::kind)
        .for_update()
        .first(conn)
        .optional()?;
    if existing.is_some_and(|kind| kind != KIND_RUN) {
        bail!(
            "execution {} already exists as a rerun made by plan-queue; fixture executions are full runs, give it another id",
            e.id
        );
    }
    diesel::insert_into(executions::table)
        .values((
            executions::id.eq(e.id),
            executions::plan_id.eq(e.plan_id),
            executions::kind.eq(KIND_RUN),
            executions::requested_by.eq(e.user_id),
            executions::requested_at.eq(e.started_at),
            executions::started_at.eq(Some(e.started_at)),
            executions::finished_at.eq(e.finished_at),
        ))
        .on_conflict(executions::id)
        .do_update()
        .set((
            executions::plan_id.eq(excluded(executions::plan_id)),
            executions::requested_by.eq(excluded(executions::requested_by)),
            executions::requested_at.eq(excluded(executions::requested_at)),
            executions::started_at.eq(excluded(executions::started_at)),
            executions::finished_at.eq(excluded(executions::finished_at)),
        ))
        .execute(conn)?;
    diesel::delete(execution_pairs::table.filter(execution_pairs::execution_id.eq(e.id)))
        .execute(conn)?;
    let rows: Vec<_> = e
        .results
        .iter()
        .map(|r| {
            (
                execution_pairs::execution_id.eq(e.id),
                execution_pairs::scenario_id.eq(r.scenario_id),
                execution_pairs::environment_id.eq(r.environment_id),
                execution_pairs::status.eq(&r.status),
                execution_pairs::attempt.eq(1),
                execution_pairs::duration_ms.eq(r.duration_ms),
                execution_pairs::report_url.eq(&r.report_url),
                execution_pairs::detail.eq(&r.detail),
            )
        })
        .collect();
    diesel::insert_into(execution_pairs::table)
        .values(&rows)
        .execute(conn)?;
    Ok(())
}
