//! The plan reads the page needs (`GET /plans`, `GET /plans/{planId}`): the
//! plans a caller may see with their names and sizes, a plan's scenarios and
//! environments, the latest full run of each plan and the counts of its
//! consolidated results.
//!
//! Visibility is that of `db::reads` (code 1010's read rule): `member`
//! `Some(user)` limits the answer to plans of that user's projects, `None`
//! (QUEUE_ADMIN) sees every plan.

use super::models::KIND_RUN;
use super::reads::{execution_columns, visible_plan, ExecutionRow};
use diesel::pg::PgConnection;
use diesel::sql_types::{Array, BigInt, Nullable, Text};
use diesel::{OptionalExtension, QueryResult, QueryableByName, RunQueryDsl};

/// A plan with its project's name and the sizes of its lists.
#[derive(QueryableByName, Debug, Clone)]
pub struct PlanRow {
    #[diesel(sql_type = BigInt)]
    pub plan_id: i64,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = BigInt)]
    pub project_id: i64,
    #[diesel(sql_type = Text)]
    pub project_name: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub framework_type: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub scenario_count: i64,
    #[diesel(sql_type = BigInt)]
    pub environment_count: i64,
    /// The plan's most recent full run, if it ever ran.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub latest_run_id: Option<i64>,
}

/// `SELECT` of [`PlanRow`] from `plans p`; the latest run by
/// `executions_latest_run_idx` (the kind as a literal: the index is partial on it).
fn plan_columns() -> String {
    format!(
        "SELECT p.id AS plan_id, p.name, p.project_id, pr.name AS project_name, \
                p.framework_type, \
                (SELECT count(*) FROM plan_scenarios s WHERE s.plan_id = p.id) AS scenario_count, \
                (SELECT count(*) FROM plan_environments e WHERE e.plan_id = p.id) \
                  AS environment_count, \
                (SELECT x.id FROM executions x WHERE x.plan_id = p.id AND x.kind = '{KIND_RUN}' \
                  ORDER BY x.requested_at DESC, x.id DESC LIMIT 1) AS latest_run_id \
           FROM plans p JOIN projects pr ON pr.id = p.project_id"
    )
}

/// Every plan `member` may see, ordered by id.
pub fn visible_plans(conn: &mut PgConnection, member: Option<i64>) -> QueryResult<Vec<PlanRow>> {
    diesel::sql_query(format!(
        "{} WHERE {} ORDER BY p.id",
        plan_columns(),
        visible_plan(1)
    ))
    .bind::<Nullable<BigInt>, _>(member)
    .load(conn)
}

/// The plan `plan_id`, if it exists and `member` may see it.
pub fn plan(
    conn: &mut PgConnection,
    plan_id: i64,
    member: Option<i64>,
) -> QueryResult<Option<PlanRow>> {
    diesel::sql_query(format!(
        "{} WHERE p.id = $1 AND {}",
        plan_columns(),
        visible_plan(2)
    ))
    .bind::<BigInt, _>(plan_id)
    .bind::<Nullable<BigInt>, _>(member)
    .get_result(conn)
    .optional()
}

/// A scenario of a plan.
#[derive(QueryableByName, Debug, Clone)]
pub struct ScenarioRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub name: String,
}

/// The plan's scenarios, ordered by id.
pub fn plan_scenarios(conn: &mut PgConnection, plan_id: i64) -> QueryResult<Vec<ScenarioRow>> {
    diesel::sql_query(
        "SELECT s.id, s.name FROM plan_scenarios ps JOIN scenarios s ON s.id = ps.scenario_id \
          WHERE ps.plan_id = $1 ORDER BY s.id",
    )
    .bind::<BigInt, _>(plan_id)
    .load(conn)
}

/// An environment of a plan.
#[derive(QueryableByName, Debug, Clone)]
pub struct EnvironmentRow {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub name: String,
    #[diesel(sql_type = Text)]
    pub platform: String,
    #[diesel(sql_type = Text)]
    pub version: String,
}

/// The plan's environments, ordered by id.
pub fn plan_environments(
    conn: &mut PgConnection,
    plan_id: i64,
) -> QueryResult<Vec<EnvironmentRow>> {
    diesel::sql_query(
        "SELECT e.id, e.name, e.platform, e.version \
           FROM plan_environments pe JOIN environments e ON e.id = pe.environment_id \
          WHERE pe.plan_id = $1 ORDER BY e.id",
    )
    .bind::<BigInt, _>(plan_id)
    .load(conn)
}

/// The executions `ids` with their counts (as `db::reads::execution`), in no
/// particular order.
pub fn executions(conn: &mut PgConnection, ids: &[i64]) -> QueryResult<Vec<ExecutionRow>> {
    diesel::sql_query(format!("{} WHERE x.id = ANY($1)", execution_columns()))
        .bind::<Array<BigInt>, _>(ids)
        .load(conn)
}

/// How many pairs of a source run's consolidated results have `status`
/// as their current status (that of their latest attempt in the chain).
#[derive(QueryableByName, Debug, Clone)]
pub struct ResultCountRow {
    #[diesel(sql_type = BigInt)]
    pub source_execution_id: i64,
    #[diesel(sql_type = Text)]
    pub status: String,
    #[diesel(sql_type = BigInt)]
    pub pairs: i64,
}

/// The consolidated counts of each source run of `sources`, one row per
/// (source run, current status): one pass over each chain by
/// `execution_pairs_chain_idx`, whose order gives each pair's latest attempt
/// first.
pub fn result_counts(conn: &mut PgConnection, sources: &[i64]) -> QueryResult<Vec<ResultCountRow>> {
    diesel::sql_query(
        "SELECT l.source_execution_id, l.status, count(*) AS pairs \
           FROM (SELECT DISTINCT ON (source_execution_id, scenario_id, environment_id) \
                        source_execution_id, status \
                   FROM execution_pairs WHERE source_execution_id = ANY($1) \
                  ORDER BY source_execution_id, scenario_id, environment_id, attempt DESC) l \
          GROUP BY l.source_execution_id, l.status",
    )
    .bind::<Array<BigInt>, _>(sources)
    .load(conn)
}
