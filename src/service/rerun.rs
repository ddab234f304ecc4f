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
//!
//! Section 8 adds: `statuses` selects the source run's pairs by current status
//! (the latest attempt's); `onInFlight` queues, skips or refuses a named pair
//! whose latest attempt is `QUEUED` or `RUNNING`; no attempt beyond
//! `MAX_ATTEMPTS`. Those checks (1016, 1014, 1015) run after 1005, in that
//! order, under the same lock, so they see every rerun committed before.
//!
//! A run of the plan (`crate::service::run`) takes the same lock on the
//! source run before it commits the new source; a rerun that waited for that
//! lock finds its source superseded and moves to the new one (see
//! [`locked_source`]).

use crate::config::Limits;
use crate::db::models::{KIND_RERUN, MESSAGE_RERUN};
use crate::db::queries::{self, SourcePair};
use crate::db::Db;
use crate::domain::{EnvironmentInfo, OnInFlight, RerunMessage, RerunRequest, ScenarioInfo};
use crate::error::{ApiError, Envelope};
use crate::idempotency::{self, IdempotencyKey, Replay};
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
}

impl RerunService {
    /// `relay_wakeup` is notified after every commit that wrote dispatch rows.
    pub fn new(
        db: Db,
        relay_wakeup: Arc<Notify>,
        limits: Limits,
        framework_types: &[String],
        idempotency_retention: Duration,
    ) -> Self {
        RerunService {
            db,
            relay_wakeup,
            limits,
            framework_types: framework_types.into(),
            idempotency_retention,
        }
    }

