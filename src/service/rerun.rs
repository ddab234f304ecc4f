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

use crate::config::Limits;
use crate::db::queries;
use crate::db::Db;
use crate::domain::{OnInFlight, Refused, RerunRequest};
use crate::error::{ApiError, Envelope};
use crate::idempotency::{self, IdempotencyKey, Replay};
use diesel::prelude::*;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

/// One pair in the 200 answer.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueuedPair {
    pub scenario_id: i64,
    pub environment_id: i64,
    pub attempt: i32,
    /// `None` for a dry run, which queues nothing.
    pub message_id: Option<String>,
}

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
#[derive(Debug)]
pub enum RerunOutcome {
    /// Committed (or validated, for a dry run).
    Accepted(RerunAccepted),
    /// A retry with a known Idempotency-Key: the first answer, as stored.
    Replayed { status: u16, body: String },
}

/// Who asks and how: what the request carries besides its body.
#[derive(Debug, Clone, Default)]
pub struct RerunContext {
    /// The token's subject; scope of the Idempotency-Key.
    pub subject: String,
    /// `X-Request-Id`, carried as the AMQP `correlation_id`.
    pub correlation_id: Option<String>,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// The rerun use case, and the run of a plan (`crate::service::run`); cheap
/// to clone.
#[derive(Clone)]
pub struct RerunService {
    pub(super) db: Db,
    pub(super) relay_wakeup: Arc<Notify>,
    /// `MAX_PAIRS` and `MAX_ATTEMPTS`.
    pub(super) limits: Limits,
    /// The configured framework types (a plan's own must be one, section 7).
    pub(super) framework_types: Arc<[String]>,
    pub(super) idempotency_retention: Duration,
    /// `AMQP_EXCHANGE`, recorded on every dispatch row written.
    pub(super) exchange: Arc<str>,
}

impl RerunService {
    /// `relay_wakeup` is notified after every commit that wrote dispatch rows;
    /// `exchange` (`AMQP_EXCHANGE`) is recorded on them.
    pub fn new(
        db: Db,
        relay_wakeup: Arc<Notify>,
        limits: Limits,
        framework_types: &[String],
        idempotency_retention: Duration,
        exchange: &str,
    ) -> Self {
        RerunService {
            db,
            relay_wakeup,
            limits,
            framework_types: framework_types.into(),
            idempotency_retention,
            exchange: exchange.into(),
        }
    }

    /// Checks `request` against the database and, unless it is a dry run,
    /// records the rerun and its dispatch rows: one statement and one commit
    /// without an Idempotency-Key; with one, that statement between the
    /// key's two in one transaction.
    ///
    /// Errors, in the contract's order: 1000, 1002, 1010 (membership), 1004,
    /// 1005, 1007 and 1008 after expansion, then 1016, 1014, 1015 (section
    /// 8); 1012/1013 for Idempotency-Key misuse; 1011 when the database is
    /// unavailable. Nothing is written on any error.
    pub async fn rerun(
        &self,
        request: RerunRequest,
        context: RerunContext,
    ) -> Result<RerunOutcome, ApiError> {
        let limits = self.limits.clone();
        let retention = self.idempotency_retention;
        let exchange = self.exchange.clone();
        // kept across a second try after a lost connection (run_replayable)
        let first_message_id = Uuid::new_v4();
        let mut tries = 0;
        let outcome = self
            .db
            .run_replayable(move |conn| {
                tries += 1;
                let call = Call {
                    limits: &limits,
                    exchange: &exchange,
                    first_message_id,
                    replay: tries > 1,
                };
                if context.idempotency_key.is_none() {
                    return queue_rerun(conn, &request, &context, &call)
                        .map(RerunOutcome::Accepted);
                }
                conn.transaction(|conn| {
                    let key = match check_key(conn, &request, request.dry_run, &context, retention)?
                    {
                        Keyed::Replay(replay) => {
                            return Ok(RerunOutcome::Replayed {
                                status: replay.status,
                                body: replay.body,
                            })
                        }
                        Keyed::Proceed(key) => key,
                    };
                    let accepted = queue_rerun(conn, &request, &context, &call)?;
                    store_answer(conn, &context, key, &accepted, accepted.execution_id)?;
                    Ok(RerunOutcome::Accepted(accepted))
                })
            })
            .await?;
        if matches!(&outcome, RerunOutcome::Accepted(a) if a.execution_id.is_some()) {
            self.relay_wakeup.notify_one();
        }
        Ok(outcome)
    }
}

/// What a rerun's call takes besides the request.
struct Call<'a> {
    limits: &'a Limits,
    exchange: &'a str,
    /// See [`queries::WriteContext`].
    first_message_id: Uuid,
    /// Made again after a lost connection.
    replay: bool,
}

/// Checks and, unless a dry run, writes the rerun in one statement
/// ([`queries::QueueRerun`]); the failed check becomes its contract error
/// ([`answer`]).
fn queue_rerun(
    conn: &mut PgConnection,
    request: &RerunRequest,
    context: &RerunContext,
    call: &Call,
) -> Result<RerunAccepted, ApiError> {
    let limits = call.limits;
    let write = queries::WriteContext::now(
        context.correlation_id.as_deref(),
        call.exchange,
        call.first_message_id,
        call.replay,
    );
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
        write: &write,
    }
    .get_result(conn)?;
    answer(request, limits, row)
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
        return Err(refusal.into_error(&Refused {
            plan_id: request.plan_id,
            user_id: request.user_id,
            max_pairs: limits.max_pairs,
            max_attempts: limits.max_attempts,
            statuses: &request.statuses,
        }));
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

/// What an Idempotency-Key asks of a request.
pub(super) enum Keyed<'a> {
    /// A retry: send the first answer again.
    Replay(Replay),
    /// Go on; store the answer under this key and normalised request (none
    /// without a key, or for a dry run).
    Proceed(Option<(&'a IdempotencyKey, String)>),
}

/// Checks the request's Idempotency-Key, if any ([`idempotency::begin`]:
/// 1013 while held, 1012 for another request). `request` serialised is the
/// normalised request. A dry run with a key is checked against it (a key used
/// for a real request is 1012 for its dry run) but never stores it.
pub(super) fn check_key<'a, R: Serialize>(
    conn: &mut PgConnection,
    request: &R,
    dry_run: bool,
    context: &'a RerunContext,
    retention: Duration,
) -> Result<Keyed<'a>, ApiError> {
    let Some(key) = &context.idempotency_key else {
        return Ok(Keyed::Proceed(None));
    };
    let normalised = serde_json::to_string(request).map_err(anyhow::Error::from)?;
    if let Some(replay) = idempotency::begin(conn, &context.subject, key, &normalised, retention)? {
        return Ok(Keyed::Replay(replay));
    }
    Ok(Keyed::Proceed((!dry_run).then_some((key, normalised))))
}

/// Stores the 200 answer around `accepted` under `key` (from [`check_key`]),
/// in the request's transaction.
pub(super) fn store_answer<T: Serialize>(
    conn: &mut PgConnection,
    context: &RerunContext,
    key: Option<(&IdempotencyKey, String)>,
    accepted: &T,
    execution_id: Option<i64>,
) -> Result<(), ApiError> {
    let Some((key, normalised)) = key else {
        return Ok(());
    };
    let body = serde_json::to_string(&Envelope::success(accepted)).map_err(anyhow::Error::from)?;
    idempotency::finish(
        conn,
        &context.subject,
        key,
        &normalised,
        &body,
        execution_id,
    )
}
