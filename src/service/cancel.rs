//! Cancelling (contract, section 16): `POST /executions/{id}/cancel` and
//! `POST /plans/{id}/cancel` end every `QUEUED` or `RUNNING` pair of the
//! execution (of every execution of the plan) `ABORTED` with reason
//! `CANCELLED`, in one transaction that also finishes the executions this
//! empties (their `execution.finished` events, as the results path writes
//! them: `results::apply::close_pairs`) and writes one `execution.cancelled`
//! event per execution through the outbox.
//!
//! Locks: the pairs first, in primary-key order, then the executions in id
//! order — the order of the results path and the deadline sweep, so they
//! wait for each other instead of deadlocking. A pair a runner's result or a
//! deadline ended first is left as it is; a result that arrives after the
//! cancel changes nothing (section 9's first terminal status wins).

use crate::auth::ReadScope;
use crate::db::ends::{self, CancelTarget, EndedPair, Ending};
use crate::db::models::{MESSAGE_EXECUTION_CANCELLED, REASON_CANCELLED, STATUS_ABORTED};
use crate::db::outbox::{self, NewEvent};
use crate::db::{reads, Db};
use crate::domain::events::{CancelledMessage, ExecutionCancelled};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::results::apply::{close_pairs, ended as closed, Retries};
use crate::results::event::ExecutionFinished;
use crate::service::reads::{status_of_row, ExecutionStatus};
use chrono::Utc;
use diesel::prelude::*;
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::Notify;
use utoipa::ToSchema;

/// What a cancel names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelScope {
    /// One execution (404 code 1017 when unknown or not visible).
    Execution(i64),
    /// Every execution of a plan (404 code 1000 when unknown or not visible).
    Plan(i64),
}

/// A pair a cancel ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelledPair {
    pub execution_id: i64,
    pub scenario_id: i64,
    pub environment_id: i64,
    pub attempt: i32,
    /// `QUEUED` or `RUNNING`: its status before the cancel.
    #[schema(example = "RUNNING")]
    pub previous_status: String,
}

/// An execution a cancel touched, with its status after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelledExecution {
    pub execution_id: i64,
    pub status: ExecutionStatus,
}

/// The answer of a cancel (contract, section 16).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelAnswer {
    /// Ordered by execution, scenario, environment.
    pub cancelled: Vec<CancelledPair>,
    /// Ordered by execution.
    pub executions: Vec<CancelledExecution>,
}

