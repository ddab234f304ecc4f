//! The run of a whole plan (contract, section 7): a new full run (`kind`
//! `RUN`) of the plan's scenarios × environments (or the given subsets), each
//! pair at attempt 1, written with one dispatch row per pair (`type`
//! `scenario.run`), like a rerun. The run becomes the plan's source run for
//! later reruns.
//!
//! One statement, the server function `queue_run` (migration 9,
//! [`queries::QueueRun`]): one round trip and one commit without an
//! Idempotency-Key. It takes the plan's lock exclusively, which reruns hold
//! shared: the run waits for the reruns in progress and its in-flight guard
//! (1014) sees every pair they queued; a rerun that waits for the run takes
//! it as its source. Runs of one plan go one after another.

use super::queue::{Accepted, QueueContext, QueueOutcome, QueueService, QueuedPair};
use crate::db::queries;
use crate::domain::{Refused, RunRequest};
use crate::error::ApiError;
use diesel::prelude::*;
use serde::Serialize;
use uuid::Uuid;

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
pub type RunOutcome = QueueOutcome<RunAccepted>;

impl Accepted for RunAccepted {
    fn execution_id(&self) -> Option<i64> {
        self.execution_id
    }
}

impl QueueService {
    /// Checks a run `request` against the database and, unless it is a dry
    /// run, records the run and its dispatch rows: one statement and one
    /// commit without an Idempotency-Key; with one, that statement between
    /// the key's two in one transaction ([`QueueService::queue`]).
    ///
    /// Errors, in the contract's order: 1000, 1002, 1010 (membership), 1006
    /// when neither the body nor the plan names a framework type (1003 when
    /// the plan's is not configured), 1019, 1018, 1008, 1014 unless `force`;
    /// 1012/1013 for Idempotency-Key misuse; 1011 when the database is
    /// unavailable. Nothing is written on any error.
    pub async fn run(
        &self,
        request: RunRequest,
        context: QueueContext,
    ) -> Result<RunOutcome, ApiError> {
        let dry_run = request.dry_run;
        self.queue(request, dry_run, context, Self::queue_run).await
    }

    /// Checks and, unless a dry run, writes the run in one statement
    /// ([`queries::QueueRun`]); the failed check becomes its contract error.
    fn queue_run(
        &self,
        conn: &mut PgConnection,
        request: &RunRequest,
        write: &queries::WriteContext<'_>,
    ) -> Result<RunAccepted, ApiError> {
        let row: queries::QueueRunRow = queries::QueueRun {
            plan_id: request.plan_id,
            user_id: request.user_id,
            framework_type: request.framework_type.as_deref(),
            framework_types: &self.framework_types,
            scenario_ids: request.scenario_ids.as_deref(),
            environment_ids: request.environment_ids.as_deref(),
            force: request.force,
            max_pairs: i32::try_from(self.limits.max_pairs).unwrap_or(i32::MAX),
            dry_run: request.dry_run,
            write,
            queue_timeout_secs: self.queue_timeout_secs,
            retry_failed: request.retry_failed,
            callback_url: request.callback_url.as_deref(),
        }
        .get_result(conn)?;
        self.answer(request, row)
    }

    /// The 200 answer of `row`, or the contract error its failed check
    /// stands for ([`crate::domain::Refusal`]).
    fn answer(
        &self,
        request: &RunRequest,
        row: queries::QueueRunRow,
    ) -> Result<RunAccepted, ApiError> {
        let plan_id = request.plan_id;
        if let Some(refusal) = row.refusal().map_err(anyhow::Error::from)? {
            return Err(Refused {
                plan_id,
                user_id: request.user_id,
                max_pairs: self.limits.max_pairs,
                max_attempts: self.limits.max_attempts,
                statuses: &[],
                framework_type: request.framework_type.as_deref(),
            }
            .error(refusal));
        }
        let framework_type = row
            .framework_type_used
            .ok_or_else(|| anyhow::anyhow!("queue_run answered no framework type"))?;
        let scenarios = row.queued_scenario_ids.unwrap_or_default();
        let environments = row.queued_environment_ids.unwrap_or_default();
        let message_ids = row.queued_message_ids.unwrap_or_default();
        let queued = scenarios
            .iter()
            .zip(&environments)
            .enumerate()
            .map(|(i, (&scenario_id, &environment_id))| QueuedPair {
                scenario_id,
                environment_id,
                attempt: 1,
                message_id: message_ids.get(i).map(Uuid::to_string),
            })
            .collect();
        Ok(RunAccepted {
            execution_id: row.new_execution_id,
            plan_id,
            source_execution_id: row.new_execution_id,
            framework_type,
            queued,
        })
    }
}
