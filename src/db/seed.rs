//! `plan-queue seed --file F`: upserts a fixture (contract, section 5).
//!
//! Ids are given, not generated. Every row is upserted by id and the
//! membership, plan and result lists of each listed item are replaced, all
//! in one transaction, so seeding the same file twice changes nothing.
//! Executions of a fixture are full runs.

use crate::db::models::{KIND_RUN, MAX_RETRY_FAILED};
use crate::db::schema::{
    environments, execution_pairs, executions, plan_environments, plan_scenarios, plans,
    project_members, projects, scenarios, users,
};
use crate::rules::PairStatus;
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::prelude::*;
use diesel::upsert::excluded;
use serde::Deserialize;

/// A fixture file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Fixture {
    pub users: Vec<FixtureUser>,
    pub projects: Vec<FixtureProject>,
    pub scenarios: Vec<FixtureScenario>,
    pub environments: Vec<FixtureEnvironment>,
    pub plans: Vec<FixturePlan>,
    pub executions: Vec<FixtureExecution>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FixtureUser {
    pub id: i64,
    pub username: String,
    #[serde(default = "active_by_default")]
    pub active: bool,
}

fn active_by_default() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FixtureProject {
    pub id: i64,
    pub name: String,
    #[serde(default)]
    pub member_ids: Vec<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FixtureScenario {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FixtureEnvironment {
    pub id: i64,
    pub name: String,
    pub platform: String,
    pub version: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FixturePlan {
    pub id: i64,
    pub project_id: i64,
    pub name: String,
    /// The framework type a run of the plan uses when its request names none
    /// (contract, section 13); stored trimmed and in upper case.
    #[serde(default)]
    pub framework_type: Option<String>,
    /// The plan's own run deadline, seconds, 5–604800; wins over
    /// `RUN_TIMEOUT_SECS` for its pairs (contract, section 15).
    #[serde(default)]
    pub run_timeout_secs: Option<i32>,
    /// Automatic reruns of an execution's `FAILED` and `ERROR` pairs, 0–5,
    /// default 0; a run or rerun body's `retryFailed` wins (contract,
    /// section 18).
    #[serde(default)]
    pub retry_failed: i32,
    #[serde(default)]
    pub scenario_ids: Vec<i64>,
    #[serde(default)]
    pub environment_ids: Vec<i64>,
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
        for plan in &self.plans {
            if plan
                .framework_type
                .as_deref()
                .is_some_and(|t| t.trim().is_empty())
            {
                bail!("plan {}: frameworkType is blank", plan.id);
            }
            if plan
                .run_timeout_secs
                .is_some_and(|secs| !(5..=604_800).contains(&secs))
            {
                bail!(
                    "plan {}: runTimeoutSecs must be between 5 and 604800",
                    plan.id
                );
            }
            if !(0..=MAX_RETRY_FAILED).contains(&plan.retry_failed) {
                bail!(
                    "plan {}: retryFailed must be between 0 and {MAX_RETRY_FAILED}",
                    plan.id
                );
            }
        }
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

    /// Upserts the fixture in one transaction; returns how many rows of each
    /// kind were written, for the command's report.
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
        for u in &self.users {
            diesel::insert_into(users::table)
                .values((
                    users::id.eq(u.id),
                    users::username.eq(&u.username),
                    users::active.eq(u.active),
                ))
                .on_conflict(users::id)
                .do_update()
                .set((
                    users::username.eq(excluded(users::username)),
                    users::active.eq(excluded(users::active)),
                ))
                .execute(conn)?;
        }
        for p in &self.projects {
            diesel::insert_into(projects::table)
                .values((projects::id.eq(p.id), projects::name.eq(&p.name)))
                .on_conflict(projects::id)
                .do_update()
                .set(projects::name.eq(excluded(projects::name)))
                .execute(conn)?;
            diesel::delete(project_members::table.filter(project_members::project_id.eq(p.id)))
                .execute(conn)?;
            let members: Vec<_> = p
                .member_ids
                .iter()
                .map(|m| {
                    (
                        project_members::project_id.eq(p.id),
                        project_members::user_id.eq(*m),
                    )
                })
                .collect();
            diesel::insert_into(project_members::table)
                .values(&members)
                .on_conflict_do_nothing()
                .execute(conn)?;
        }
        for s in &self.scenarios {
            diesel::insert_into(scenarios::table)
                .values((
                    scenarios::id.eq(s.id),
                    scenarios::project_id.eq(s.project_id),
                    scenarios::name.eq(&s.name),
                ))
                .on_conflict(scenarios::id)
                .do_update()
                .set((
                    scenarios::project_id.eq(excluded(scenarios::project_id)),
                    scenarios::name.eq(excluded(scenarios::name)),
                ))
                .execute(conn)?;
        }
        for e in &self.environments {
            diesel::insert_into(environments::table)
                .values((
                    environments::id.eq(e.id),
                    environments::name.eq(&e.name),
                    environments::platform.eq(&e.platform),
                    environments::version.eq(&e.version),
                ))
                .on_conflict(environments::id)
                .do_update()
                .set((
                    environments::name.eq(excluded(environments::name)),
                    environments::platform.eq(excluded(environments::platform)),
                    environments::version.eq(excluded(environments::version)),
                ))
                .execute(conn)?;
        }
        for p in &self.plans {
            self.upsert_plan(conn, p)?;
        }
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

    fn upsert_plan(&self, conn: &mut PgConnection, p: &FixturePlan) -> QueryResult<()> {
        diesel::insert_into(plans::table)
            .values((
                plans::id.eq(p.id),
                plans::project_id.eq(p.project_id),
                plans::name.eq(&p.name),
                plans::framework_type.eq(p
                    .framework_type
                    .as_deref()
                    .map(|t| t.trim().to_ascii_uppercase())),
                plans::run_timeout_secs.eq(p.run_timeout_secs),
                plans::retry_failed.eq(p.retry_failed),
            ))
            .on_conflict(plans::id)
            .do_update()
            .set((
                plans::project_id.eq(excluded(plans::project_id)),
                plans::name.eq(excluded(plans::name)),
                plans::framework_type.eq(excluded(plans::framework_type)),
                plans::run_timeout_secs.eq(excluded(plans::run_timeout_secs)),
                plans::retry_failed.eq(excluded(plans::retry_failed)),
            ))
            .execute(conn)?;
        diesel::delete(plan_scenarios::table.filter(plan_scenarios::plan_id.eq(p.id)))
            .execute(conn)?;
        let rows: Vec<_> = p
            .scenario_ids
            .iter()
            .map(|s| {
                (
                    plan_scenarios::plan_id.eq(p.id),
                    plan_scenarios::scenario_id.eq(*s),
                )
            })
            .collect();
        diesel::insert_into(plan_scenarios::table)
            .values(&rows)
            .on_conflict_do_nothing()
            .execute(conn)?;
        diesel::delete(plan_environments::table.filter(plan_environments::plan_id.eq(p.id)))
            .execute(conn)?;
        let rows: Vec<_> = p
            .environment_ids
            .iter()
            .map(|e| {
                (
                    plan_environments::plan_id.eq(p.id),
                    plan_environments::environment_id.eq(*e),
                )
            })
            .collect();
        diesel::insert_into(plan_environments::table)
            .values(&rows)
            .on_conflict_do_nothing()
            .execute(conn)?;
        Ok(())
    }
}

/// Upserts a full run and replaces its results. Refuses an id that belongs to
/// a rerun plan-queue made: overwriting it would rewrite that rerun's pairs
/// and hand out its attempts again.
fn upsert_execution(conn: &mut PgConnection, e: &FixtureExecution) -> anyhow::Result<()> {
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