/// The cancel use case; cheap to clone.
#[derive(Clone)]
pub struct CancelService {
    db: Db,
    exchange: String,
    relay_wakeup: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl CancelService {
    /// `exchange` is `AMQP_EXCHANGE` (recorded on the events' dispatch
    /// rows); `relay_wakeup` is notified after a cancel wrote events.
    pub fn new(db: Db, exchange: &str, relay_wakeup: Arc<Notify>, metrics: Arc<Metrics>) -> Self {
        CancelService {
            db,
            exchange: exchange.to_owned(),
            relay_wakeup,
            metrics,
        }
    }

    /// Cancels what `scope` names, as far as `visible` may see it;
    /// `cancelled_by` is the token's user id.
    ///
    /// Errors: 404 code 1017 / 1000 for an unknown or invisible execution /
    /// plan; 409 code 1020 when nothing is in flight; 503 code 1011.
    pub async fn cancel(
        &self,
        scope: CancelScope,
        visible: ReadScope,
        cancelled_by: Option<i64>,
    ) -> Result<CancelAnswer, ApiError> {
        let exchange = self.exchange.clone();
        let (answer, finished) = self
            .db
            .run(move |conn| {
                conn.transaction(|conn| cancel_in(conn, scope, visible, cancelled_by, &exchange))
            })
            .await?;
        self.metrics
            .pairs_ended(REASON_CANCELLED, answer.cancelled.len());
        for event in &finished {
            self.metrics.execution_finished(event.flaky.len());
        }
        log::info!(
            "cancel: {} pairs of executions {:?} cancelled, {} executions finished",
            answer.cancelled.len(),
            answer
                .executions
                .iter()
                .map(|e| e.execution_id)
                .collect::<Vec<_>>(),
            finished.len()
        );
        self.relay_wakeup.notify_one();
        Ok(answer)
    }
}

/// The cancel's transaction on `conn`.
fn cancel_in(
    conn: &mut PgConnection,
    scope: CancelScope,
    visible: ReadScope,
    cancelled_by: Option<i64>,
    exchange: &str,
) -> Result<(CancelAnswer, Vec<ExecutionFinished>), ApiError> {
    let member = visible.member();
    let targets: Vec<CancelTarget> =
        match scope {
            CancelScope::Execution(id) => vec![ends::visible_execution(conn, id, member)?
                .ok_or(ApiError::ExecutionNotFound(id))?],
            CancelScope::Plan(id) => ends::open_executions_of_plan(conn, id, member)?
                .ok_or(ApiError::PlanNotFoundToRead)?,
        };
    let ids: Vec<i64> = targets.iter().map(|t| t.execution_id).collect();
    let ended = ends::end_in_executions(
        conn,
        &ids,
        Ending {
            status: STATUS_ABORTED,
            reason: REASON_CANCELLED,
            detail: None,
        },
    )?;
    if ended.is_empty() {
        return Err(match scope {
            CancelScope::Execution(id) => ApiError::ExecutionAlreadyFinished(id),
            CancelScope::Plan(id) => ApiError::NothingInFlight(id),
        });
    }
    let finished = close_pairs(conn, ended.iter().map(closed), exchange, Retries::Stopped)?;
    let now = Utc::now();
    let mut executions = Vec::new();
    for target in &targets {
        let pairs: Vec<&EndedPair> = ended
            .iter()
            .filter(|p| p.execution_id == target.execution_id)
            .collect();
        if pairs.is_empty() {
            continue;
        }
        write_cancelled_event(conn, target, &pairs, cancelled_by, now, exchange)?;
        let row = reads::execution(conn, target.execution_id, None)?
            .ok_or(diesel::result::Error::NotFound)?;
        executions.push(CancelledExecution {
            execution_id: target.execution_id,
            status: status_of_row(&row),
        });
    }
    let cancelled = ended
        .into_iter()
        .map(|p| CancelledPair {
            execution_id: p.execution_id,
            scenario_id: p.scenario_id,
            environment_id: p.environment_id,
            attempt: p.attempt,
            previous_status: p.previous_status,
        })
        .collect();
    Ok((
        CancelAnswer {
            cancelled,
            executions,
        },
        finished,
    ))
}

/// Writes the `execution.cancelled` event of `target`'s cancelled `pairs`
/// that have a run message. Its dispatch row comes after theirs, and the
/// relay publishes in row order, so a runner has the run message before it
/// hears of the cancel, or hears of it before the message arrives and skips
/// it. Nothing when no pair has a message.
fn write_cancelled_event(
    conn: &mut PgConnection,
    target: &CancelTarget,
    pairs: &[&EndedPair],
    cancelled_by: Option<i64>,
    at: chrono::DateTime<Utc>,
    exchange: &str,
) -> QueryResult<()> {
    let messages: Vec<CancelledMessage> = pairs
        .iter()
        .filter_map(|p| {
            p.message_id.map(|message_id| CancelledMessage {
                message_id,
                scenario_id: p.scenario_id,
                environment_id: p.environment_id,
                attempt: p.attempt,
            })
        })
        .collect();
    if messages.is_empty() {
        return Ok(());
    }
    let event = ExecutionCancelled::new(
        target.execution_id,
        target.plan_id,
        target.framework_type.as_deref().unwrap_or("UNKNOWN"),
        cancelled_by,
        at,
        messages,
    );
    let body = serde_json::to_string(&event)
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    outbox::insert_event(
        conn,
        &NewEvent {
            execution_id: target.execution_id,
            message_id: event.event_id,
            routing_key: &event.routing_key(),
            message_type: MESSAGE_EXECUTION_CANCELLED,
            body: &body,
            exchange,
        },
    )
}
