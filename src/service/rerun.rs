//! The rerun use case: check a parsed request against the database, then
//! write the rerun execution, its pairs and one dispatch (outbox) row per pair
//! in one transaction (the pattern of crates.io's `publish.rs`, which enqueues
//! its jobs on the same connection and transaction as the data).
//!
//! Rules (`docs/CONTRACT.md`, section 1): the source run is the plan's
//! most recent full run; a pair can be rerun only if it ran in it; a pair
//! without `environmentId` expands to every environment its scenario ran on
//! there; `attempt` is 1 + the times the pair ran in the source run's chain
//! (the source run and every rerun made from it). Section 8 adds `statuses`
//! (select by current status, the latest attempt's), `onInFlight` (queue,
//! skip or refuse a named pair whose latest attempt is `QUEUED` or `RUNNING`)
//! and `MAX_ATTEMPTS`; their checks (1016, 1014, 1015) come after 1005.
//!
//! All of it is one statement, the server function `queue_rerun` (migration
//! 9, [`queries::QueueRerun`]): without an Idempotency-Key a rerun is one
//! round trip and one commit (issue 11). The function reports a failed check
//! as its code and arguments; [`answer`] words it as the contract does. It
//! locks each selected pair of the source run, not the run, so reruns of
//! disjoint pairs of one plan do not wait for each other while the attempts
//! of one pair stay consecutive; and it holds the plan's lock shared, which a
//! run of the plan (`crate::service::run`) takes exclusively: a run waits for
//! the reruns in progress, and a rerun that waited for a run takes that run
//! as its source.

use super::queue::{Accepted, QueueContext, QueueOutcome, QueueService, QueuedPair};
use crate::config::Limits;
use crate::db::queries;
use crate::domain::{OnInFlight, Refused, RerunRequest};
use crate::error::ApiError;
use diesel::prelude::*;
use serde::Serialize;
use uuid::Uuid;

/// The `data` of the 200 answer.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RerunAccepted {
    /// The rerun just created; `None` for a dry run.
    pub execution_id: Option<i64>,
    pub plan_id: i64,
    pub source_execution_id: i64,
    pub framework_type: String,
    pub queued: Vec<QueuedPair>,
    /// The named pairs left out because they are in flight (`onInFlight`
    /// `skip`, section 8); always present, usually empty.
    pub skipped: Vec<SkippedPair>,
}

/// A pair a rerun left out because it is in flight, with the execution and
/// attempt that hold it (section 8).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkippedPair {
    pub scenario_id: i64,
    pub environment_id: i64,
    /// The execution holding the pair's latest attempt.
    pub execution_id: i64,
    /// The pair's latest attempt.
    pub attempt: i32,
    /// `QUEUED` or `RUNNING`.
    #[schema(example = "QUEUED")]
    pub status: String,
}

/// What a rerun request produced.
pub type RerunOutcome = QueueOutcome<RerunAccepted>;

impl Accepted for RerunAccepted {
    fn execution_id(&self) -> Option<i64> {
        self.execution_id
    }
}

impl QueueService {
    /// Checks `request` against the database and, unless it is a dry run,
    /// records the rerun and its dispatch rows: one statement and one commit
    /// without an Idempotency-Key; with one, that statement between the
    /// key's two in one transaction ([`QueueService::queue`]).
    ///
    /// Errors, in the contract's order: 1000, 1002, 1010 (membership), 1004,
    /// 1005, 1007 and 1008 after expansion, then 1016, 1014, 1015 (section
    /// 8); 1012/1013 for Idempotency-Key misuse; 1011 when the database is
    /// unavailable. Nothing is written on any error.
    pub async fn rerun(
        &self,
        request: RerunRequest,
        context: QueueContext,
    ) -> Result<RerunOutcome, ApiError> {
        let dry_run = request.dry_run;
        self.queue(request, dry_run, context, Self::queue_rerun)
            .await
    }

