//! The run of a whole plan (contract, section 7): a new full run (`kind`
//! `RUN`) of the plan's scenarios × environments (or the given subsets), each
//! pair at attempt 1, written with one dispatch row per pair (`type`
//! `scenario.run`) in one transaction, like a rerun. The run becomes the
//! plan's source run for later reruns.
//!
//! Concurrency. The run locks the plan row first (runs of one plan go one
//! after another; reruns never take that lock), then, in a statement of its
//! own, the plan's latest full run with the lock reruns of it take: it waits
//! for reruns in progress, and its in-flight guard (1014, a third statement)
//! sees every pair they queued. A rerun that waits for that lock while the
//! run commits moves to the new source run (`crate::service::rerun`), so no
//! rerun is made from a superseded source after the run committed.

use super::rerun::{
    check_key, store_answer, write_execution, Keyed, NewExecution, PairToQueue, QueuedPair,
    RerunContext, RerunService,
};
use crate::db::models::{KIND_RUN, MESSAGE_RUN};
use crate::db::queries;
use crate::db::runs::{self, PlanEnvironment, PlanScenario};
use crate::domain::request::normalised_framework_type;
use crate::domain::{EnvironmentInfo, RunRequest, ScenarioInfo};
use crate::error::ApiError;
use diesel::prelude::*;
use serde::Serialize;

/// The `data` of the 200 answer to a run: section 1's, with
/// `sourceExecutionId` equal to `executionId` (a full run is its own source).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunAccepted {
    /// The run just created; `None` for a dry run.
    pub execution_id: Option<i64>,
    pub plan_id: i64,
    /// Equal to `executionId`; `None` for a dry run.
    pub source_execution_id: Option<i64>,
    /// The body's, else the plan's; normalised (upper case).
    pub framework_type: String,
    /// Every pair, by scenario then environment, each at attempt 1.
    pub queued: Vec<QueuedPair>,
}

/// What a run request produced.
#[derive(Debug)]
pub enum RunOutcome {
    /// Committed (or validated, for a dry run).
    Accepted(RunAccepted),
    /// A retry with a known Idempotency-Key: the first answer, as stored.
    Replayed { status: u16, body: String },
}

impl RerunService {
    /// Checks a run `request` against the database and, unless it is a dry
    /// run, records the run and its dispatch rows in one transaction.
    ///
    /// Errors, in the contract's order: 1000, 1002, 1010 (membership), 1006
    /// when neither the body nor the plan names a framework type (1003 when
    /// the plan's is not configured), 1019, 1018, 1008, 1014 unless `force`;
    /// 1012/1013 for Idempotency-Key misuse; 1011 when the database is
    /// unavailable. Nothing is written on any error.
    pub async fn run(
        &self,
        request: RunRequest,
        context: RerunContext,
    ) -> Result<RunOutcome, ApiError> {
        let service = self.clone();
        let outcome = self
            .db
            .run(move |conn| {
                conn.transaction(|conn| service.run_in_transaction(conn, &request, &context))
            })
            .await?;
        if matches!(&outcome, RunOutcome::Accepted(a) if a.execution_id.is_some()) {
            self.relay_wakeup.notify_one();
        }
        Ok(outcome)
    }

    fn run_in_transaction(
        &self,
        conn: &mut PgConnection,
        request: &RunRequest,
        context: &RerunContext,
    ) -> Result<RunOutcome, ApiError> {
        let retention = self.idempotency_retention;
        let key = match check_key(conn, request, request.dry_run, context, retention)? {
            Keyed::Replay(replay) => {
                return Ok(RunOutcome::Replayed {
                    status: replay.status,
                    body: replay.body,
                })
            }
            Keyed::Proceed(key) => key,
        };
        let found = validate(conn, request)?;
        let framework_type = self.framework_type(request, found.plan_framework_type)?;
        let scenarios = subset(
            runs::plan_scenarios(conn, request.plan_id)?,
            request.scenario_ids.as_deref(),
            |s| s.id,
            |scenario_id| ApiError::ScenarioNotInPlan {
                scenario_id,
                plan_id: request.plan_id,
            },
        )?;
        let environments = subset(
            runs::plan_environments(conn, request.plan_id)?,
            request.environment_ids.as_deref(),
            |e| e.id,
            |environment_id| ApiError::EnvironmentNotInPlan {
                environment_id,
                plan_id: request.plan_id,
            },
        )?;
        if scenarios.is_empty() || environments.is_empty() {
            return Err(ApiError::NothingToRun(request.plan_id));
        }
        let count = scenarios.len().saturating_mul(environments.len());
        if count > self.limits.max_pairs {
            return Err(ApiError::TooManyPairs {
                count,
                max: self.limits.max_pairs,
            });
        }
        check_not_in_flight(conn, request)?;
        let pairs = pairs_to_queue(&scenarios, &environments);
        let mut accepted = RunAccepted {
            execution_id: None,
            plan_id: request.plan_id,
            source_execution_id: None,
            framework_type,
            queued: pairs
                .iter()
                .map(|p| QueuedPair {
                    scenario_id: p.scenario_id,
                    environment_id: p.environment_id,
                    attempt: p.attempt,
                    message_id: None,
                })
                .collect(),
        };
        let Some(execution_id) = found.execution_id else {
            return Ok(RunOutcome::Accepted(accepted));
        };
        let new = NewExecution {
            execution_id,
            plan_id: request.plan_id,
            user_id: request.user_id,
            framework_type: &accepted.framework_type,
            kind: KIND_RUN,
            source_execution_id: None,
            message_type: MESSAGE_RUN,
            correlation_id: context.correlation_id.as_deref(),
        };
        let message_ids = write_execution(conn, &new, &pairs)?;
        accepted.execution_id = Some(execution_id);
        accepted.source_execution_id = Some(execution_id);
        for (queued, message_id) in accepted.queued.iter_mut().zip(message_ids) {
            queued.message_id = Some(message_id);
        }
        store_answer(conn, context, key, &accepted, accepted.execution_id)?;
        Ok(RunOutcome::Accepted(accepted))
    }

