//! Reading plans (`GET /plans`, `GET /plans/{planId}`): what a page or an
//! integrator needs to show names rather than ids. The token rules are
//! section 11's (contract): without `QUEUE_ADMIN` only plans of the
//! subject's projects exist; any other plan answers 404 code 1000.
//!
//! Each answer is one read-only, repeatable-read snapshot
//! ([`ReadService::snapshot`]).

use super::reads::{summary, ExecutionSummary, ReadService, StatusCounts};
use crate::auth::ReadScope;
use crate::db::plans::{self, EnvironmentRow, PlanRow, ScenarioRow};
use crate::domain::Id;
use crate::error::ApiError;
use diesel::pg::PgConnection;
use serde::Serialize;
use std::collections::HashMap;
use utoipa::ToSchema;

/// A plan as `GET /plans` lists it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanSummary {
    pub plan_id: i64,
    #[schema(example = "Checkout smoke")]
    pub name: String,
    pub project_id: i64,
    #[schema(example = "Shop mobile app")]
    pub project_name: String,
    /// The plan's own framework type; null when a run must name one.
    #[schema(example = "APPIUM")]
    pub framework_type: Option<String>,
    pub scenario_count: i64,
    pub environment_count: i64,
    /// The plan's most recent full run (its source run), as
    /// `GET /executions/{executionId}` answers it without `pairs`; null when
    /// the plan never ran.
    pub latest_run: Option<ExecutionSummary>,
    /// The consolidated results' pairs per current status (the `counts` of
    /// `GET /plans/{planId}/results`); null when the plan never ran.
    pub result_counts: Option<StatusCounts>,
}

/// `GET /plans`: every plan the caller may read, ordered by id.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanList {
    pub plans: Vec<PlanSummary>,
}

/// A scenario of a plan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanScenario {
    pub id: i64,
    #[schema(example = "Login with valid credentials")]
    pub name: String,
}

/// An environment of a plan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PlanEnvironment {
    pub id: i64,
    #[schema(example = "Pixel 8")]
    pub name: String,
    #[schema(example = "ANDROID")]
    pub platform: String,
    #[schema(example = "14")]
    pub version: String,
}

/// `GET /plans/{planId}`: a plan with its scenarios and environments.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanDetail {
    #[serde(flatten)]
    pub plan: PlanSummary,
    /// Ordered by id.
    pub scenarios: Vec<PlanScenario>,
    /// Ordered by id.
    pub environments: Vec<PlanEnvironment>,
}

impl ReadService {
    /// Every plan `scope` may read, each with its latest run and the counts
    /// of its consolidated results.
    ///
    /// Errors: 503 code 1011 when the database is unreachable.
    pub async fn plans(&self, scope: ReadScope) -> Result<PlanList, ApiError> {
        self.snapshot(move |conn| {
            let rows = plans::visible_plans(conn, scope.member())?;
            Ok(PlanList {
                plans: with_latest_runs(conn, rows)?,
            })
        })
        .await
    }

    /// The plan with its scenarios and environments.
    ///
    /// Errors: 404 code 1000 for a plan that does not exist or `scope` may
    /// not see (contract, section 11); 503 code 1011.
    pub async fn plan(&self, scope: ReadScope, plan_id: Id) -> Result<PlanDetail, ApiError> {
        let plan_id = plan_id.get();
        self.snapshot(move |conn| {
            let row =
                plans::plan(conn, plan_id, scope.member())?.ok_or(ApiError::PlanNotFoundToRead)?;
            let plan = with_latest_runs(conn, vec![row])?.remove(0);
            Ok(PlanDetail {
                plan,
                scenarios: plans::plan_scenarios(conn, plan_id)?
                    .into_iter()
                    .map(|ScenarioRow { id, name }| PlanScenario { id, name })
                    .collect(),
                environments: plans::plan_environments(conn, plan_id)?
                    .into_iter()
                    .map(
                        |EnvironmentRow {
                             id,
                             name,
                             platform,
                             version,
                         }| PlanEnvironment {
                            id,
                            name,
                            platform,
                            version,
                        },
                    )
                    .collect(),
            })
        })
        .await
    }
}

/// The plans of `rows`, in their order, each with its latest run and its
/// consolidated counts: two queries whatever the number of plans.
fn with_latest_runs(
    conn: &mut PgConnection,
    rows: Vec<PlanRow>,
) -> Result<Vec<PlanSummary>, ApiError> {
    let runs: Vec<i64> = rows.iter().filter_map(|r| r.latest_run_id).collect();
    let mut latest: HashMap<i64, ExecutionSummary> = plans::executions(conn, &runs)?
        .into_iter()
        .map(|row| (row.execution_id, summary(row)))
        .collect();
    let mut counts: HashMap<i64, StatusCounts> = HashMap::new();
    for row in plans::result_counts(conn, &runs)? {
        counts
            .entry(row.source_execution_id)
            .or_default()
            .add(&row.status, row.pairs);
    }
    Ok(rows
        .into_iter()
        .map(|row| PlanSummary {
            latest_run: row.latest_run_id.and_then(|id| latest.remove(&id)),
            result_counts: row
                .latest_run_id
                .map(|id| counts.remove(&id).unwrap_or_default()),
            plan_id: row.plan_id,
            name: row.name,
            project_id: row.project_id,
            project_name: row.project_name,
            framework_type: row.framework_type,
            scenario_count: row.scenario_count,
            environment_count: row.environment_count,
        })
        .collect())
}
