//! The rerun use case: check a parsed request against the database, then
//! write the rerun execution, its pairs and one dispatch (outbox) row per pair
//! in one transaction (the pattern of crates.io's `publish.rs`, which enqueues
//! its jobs on the same connection and transaction as the data).
//!
//! Rules (`docs/CONTRACT.md`, section 1): the source run is the plan's
//! most recent full run; a pair can be rerun only if it ran in it; a pair
//! without `environmentId` expands to every environment its scenario ran on
//! there; `attempt` is 1 + the times the pair ran in the source run's chain
//! (the source run and every rerun made from it). Reruns of one source run are
//! serialised by a row lock on it, so attempts are never handed out twice.

use crate::db::models::{KIND_RERUN, MESSAGE_RERUN};
use crate::db::queries::{self, SourcePair};
use crate::db::Db;
use crate::domain::{EnvironmentInfo, RerunMessage, RerunRequest, ScenarioInfo};
use crate::error::{ApiError, Envelope};
use crate::idempotency::{self, IdempotencyKey};
use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use serde::Serialize;
use std::collections::HashSet;
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

/// The rerun use case; cheap to clone.
#[derive(Clone)]
pub struct RerunService {
    db: Db,
    relay_wakeup: Arc<Notify>,
    max_pairs: usize,
    idempotency_retention: Duration,
}

impl RerunService {
    /// `relay_wakeup` is notified after every commit that wrote dispatch rows.
    pub fn new(
        db: Db,
        relay_wakeup: Arc<Notify>,
        max_pairs: usize,
        idempotency_retention: Duration,
    ) -> Self {
        RerunService {
            db,
            relay_wakeup,
            max_pairs,
            idempotency_retention,
        }
    }

    /// Checks `request` against the database and, unless it is a dry run,
    /// records the rerun and its dispatch rows in one transaction.
    ///
    /// Errors, in the contract's order: 1000, 1002, 1010 (membership), 1004,
    /// 1005, 1007 and 1008 after expansion; 1012/1013 for Idempotency-Key
    /// misuse; 1011 when the database is unavailable. Nothing is written
    /// on any error.
    pub async fn rerun(
        &self,
        request: RerunRequest,
        context: RerunContext,
    ) -> Result<RerunOutcome, ApiError> {
        let max_pairs = self.max_pairs;
        let retention = self.idempotency_retention;
        let outcome = self
            .db
            .run(move |conn| {
                conn.transaction(|conn| {
                    rerun_in_transaction(conn, &request, &context, max_pairs, retention)
                })
            })
            .await?;
        if matches!(&outcome, RerunOutcome::Accepted(a) if a.execution_id.is_some()) {
            self.relay_wakeup.notify_one();
        }
        Ok(outcome)
    }
}

fn rerun_in_transaction(
    conn: &mut PgConnection,
    request: &RerunRequest,
    context: &RerunContext,
    max_pairs: usize,
    retention: Duration,
) -> Result<RerunOutcome, ApiError> {
    // a dry run with a key is checked against it (a key used for a real
    // rerun is 1012 for its dry run) but never stores it
    let key = match &context.idempotency_key {
        Some(key) => {
            let normalised = serde_json::to_string(request).map_err(anyhow::Error::from)?;
            if let Some(replay) =
                idempotency::begin(conn, &context.subject, key, &normalised, retention)?
            {
                return Ok(RerunOutcome::Replayed {
                    status: replay.status,
                    body: replay.body,
                });
            }
            (!request.dry_run).then_some((key, normalised))
        }
        None => None,
    };
    let checked = validate(conn, request)?;
    let source_pairs = source_pairs(conn, checked.source_execution_id, request)?;
    let selected = select_pairs(request, &source_pairs, max_pairs)?;
    let mut accepted = RerunAccepted {
        execution_id: None,
        plan_id: request.plan_id,
        source_execution_id: checked.source_execution_id,
        framework_type: request.framework_type.clone(),
        queued: selected
            .iter()
            .map(|p| QueuedPair {
                scenario_id: p.scenario_id,
                environment_id: p.environment_id,
                attempt: p.runs.saturating_add(1),
                message_id: None,
            })
            .collect(),
    };
    let Some(execution_id) = checked.execution_id else {
        return Ok(RerunOutcome::Accepted(accepted));
    };
    write_rerun(
        conn,
        request,
        context,
        execution_id,
        &selected,
        &mut accepted,
    )?;
    if let Some((key, normalised)) = key {
        let body =
            serde_json::to_string(&Envelope::success(&accepted)).map_err(anyhow::Error::from)?;
        idempotency::finish(
            conn,
            &context.subject,
            key,
            &normalised,
            &body,
            accepted.execution_id,
        )?;
    }
    Ok(RerunOutcome::Accepted(accepted))
}

/// What the validation query found: the source run (locked) and, unless
/// this is a dry run, the id reserved for the rerun.
struct Checked {
    source_execution_id: i64,
    execution_id: Option<i64>,
}