    /// The body's framework type, else the plan's (normalised): 1006 when
    /// neither names one, 1003 when the plan's is not configured.
    fn framework_type(
        &self,
        request: &RunRequest,
        plan_framework_type: Option<String>,
    ) -> Result<String, ApiError> {
        if let Some(given) = &request.framework_type {
            return Ok(given.clone());
        }
        let framework_type = normalised_framework_type(plan_framework_type.as_deref())
            .ok_or(ApiError::Mandatory("frameworkType is mandatory"))?;
        if !self.framework_types.contains(&framework_type) {
            return Err(ApiError::UnsupportedFrameworkType(framework_type));
        }
        Ok(framework_type)
    }
}

/// [`runs::validate_run`] (which locks the plan): 1000 unknown plan, 1002
/// unknown or inactive user, 1010 user not a member of the plan's project.
fn validate(
    conn: &mut PgConnection,
    request: &RunRequest,
) -> Result<runs::RunValidation, ApiError> {
    let found = runs::validate_run(conn, request.plan_id, request.user_id, !request.dry_run)?;
    super::check_access(found.access, request.plan_id, request.user_id)?;
    Ok(found)
}

/// The items of the plan (ordered by id) that the subset `wanted` names, or
/// all of them without a subset; `not_in_plan` (1019) for the first wanted id
/// the plan lacks, in request order.
fn subset<T>(
    all: Vec<T>,
    wanted: Option<&[i64]>,
    id: impl Fn(&T) -> i64,
    not_in_plan: impl Fn(i64) -> ApiError,
) -> Result<Vec<T>, ApiError> {
    let Some(wanted) = wanted else {
        return Ok(all);
    };
    if let Some(missing) = wanted.iter().find(|w| !all.iter().any(|t| id(t) == **w)) {
        return Err(not_in_plan(*missing));
    }
    Ok(all
        .into_iter()
        .filter(|t| wanted.contains(&id(t)))
        .collect())
}

/// Locks the plan's latest full run (after the plan lock, in a statement of
/// its own: it waits for reruns of it in progress) and, unless `force`, is
/// 1014 when a pair of its chain is in flight, naming the execution holding
/// the first such pair (a third statement, which sees those reruns).
fn check_not_in_flight(conn: &mut PgConnection, request: &RunRequest) -> Result<(), ApiError> {
    let latest: queries::LatestRunRow = queries::LatestRun {
        plan_id: request.plan_id,
    }
    .get_result(conn)?;
    let Some(source_execution_id) = latest.source_execution_id else {
        return Ok(());
    };
    if request.force {
        return Ok(());
    }
    match runs::first_in_flight(conn, source_execution_id)? {
        Some(execution_id) => Err(ApiError::PlanInFlight {
            plan_id: request.plan_id,
            execution_id,
        }),
        None => Ok(()),
    }
}

/// Scenarios × environments, by scenario then environment, each at attempt 1.
fn pairs_to_queue(
    scenarios: &[PlanScenario],
    environments: &[PlanEnvironment],
) -> Vec<PairToQueue> {
    scenarios
        .iter()
        .flat_map(|s| {
            environments.iter().map(move |e| PairToQueue {
                scenario_id: s.id,
                environment_id: e.id,
                attempt: 1,
                scenario: ScenarioInfo {
                    name: s.name.clone(),
                },
                environment: EnvironmentInfo {
                    name: e.name.clone(),
                    platform: e.platform.clone(),
                    version: e.version.clone(),
                },
            })
        })
        .collect()
}