    /// Checks `request` against the database and, unless it is a dry run,
    /// records the rerun and its dispatch rows in one transaction.
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
        let outcome = self
            .db
            .run(move |conn| {
                conn.transaction(|conn| {
                    rerun_in_transaction(conn, &request, &context, &limits, retention)
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
    limits: &Limits,
    retention: Duration,
) -> Result<RerunOutcome, ApiError> {
    let key = match check_key(conn, request, request.dry_run, context, retention)? {
        Keyed::Replay(replay) => {
            return Ok(RerunOutcome::Replayed {
                status: replay.status,
                body: replay.body,
            })
        }
        Keyed::Proceed(key) => key,
    };
    let (checked, source_pairs) = locked_source(conn, request)?;
    let selected = if request.statuses.is_empty() {
        select_pairs(request, &source_pairs, limits.max_pairs)?
    } else {
        select_by_status(request, &source_pairs, limits.max_pairs)?
    };
    let (selected, skipped) = apply_on_in_flight(request.on_in_flight, selected)?;
    check_attempts(&selected, limits.max_attempts)?;
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
        skipped,
    };
    let Some(execution_id) = checked.execution_id else {
        return Ok(RerunOutcome::Accepted(accepted));
    };
    let to_queue: Vec<PairToQueue> = selected
        .iter()
        .zip(&accepted.queued)
        .map(|(source, queued)| PairToQueue {
            scenario_id: queued.scenario_id,
            environment_id: queued.environment_id,
            attempt: queued.attempt,
            scenario: ScenarioInfo {
                name: source.scenario_name.clone(),
            },
            environment: EnvironmentInfo {
                name: source.environment_name.clone(),
                platform: source.platform.clone(),
                version: source.version.clone(),
            },
        })
        .collect();
    let new = NewExecution {
        execution_id,
        plan_id: request.plan_id,
        user_id: request.user_id,
        framework_type: &request.framework_type,
        kind: KIND_RERUN,
        source_execution_id: Some(checked.source_execution_id),
        message_type: MESSAGE_RERUN,
        correlation_id: context.correlation_id.as_deref(),
    };
    let message_ids = write_execution(conn, &new, &to_queue)?;
    accepted.execution_id = Some(execution_id);
    for (queued, message_id) in accepted.queued.iter_mut().zip(message_ids) {
        queued.message_id = Some(message_id);
    }
    store_answer(conn, context, key, &accepted, accepted.execution_id)?;
    Ok(RerunOutcome::Accepted(accepted))
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
    super::check_access(found.access, request.plan_id, request.user_id)?;
    let source_execution_id = found
        .source_execution_id
        .ok_or(ApiError::NoExecutedResults(request.plan_id))?;
    Ok(Checked {
        source_execution_id,
        execution_id: found.execution_id,
    })
}

/// Times a rerun follows its source run to a newer one before it gives up
/// (each needs a run of the plan committed while the rerun waited).
const SUPERSEDED_TRIES: usize = 3;

/// [`validate`], then the source run's pairs for the requested scenarios (all
/// of them with `statuses`), each with its latest attempt in the chain
/// ([`queries::SourcePairs`]), in a statement of its own after the lock, so it
/// sees every rerun committed before the lock.
///
/// A run of the plan locks the same source run before it commits a newer
/// one; a rerun that waited for that lock has a superseded source, for which
/// [`queries::SourcePairs`] finds nothing: it then locks the new source run
/// ([`queries::LatestRun`]) and reads again. So a rerun is always made from
/// the plan's latest full run at its commit, and a run's in-flight guard
/// never misses a rerun committed before it.
fn locked_source(
    conn: &mut PgConnection,
    request: &RerunRequest,
) -> Result<(Checked, Vec<SourcePair>), ApiError> {
    let scenario_ids: Option<Vec<i64>> = request
        .statuses
        .is_empty()
        .then(|| request.pairs.iter().map(|p| p.scenario_id).collect());
    let mut checked = validate(conn, request)?;
    for tries_left in (0..SUPERSEDED_TRIES).rev() {
        let pairs = queries::SourcePairs {
            plan_id: request.plan_id,
            source_execution_id: checked.source_execution_id,
            scenario_ids: scenario_ids.as_deref(),
        }
        .load(conn)?;
        if !pairs.is_empty() || tries_left == 0 {
            return Ok((checked, pairs));
        }
        let latest: queries::LatestRunRow = queries::LatestRun {
            plan_id: request.plan_id,
        }
        .get_result(conn)?;
        match latest.source_execution_id {
            Some(newer) if newer != checked.source_execution_id => {
                checked.source_execution_id = newer;
            }
            _ => return Ok((checked, pairs)),
        }
    }
    Ok((checked, Vec::new()))
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
    check_pair_count(selected.len(), max_pairs)?;
    Ok(selected)
}

/// 1008 when `count` exceeds `max_pairs`.
fn check_pair_count(count: usize, max_pairs: usize) -> Result<(), ApiError> {
    if count > max_pairs {
        return Err(ApiError::TooManyPairs {
            count,
            max: max_pairs,
        });
    }
    Ok(())
}

/// The source run's pairs whose current status is one of `statuses`, by
/// scenario then environment: 1016 when none is, 1008 beyond `max_pairs`.
/// These are never in flight (`statuses` names terminal statuses only).
fn select_by_status<'a>(
    request: &RerunRequest,
    source: &'a [SourcePair],
    max_pairs: usize,
) -> Result<Vec<&'a SourcePair>, ApiError> {
    let selected: Vec<&SourcePair> = source
        .iter()
        .filter(|p| request.statuses.contains(&p.current_status))
        .collect();
    if selected.is_empty() {
        return Err(ApiError::NoPairWithStatus {
            plan_id: request.plan_id,
            statuses: request.statuses.join(","),
        });
    }
    check_pair_count(selected.len(), max_pairs)?;
    Ok(selected)
}

/// Applies `onInFlight` to the selected pairs (section 8): `queue` keeps them
/// all; `refuse` is 1014 for the first in flight; `skip` leaves those out and
/// lists them, 1014 for the first when nothing would be left.
fn apply_on_in_flight(
    on_in_flight: OnInFlight,
    selected: Vec<&SourcePair>,
) -> Result<(Vec<&SourcePair>, Vec<SkippedPair>), ApiError> {
    let in_flight_error = |p: &SourcePair| ApiError::PairInFlight {
        scenario_id: p.scenario_id,
        environment_id: p.environment_id,
        execution_id: p.current_execution_id,
    };
    match on_in_flight {
        OnInFlight::Queue => Ok((selected, Vec::new())),
        OnInFlight::Refuse => match selected.iter().find(|p| p.in_flight()) {
            Some(p) => Err(in_flight_error(p)),
            None => Ok((selected, Vec::new())),
        },
        OnInFlight::Skip => {
            let (left_out, queued): (Vec<&SourcePair>, Vec<&SourcePair>) =
                selected.into_iter().partition(|p| p.in_flight());
            if let (true, Some(first)) = (queued.is_empty(), left_out.first()) {
                return Err(in_flight_error(first));
            }
            let skipped = left_out
                .iter()
                .map(|p| SkippedPair {
                    scenario_id: p.scenario_id,
                    environment_id: p.environment_id,
                    execution_id: p.current_execution_id,
                    attempt: p.runs,
                    status: p.current_status.clone(),
                })
                .collect();
            Ok((queued, skipped))
        }
    }
}

/// 1015 for the first pair whose next attempt would exceed `max_attempts`
/// (`MAX_ATTEMPTS`, section 8).
fn check_attempts(selected: &[&SourcePair], max_attempts: i32) -> Result<(), ApiError> {
    match selected.iter().find(|p| p.runs >= max_attempts) {
        Some(p) => Err(ApiError::AttemptLimit {
            scenario_id: p.scenario_id,
            environment_id: p.environment_id,
            max: max_attempts,
        }),
        None => Ok(()),
    }
}

/// The execution to write: everything but its pairs.
pub(super) struct NewExecution<'a> {
    /// Reserved by the validation query.
    pub execution_id: i64,
    pub plan_id: i64,
    pub user_id: i64,
    pub framework_type: &'a str,
    /// `KIND_RUN` or `KIND_RERUN`.
    pub kind: &'static str,
    /// The source run of a rerun; `None` for a full run (its own source).
    pub source_execution_id: Option<i64>,
    /// `MESSAGE_RUN` or `MESSAGE_RERUN`: the AMQP `type`.
    pub message_type: &'static str,
    pub correlation_id: Option<&'a str>,
}

