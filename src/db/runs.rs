//! The statements of a full run of a plan (contract, section 7) that the
//! rerun does not share: the checks with the plan's lock, the plan's
//! scenarios and environments, and the first pair in flight. The run writes
//! with [`super::queries::WriteExecution`] and locks its source run with
//! [`super::queries::LatestRun`], like a rerun.
//!
//! Runs are rare next to reruns, so these are plain `sql_query` statements.

use super::models::{STATUS_QUEUED, STATUS_RUNNING};
use diesel::pg::PgConnection;
use diesel::sql_types::{BigInt, Bool, Nullable, Text};
use diesel::{OptionalExtension, QueryResult, QueryableByName, RunQueryDsl};

/// What [`validate_run`] found.
#[derive(QueryableByName, Debug)]
pub struct RunValidation {
    #[diesel(embed)]
    pub access: super::queries::Access,
    /// The plan's own framework type (fixture field, section 13), as stored.
    #[diesel(sql_type = Nullable<Text>)]
    pub plan_framework_type: Option<String>,
    /// The reserved id of the run, when asked for.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub execution_id: Option<i64>,
}

/// Checks plan, user and membership in one round trip, locks the plan row
/// (`FOR NO KEY UPDATE`: runs of one plan go one after another, so the
/// in-flight guard of the second sees the first; reruns never take it) and,
/// when `allocate`, reserves the id of the run.
pub fn validate_run(
    conn: &mut PgConnection,
    plan_id: i64,
    user_id: i64,
    allocate: bool,
) -> QueryResult<RunValidation> {
    diesel::sql_query(
        "SELECT p.project_id IS NOT NULL AS plan_found, \
                coalesce(u.active, false) AS user_active, \
                EXISTS (SELECT 1 FROM project_members m \
                         WHERE m.project_id = p.project_id AND m.user_id = $2) AS member, \
                p.framework_type AS plan_framework_type, \
                CASE WHEN $3 THEN nextval('executions_id_seq') END AS execution_id \
           FROM (SELECT 1) one \
           LEFT JOIN LATERAL (SELECT pl.project_id, pl.framework_type FROM plans pl \
                               WHERE pl.id = $1 FOR NO KEY UPDATE) p ON true \
           LEFT JOIN users u ON u.id = $2",
    )
    .bind::<BigInt, _>(plan_id)
    .bind::<BigInt, _>(user_id)
    .bind::<Bool, _>(allocate)
    .get_result(conn)
}

/// A scenario of a plan with what a message needs.
#[derive(QueryableByName, Debug, Clone)]
pub struct PlanScenario {
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    #[diesel(sql_type = Text)]
    pub name: String,
}

/// The plan's scenarios, ordered by id.
pub fn plan_scenarios(conn: &mut PgConnection, plan_id: i64) -> QueryResult<Vec<PlanScenario>> {
    diesel::sql_query(
        "SELECT s.id, s.name FROM plan_scenarios ps JOIN scenarios s ON s.id = ps.scenario_id \
          WHERE ps.plan_id = $1 ORDER BY s.id",
    )
    .bind::<BigInt, _>(plan_id)
    .load(conn)
}

/// An environment of a plan with what a message needs.
#[derive(QueryableByName, Debug, Clone)]
pub struct PlanEnvironment {
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
) -> QueryResult<Vec<PlanEnvironment>> {
    diesel::sql_query(
        "SELECT e.id, e.name, e.platform, e.version \
           FROM plan_environments pe JOIN environments e ON e.id = pe.environment_id \
          WHERE pe.plan_id = $1 ORDER BY e.id",
    )
    .bind::<BigInt, _>(plan_id)
    .load(conn)
}

#[derive(QueryableByName)]
struct Holder {
    #[diesel(sql_type = BigInt)]
    execution_id: i64,
}

/// The execution holding the first pair (by scenario, then environment) of
/// `source_execution_id`'s chain that is in flight: its latest attempt is
/// `QUEUED` or `RUNNING` (section 6). `None` when none is. Walks
/// `execution_pairs_in_flight_idx`, then one probe of the chain index per
/// candidate to see that no later attempt exists.
pub fn first_in_flight(
    conn: &mut PgConnection,
    source_execution_id: i64,
) -> QueryResult<Option<i64>> {
    diesel::sql_query(format!(
        "SELECT p.execution_id FROM execution_pairs p \
          WHERE p.source_execution_id = $1 AND p.status IN ('{STATUS_QUEUED}', '{STATUS_RUNNING}') \
            AND NOT EXISTS (SELECT 1 FROM execution_pairs q \
                             WHERE q.source_execution_id = p.source_execution_id \
                               AND q.scenario_id = p.scenario_id \
                               AND q.environment_id = p.environment_id \
                               AND q.attempt > p.attempt) \
          ORDER BY p.scenario_id, p.environment_id LIMIT 1"
    ))
    .bind::<BigInt, _>(source_execution_id)
    .get_result::<Holder>(conn)
    .optional()
    .map(|found| found.map(|h| h.execution_id))
}