/// In one round trip ([`queries::Validate`]): 1000 unknown plan, 1002 unknown
/// or inactive user, 1010 user not a member of the plan's project, 1004 no
/// full run; locks the plan's most recent full run for this transaction.
fn validate(conn: &mut PgConnection, request: &RerunRequest) -> Result<Checked, ApiError> {
    let found: queries::Validation = queries::Validate {
        plan_id: request.plan_id,
        user_id: request.user_id,
        allocate: !request.dry_run,
    }
    .get_result(conn)?;
    if !found.plan_found {
        return Err(ApiError::PlanNotFound);
    }
    if !found.user_active {
        return Err(ApiError::UserNotFound);
    }
    if !found.member {
        return Err(ApiError::AccessDenied(format!(
            "user {} is not a member of the project of plan {}",
            request.user_id, request.plan_id
        )));
    }
    let source_execution_id = found
        .source_execution_id
        .ok_or(ApiError::NoExecutedResults(request.plan_id))?;
    Ok(Checked {
        source_execution_id,
        execution_id: found.execution_id,
    })
}

/// The pairs of the source run for the requested scenarios, ordered by
/// scenario then environment, each with its runs in the source run's chain
/// ([`queries::SourcePairs`]). Runs after [`validate`] locked the source run,
/// in a statement of its own, so it sees every rerun committed before the lock.
fn source_pairs(
    conn: &mut PgConnection,
    source_execution_id: i64,
    request: &RerunRequest,
) -> Result<Vec<SourcePair>, ApiError> {
    let scenario_ids: Vec<i64> = request.pairs.iter().map(|p| p.scenario_id).collect();
    Ok(queries::SourcePairs {
        source_execution_id,
        scenario_ids: &scenario_ids,
    }
    .load(conn)?)
}

/// Expands the requested pairs against the source run: 1005 for a pair that
/// did not run there, 1007 for a pair named twice after expansion, 1008 when
/// expansion exceeds `max_pairs`.
fn select_pairs<'a>(
    request: &RerunRequest,
    source: &'a [SourcePair],
    max_pairs: usize,
) -> Result<Vec<&'a SourcePair>, ApiError> {
    let mut selected = Vec::with_capacity(request.pairs.len());
    let mut seen = HashSet::with_capacity(request.pairs.len());
    for wanted in &request.pairs {
        let matching: Vec<&SourcePair> = source
            .iter()
            .filter(|p| {
                p.scenario_id == wanted.scenario_id
                    && wanted.environment_id.is_none_or(|e| e == p.environment_id)
            })
            .collect();
        if matching.is_empty() {
            return Err(ApiError::PairNotInLastRun {
                plan_id: request.plan_id,
                scenario_id: wanted.scenario_id,
                environment_id: wanted.environment_id,
            });
        }
        for pair in matching {
            if !seen.insert((pair.scenario_id, pair.environment_id)) {
                return Err(ApiError::DuplicatePair {
                    scenario_id: pair.scenario_id,
                    environment_id: pair.environment_id,
                });
            }
            selected.push(pair);
        }
    }
    if selected.len() > max_pairs {
        return Err(ApiError::TooManyPairs {
            count: selected.len(),
            max: max_pairs,
        });
    }
    Ok(selected)
}

/// Inserts the rerun execution (id `execution_id`, reserved by [`validate`]),
/// its pairs and their dispatch rows in one statement
/// ([`queries::WriteExecution`]); fills in `execution_id` and each pair's `message_id`.
fn write_rerun(
    conn: &mut PgConnection,
    request: &RerunRequest,
    context: &RerunContext,
    execution_id: i64,
    selected: &[&SourcePair],
    accepted: &mut RerunAccepted,
) -> Result<(), ApiError> {
    let requested_at: DateTime<Utc> = Utc::now();
    accepted.execution_id = Some(execution_id);
    let requested_at_text = requested_at.to_rfc3339_opts(SecondsFormat::Secs, true);
    let n = selected.len();
    let (mut scenario_ids, mut environment_ids, mut attempts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut message_ids, mut bodies) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (queued, source) in accepted.queued.iter_mut().zip(selected) {
        let message_id = Uuid::new_v4();
        let message = RerunMessage {
            message_id: message_id.to_string(),
            execution_id,
            source_execution_id: accepted.source_execution_id,
            plan_id: request.plan_id,
            user_id: request.user_id,
            framework_type: request.framework_type.clone(),
            scenario_id: queued.scenario_id,
            environment_id: queued.environment_id,
            attempt: queued.attempt,
            requested_at: requested_at_text.clone(),
            scenario: ScenarioInfo {
                name: source.scenario_name.clone(),
            },
            environment: EnvironmentInfo {
                name: source.environment_name.clone(),
                platform: source.platform.clone(),
                version: source.version.clone(),
            },
        };
        bodies.push(serde_json::to_string(&message).map_err(anyhow::Error::from)?);
        scenario_ids.push(queued.scenario_id);
        environment_ids.push(queued.environment_id);
        attempts.push(queued.attempt);
        message_ids.push(message_id);
        queued.message_id = Some(message.message_id);
    }
    queries::WriteExecution {
        execution_id,
        plan_id: request.plan_id,
        kind: KIND_RERUN,
        source_execution_id: Some(accepted.source_execution_id),
        requested_by: request.user_id,
        framework_type: &request.framework_type,
        requested_at,
        message_type: MESSAGE_RERUN,
        correlation_id: context.correlation_id.as_deref(),
        scenario_ids: &scenario_ids,
        environment_ids: &environment_ids,
        attempts: &attempts,
        message_ids: &message_ids,
        bodies: &bodies,
    }
    .execute(conn)?;
    Ok(())
}