/// One pair to queue, with what its message needs.
pub(super) struct PairToQueue {
    pub scenario_id: i64,
    pub environment_id: i64,
    pub attempt: i32,
    pub scenario: ScenarioInfo,
    pub environment: EnvironmentInfo,
}

/// Inserts the execution, its pairs and their dispatch rows (one message per
/// pair, section 2) in one statement ([`queries::WriteExecution`]); returns
/// the message ids, in the order of `pairs`.
pub(super) fn write_execution(
    conn: &mut PgConnection,
    new: &NewExecution,
    pairs: &[PairToQueue],
) -> Result<Vec<String>, ApiError> {
    let requested_at: DateTime<Utc> = Utc::now();
    let requested_at_text = requested_at.to_rfc3339_opts(SecondsFormat::Secs, true);
    let n = pairs.len();
    let (mut scenario_ids, mut environment_ids, mut attempts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut message_ids, mut bodies) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for pair in pairs {
        let message_id = Uuid::new_v4();
        let message = RerunMessage {
            message_id: message_id.to_string(),
            execution_id: new.execution_id,
            source_execution_id: new.source_execution_id.unwrap_or(new.execution_id),
            plan_id: new.plan_id,
            user_id: new.user_id,
            framework_type: new.framework_type.to_owned(),
            scenario_id: pair.scenario_id,
            environment_id: pair.environment_id,
            attempt: pair.attempt,
            requested_at: requested_at_text.clone(),
            scenario: pair.scenario.clone(),
            environment: pair.environment.clone(),
        };
        bodies.push(serde_json::to_string(&message).map_err(anyhow::Error::from)?);
        scenario_ids.push(pair.scenario_id);
        environment_ids.push(pair.environment_id);
        attempts.push(pair.attempt);
        message_ids.push(message_id);
    }
    queries::WriteExecution {
        execution_id: new.execution_id,
        plan_id: new.plan_id,
        kind: new.kind,
        source_execution_id: new.source_execution_id,
        requested_by: new.user_id,
        framework_type: new.framework_type,
        requested_at,
        message_type: new.message_type,
        correlation_id: new.correlation_id,
        scenario_ids: &scenario_ids,
        environment_ids: &environment_ids,
        attempts: &attempts,
        message_ids: &message_ids,
        bodies: &bodies,
    }
    .execute(conn)?;
    Ok(message_ids.iter().map(Uuid::to_string).collect())
}