    /// Checks and, unless a dry run, writes the rerun in one statement
    /// ([`queries::QueueRerun`]); the failed check becomes its contract
    /// error ([`answer`]).
    fn queue_rerun(
        &self,
        conn: &mut PgConnection,
        request: &RerunRequest,
        write: &queries::WriteContext<'_>,
    ) -> Result<RerunAccepted, ApiError> {
        let limits = &self.limits;
        let scenario_ids: Vec<i64> = request.pairs.iter().map(|p| p.scenario_id).collect();
        let environment_ids: Vec<Option<i64>> =
            request.pairs.iter().map(|p| p.environment_id).collect();
        let row: queries::QueueRerunRow = queries::QueueRerun {
            plan_id: request.plan_id,
            user_id: request.user_id,
            framework_type: &request.framework_type,
            scenario_ids: &scenario_ids,
            environment_ids: &environment_ids,
            statuses: &request.statuses,
            on_in_flight: on_in_flight_name(request.on_in_flight),
            max_pairs: i32::try_from(limits.max_pairs).unwrap_or(i32::MAX),
            max_attempts: limits.max_attempts,
            dry_run: request.dry_run,
            write,
            queue_timeout_secs: self.queue_timeout_secs,
            retry_failed: request.retry_failed,
            callback_url: request.callback_url.as_deref(),
        }
        .get_result(conn)?;
        answer(request, limits, row)
    }
}

/// `onInFlight` as `queue_rerun` takes it (the request's own spelling).
fn on_in_flight_name(on_in_flight: OnInFlight) -> &'static str {
    match on_in_flight {
        OnInFlight::Queue => "queue",
        OnInFlight::Skip => "skip",
        OnInFlight::Refuse => "refuse",
    }
}

/// The 200 answer of `row`, or the contract error its failed check stands
/// for ([`crate::domain::Refusal`]).
fn answer(
    request: &RerunRequest,
    limits: &Limits,
    row: queries::QueueRerunRow,
) -> Result<RerunAccepted, ApiError> {
    if let Some(refusal) = row.refusal().map_err(anyhow::Error::from)? {
        return Err(Refused {
            plan_id: request.plan_id,
            user_id: request.user_id,
            max_pairs: limits.max_pairs,
            max_attempts: limits.max_attempts,
            statuses: &request.statuses,
            framework_type: Some(&request.framework_type),
        }
        .error(refusal));
    }
    let source_execution_id = row
        .source_id
        .ok_or_else(|| anyhow::anyhow!("queue_rerun answered no source run"))?;
    let scenarios = row.queued_scenario_ids.unwrap_or_default();
    let environments = row.queued_environment_ids.unwrap_or_default();
    let attempts = row.queued_attempts.unwrap_or_default();
    let message_ids = row.queued_message_ids.unwrap_or_default();
    let queued = scenarios
        .iter()
        .zip(&environments)
        .zip(&attempts)
        .enumerate()
        .map(
            |(i, ((&scenario_id, &environment_id), &attempt))| QueuedPair {
                scenario_id,
                environment_id,
                attempt,
                message_id: message_ids.get(i).map(Uuid::to_string),
            },
        )
        .collect();
    let skipped_scenarios = row.skipped_scenario_ids.unwrap_or_default();
    let skipped_environments = row.skipped_environment_ids.unwrap_or_default();
    let holders = row.skipped_execution_ids.unwrap_or_default();
    let skipped_attempts = row.skipped_attempts.unwrap_or_default();
    let statuses = row.skipped_statuses.unwrap_or_default();
    let skipped = skipped_scenarios
        .iter()
        .zip(&skipped_environments)
        .zip(holders.iter().zip(&skipped_attempts).zip(statuses))
        .map(
            |((&scenario_id, &environment_id), ((&execution_id, &attempt), status))| SkippedPair {
                scenario_id,
                environment_id,
                execution_id,
                attempt,
                status,
            },
        )
        .collect();
    Ok(RerunAccepted {
        execution_id: row.new_execution_id,
        plan_id: request.plan_id,
        source_execution_id,
        framework_type: request.framework_type.clone(),
        queued,
        skipped,
    })
}
