//! Reading executions and results back (contract, sections 6 and 11): one
//! read-only, repeatable-read transaction per answer, so its parts (an
//! execution and its pairs, a cursor and its page) are one snapshot.
//!
//! Rules: an execution is `QUEUED` while none of its pairs started or
//! finished (`started_at` unset), `FINISHED` once every pair is terminal (no
//! open pair), `RUNNING` otherwise. The consolidated results of a plan are its
//! source run's pairs, each at its latest (highest) attempt in the chain; a
//! pair is flaky when an earlier attempt is `FAILED` or `ERROR` and a later
//! one `PASSED`. With `attempts=none` they come from the chain's read model
//! (`plan_pair_latest`, migration 17), which keeps the same figures on write.

use crate::auth::ReadScope;
use crate::db::reads::{self, AttemptRow, ExecutionRow, LatestPairRow, PairRow, ReadVersions};
use crate::db::Db;
use crate::domain::{AttemptsView, Id, KnownTags, PageRequest, PairStatus, ReadTag};
use crate::error::{ApiError, Envelope};
use chrono::{DateTime, SecondsFormat, Utc};
use diesel::pg::PgConnection;
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

/// Pairs per status; every key is present, 0 when no pair has it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct StatusCounts {
    #[serde(rename = "QUEUED")]
    pub queued: i64,
    #[serde(rename = "RUNNING")]
    pub running: i64,
    #[serde(rename = "PASSED")]
    pub passed: i64,
    #[serde(rename = "FAILED")]
    pub failed: i64,
    #[serde(rename = "ERROR")]
    pub error: i64,
    #[serde(rename = "SKIPPED")]
    pub skipped: i64,
    #[serde(rename = "ABORTED")]
    pub aborted: i64,
}

impl StatusCounts {
    /// Adds `n` pairs of `status`; a status outside the seven (the schema's
    /// CHECK forbids it) is not counted.
    pub(crate) fn add(&mut self, status: &str, n: i64) {
        let Ok(status) = status.parse::<PairStatus>() else {
            return;
        };
        *match status {
            PairStatus::Queued => &mut self.queued,
            PairStatus::Running => &mut self.running,
            PairStatus::Passed => &mut self.passed,
            PairStatus::Failed => &mut self.failed,
            PairStatus::Error => &mut self.error,
            PairStatus::Skipped => &mut self.skipped,
            PairStatus::Aborted => &mut self.aborted,
        } += n;
    }
}

/// An execution's status, derived from its pairs (contract, section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ExecutionStatus {
    /// No pair started or finished yet.
    Queued,
    /// Some pair started or finished, some is not terminal yet.
    Running,
    /// Every pair is terminal.
    Finished,
}

/// An execution without its pairs: an item of `GET /plans/{planId}/executions`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionSummary {
    pub execution_id: i64,
    pub plan_id: i64,
    /// `RUN` (a full run) or `RERUN`.
    #[schema(example = "RERUN")]
    pub kind: String,
    /// The chain's source run; a full run is its own source.
    pub source_execution_id: i64,
    /// `USER` (a person asked for it) or `RETRY` (plan-queue's automatic
    /// rerun of an execution's failures; contract, section 18).
    #[schema(example = "RETRY")]
    pub trigger: String,
    /// The execution whose `FAILED` and `ERROR` pairs an automatic rerun
    /// retries; null when `trigger` is `USER`.
    #[schema(example = 5011)]
    pub retry_of: Option<i64>,
    /// Null for a run seeded from a fixture.
    #[schema(example = "APPIUM")]
    pub framework_type: Option<String>,
    /// The user who asked for it.
    pub requested_by: i64,
    /// RFC 3339, UTC.
    #[schema(format = DateTime)]
    pub requested_at: String,
    /// The first pair's start; null until then.
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    /// The last pair's end; null until every pair is terminal.
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    pub status: ExecutionStatus,
    /// Its pairs per status.
    pub counts: StatusCounts,
}

/// One pair of an execution.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionPair {
    pub scenario_id: i64,
    pub environment_id: i64,
    pub attempt: i32,
    /// `QUEUED`, `RUNNING`, `PASSED`, `FAILED`, `ERROR`, `SKIPPED` or `ABORTED`.
    #[schema(example = "FAILED")]
    pub status: String,
    /// The `messageId` of its message; null for a run seeded from a fixture.
    pub message_id: Option<String>,
    /// When the broker confirmed its message; null until then.
    #[schema(format = DateTime)]
    pub published_at: Option<String>,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    /// As the runner reported it, milliseconds.
    pub duration_ms: Option<i64>,
    pub report_url: Option<String>,
    pub detail: Option<String>,
    /// Why plan-queue itself ended the pair: `CANCELLED`, `QUEUE_TIMEOUT`,
    /// `RUN_TIMEOUT` (status `ABORTED`) or `DEAD_LETTERED` (status `ERROR`,
    /// `detail` the broker's `x-death` reason); null when a runner's result
    /// set the status (contract, section 14).
    #[schema(example = "RUN_TIMEOUT")]
    pub reason: Option<String>,
}

/// `GET /executions/{executionId}`: an execution with its pairs, ordered by
/// scenario then environment.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionDetail {
    #[serde(flatten)]
    pub execution: ExecutionSummary,
    pub pairs: Vec<ExecutionPair>,
}

/// `GET /executions/{executionId}/callbacks`: the execution's callback
/// deliveries (contract, section 21), oldest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackLog {
    pub callbacks: Vec<CallbackDelivery>,
}

/// One callback delivery: where it goes, how often it was tried, how the
/// last try ended, and when it was delivered or given up (section 21).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackDelivery {
    /// The `execution.finished` event's id, sent as `X-PlanQueue-Delivery`.
    pub event_id: String,
    pub url: String,
    /// Tries so far.
    pub attempts: i32,
    /// The HTTP status of the last try; null when none was read.
    pub last_status: Option<i32>,
    /// Why the last try failed (a status, a timeout, a refused connection).
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub last_attempt_at: Option<String>,
    #[schema(format = DateTime)]
    pub delivered_at: Option<String>,
    /// When `CALLBACK_RETRY_SECS` ran out without a 2xx.
    #[schema(format = DateTime)]
    pub given_up_at: Option<String>,
}

/// `GET /plans/{planId}/executions`: one page, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionPage {
    pub executions: Vec<ExecutionSummary>,
    /// The `before` of the next page; null on the last page.
    pub next_before: Option<i64>,
}

/// One attempt of a pair in the source run's chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PairAttempt {
    pub attempt: i32,
    /// The execution (the source run or a rerun) that holds it.
    pub execution_id: i64,
    #[schema(example = "FAILED")]
    pub status: String,
}

/// A pair of the consolidated results: its latest attempt and every attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResultPair {
    pub scenario_id: i64,
    pub environment_id: i64,
    /// The current status: that of the latest attempt.
    #[schema(example = "PASSED")]
    pub status: String,
    /// The latest attempt.
    pub attempt: i32,
    /// The execution that holds the latest attempt.
    pub execution_id: i64,
    /// Why plan-queue ended the latest attempt (`CANCELLED`, `QUEUE_TIMEOUT`,
    /// `RUN_TIMEOUT`, `DEAD_LETTERED`); null when a runner's result set its
    /// status or it is in flight (contract, section 14).
    #[schema(example = json!(null))]
    pub reason: Option<String>,
    /// An earlier attempt is `FAILED` or `ERROR` and a later one `PASSED`.
    pub flaky: bool,
    /// Every attempt, first to latest; left out with `attempts=none`
    /// (contract, section 22).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub attempts: Option<Vec<PairAttempt>>,
    /// How many attempts the pair has; only with `attempts=none`, in place
    /// of `attempts` (contract, section 22).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, example = 2)]
    pub attempt_count: Option<usize>,
}

/// `GET /plans/{planId}/results`: the consolidated results (contract, section 6).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanResults {
    pub plan_id: i64,
    /// The plan's most recent full run.
    pub source_execution_id: i64,
    /// Pairs per current status.
    pub counts: StatusCounts,
    /// Ordered by scenario then environment.
    pub pairs: Vec<ResultPair>,
}

/// Bytes of answers the results cache holds at most (weighed by their
/// length): five answers of 1 000 pairs x 50 attempts (2.8 MB each).
pub const RESULTS_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// How long an answer nobody asked for stays in the results cache.
pub const RESULTS_CACHE_IDLE: std::time::Duration = std::time::Duration::from_secs(120);

/// A success envelope (`{data, result}`) serialised once: the body of a
/// `200 application/json`, shared by every request that gets it.
#[derive(Debug, Clone)]
pub struct EnvelopeJson(pub Arc<[u8]>);

impl EnvelopeJson {
    /// `data` in the success envelope, as JSON.
    ///
    /// Errors: serde_json's (none for the answers' types).
    fn of<T: Serialize>(data: &T) -> Result<Self, ApiError> {
        let bytes = serde_json::to_vec(&Envelope::success(data))
            .map_err(|e| ApiError::Unexpected(anyhow::Error::new(e).context("answer to JSON")))?;
        Ok(EnvelopeJson(bytes.into()))
    }
}

/// The read use cases; cheap to clone.
#[derive(Clone)]
pub struct ReadService {
    db: Db,
    /// The last serialised answer of each `GET /plans/{planId}/results`
    /// read (its key: plan and `attempts`), with the plan's versions it was
    /// read at; used only while the plan is still at those versions (any
    /// change of the answer bumps one, contract section 22), replaced by
    /// the next read after that.
    results: moka::sync::Cache<String, (ReadVersions, EnvelopeJson)>,
}

impl ReadService {
    /// The read use cases on `db`, with an empty results cache of
    /// [`RESULTS_CACHE_BYTES`].
    pub fn new(db: Db) -> Self {
        let results = moka::sync::Cache::builder()
            .max_capacity(RESULTS_CACHE_BYTES)
            .weigher(
                |_key: &String, (_, answer): &(ReadVersions, EnvelopeJson)| {
                    u32::try_from(answer.0.len()).unwrap_or(u32::MAX)
                },
            )
            .time_to_idle(RESULTS_CACHE_IDLE)
            .build();
        ReadService { db, results }
    }

    /// The execution with its pairs, or 304 when `known` names its tag.
    ///
    /// Errors: 404 code 1017 when it does not exist or `scope` may not see
    /// it; 503 code 1011 when the database is unreachable.
    pub async fn execution(
        &self,
        scope: ReadScope,
        execution_id: Id,
        known: KnownTags,
    ) -> Result<Conditional<ExecutionDetail>, ApiError> {
        let id = execution_id.get();
        let subject = ReadSubject::Execution(id);
        self.conditional(scope, known, subject, format!("x{id}"), move |conn| {
            let row = reads::execution(conn, id, scope.member())?
                .ok_or(ApiError::ExecutionNotFound(id))?;
            let pairs = reads::execution_pairs(conn, id)?;
            Ok(ExecutionDetail {
                execution: summary(row),
                pairs: pairs.into_iter().map(pair).collect(),
            })
        })
        .await
    }

    /// The callback deliveries of the execution (section 21), oldest first;
    /// an empty list when it has no `callbackUrl` or has not finished.
    ///
    /// Errors: 404 code 1017 for an execution that does not exist or `scope`
    /// may not see; 503 code 1011.
    pub async fn execution_callbacks(
        &self,
        scope: ReadScope,
        execution_id: Id,
    ) -> Result<CallbackLog, ApiError> {
        let id = execution_id.get();
        self.snapshot(move |conn| {
            reads::execution(conn, id, scope.member())?.ok_or(ApiError::ExecutionNotFound(id))?;
            let callbacks = crate::db::callbacks::log_of(conn, id)?
                .into_iter()
                .map(|d| CallbackDelivery {
                    event_id: d.event_id.to_string(),
                    url: d.url,
                    attempts: d.attempts,
                    last_status: d.last_status,
                    last_error: d.last_error,
                    last_attempt_at: d.last_attempt_at.map(rfc3339),
                    delivered_at: d.delivered_at.map(rfc3339),
                    given_up_at: d.given_up_at.map(rfc3339),
                })
                .collect();
            Ok(CallbackLog { callbacks })
        })
        .await
    }

    /// One page of the plan's executions, newest first, or 304 when `known`
    /// names its tag.
    ///
    /// Errors: 404 code 1000 for a plan that does not exist or `scope` may
    /// not see; 400 code 1001 when `before` is not an execution of the plan;
    /// 503 code 1011.
    pub async fn plan_executions(
        &self,
        scope: ReadScope,
        plan_id: Id,
        page: PageRequest,
        known: KnownTags,
    ) -> Result<Conditional<ExecutionPage>, ApiError> {
        let plan_id = plan_id.get();
        let key = format!(
            "e{plan_id}.l{}.b{}",
            page.limit,
            page.before.map_or(0, Id::get)
        );
        let subject = ReadSubject::Plan(plan_id);
        self.conditional(scope, known, subject, key, move |conn| {
            let after = match page.before.map(Id::get) {
                None => None,
                Some(before) => Some((
                    reads::requested_at(conn, plan_id, before)?.ok_or_else(|| {
                        ApiError::InvalidRequest(format!(
                            "before: {before} is not an execution of plan {plan_id}"
                        ))
                    })?,
                    before,
                )),
            };
            // one row more than asked tells whether a next page exists
            let mut rows = reads::executions_page(conn, plan_id, after, page.limit + 1)?;
            let more = rows.len() as i64 > page.limit;
            rows.truncate(page.limit as usize);
            let next_before = more.then(|| rows.last().map(|r| r.execution_id)).flatten();
            Ok(ExecutionPage {
                executions: rows.into_iter().map(summary).collect(),
                next_before,
            })
        })
        .await
    }

    /// The plan's consolidated results, each pair's attempts as `attempts`
    /// asks, serialised in their envelope, or 304 when `known` names its
    /// tag. An answer already serialised at the plan's current versions
    /// comes from the results cache (the versions are read either way).
    ///
    /// Errors: 404 code 1000 for a plan that does not exist or `scope` may
    /// not see; 400 code 1004 when it never ran; 503 code 1011.
    pub async fn plan_results(
        &self,
        scope: ReadScope,
        plan_id: Id,
        attempts: AttemptsView,
        known: KnownTags,
    ) -> Result<Conditional<EnvelopeJson>, ApiError> {
        let plan_id = plan_id.get();
        let key = format!("r{plan_id}.{}", attempts.as_str());
        let subject = ReadSubject::Plan(plan_id);
        let cache = self.results.clone();
        let read_key = key.clone();
        self.conditional_at(
            scope,
            known,
            subject,
            key,
            move |conn, versions| match cache.get(&read_key) {
                Some((at, answer)) if at == versions => Ok(answer),
                _ => {
                    let answer = EnvelopeJson::of(&read_results(conn, plan_id, attempts)?)?;
                    cache.insert(read_key.clone(), (versions, answer.clone()));
                    Ok(answer)
                }
            },
        )
        .await
    }

    /// A read with an entity tag (contract, section 22). When `known` is
    /// not empty, one statement reads the versions of `subject`'s plan (no
    /// transaction); if the tag they make is among `known`, the answer is
    /// [`Conditional::NotModified`] without running `read`. Otherwise, in
    /// one snapshot: the versions again (404 when `scope` may not see the
    /// subject: an invisible plan never answers 304), the tag, then `read`.
    /// `key` names the read and its parameters.
    pub(crate) async fn conditional<T: Send + 'static>(
        &self,
        scope: ReadScope,
        known: KnownTags,
        subject: ReadSubject,
        key: String,
        mut read: impl FnMut(&mut PgConnection) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<Conditional<T>, ApiError> {
        self.conditional_at(scope, known, subject, key, move |conn, _| read(conn))
            .await
    }

    /// [`Self::conditional`], `read` given the versions its tag is made of
    /// (read in its snapshot).
    pub(crate) async fn conditional_at<T: Send + 'static>(
        &self,
        scope: ReadScope,
        known: KnownTags,
        subject: ReadSubject,
        key: String,
        mut read: impl FnMut(&mut PgConnection, ReadVersions) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<Conditional<T>, ApiError> {
        let member = scope.member();
        if !known.is_empty() {
            let versions = self
                .db
                .run(move |conn| Ok::<_, ApiError>(subject.versions(conn, member)?))
                .await?;
            if let Some(v) = versions {
                let tag = ReadTag::new(&key, v.results_version, v.catalog_version, member);
                if known.includes(tag.as_str()) {
                    return Ok(Conditional::NotModified(tag));
                }
            }
        }
        self.snapshot(move |conn| {
            let v = subject
                .versions(conn, member)?
                .ok_or_else(|| subject.not_found())?;
            let tag = ReadTag::new(&key, v.results_version, v.catalog_version, member);
            Ok(Conditional::Modified(tag, read(conn, v)?))
        })
        .await
    }

    /// Runs `read` on the blocking pool in a read-only, repeatable-read
    /// transaction: one snapshot (run again on a fresh connection when the
    /// database changed under the first, see `db::connection`).
    pub(crate) async fn snapshot<T: Send + 'static>(
        &self,
        mut read: impl FnMut(&mut PgConnection) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.db
            .run(move |conn| {
                conn.build_transaction()
                    .read_only()
                    .repeatable_read()
                    .run(&mut read)
            })
            .await
    }
}

/// The plan's consolidated results read in `conn`'s snapshot: with
/// `attempts=all` every attempt of the source run's chain (the chain index,
/// in its order), with `attempts=none` the chain's read model, one row per
/// pair. 400 code 1004 when the plan never ran.
fn read_results(
    conn: &mut PgConnection,
    plan_id: i64,
    attempts: AttemptsView,
) -> Result<PlanResults, ApiError> {
    let source = reads::source_run(conn, plan_id)?.ok_or(ApiError::NoExecutedResults(plan_id))?;
    let pairs = match attempts {
        AttemptsView::All => consolidate(reads::chain_attempts(conn, source)?),
        AttemptsView::None => reads::latest_pairs(conn, source)?
            .into_iter()
            .map(latest_pair)
            .collect(),
    };
    let mut counts = StatusCounts::default();
    for p in &pairs {
        counts.add(&p.status, 1);
    }
    Ok(PlanResults {
        plan_id,
        source_execution_id: source,
        counts,
        pairs,
    })
}

/// A read's answer with its entity tag, or 304 (contract, section 22).
#[derive(Debug)]
pub enum Conditional<T> {
    /// The request's `If-None-Match` names the current tag: 304, no body.
    NotModified(ReadTag),
    /// The answer and its tag.
    Modified(ReadTag, T),
}

/// What a read is about, whose plan's versions make its tag.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ReadSubject {
    /// A plan: its executions, results, flakiness.
    Plan(i64),
    /// One execution, tagged by its plan's versions.
    Execution(i64),
}

impl ReadSubject {
    /// The versions of the subject's plan; `None` when it does not exist or
    /// `member` may not see it.
    fn versions(
        self,
        conn: &mut PgConnection,
        member: Option<i64>,
    ) -> diesel::QueryResult<Option<ReadVersions>> {
        match self {
            ReadSubject::Plan(id) => reads::plan_versions(conn, id, member),
            ReadSubject::Execution(id) => reads::execution_versions(conn, id, member),
        }
    }

    /// 404 code 1000 for a plan, 1017 for an execution.
    fn not_found(self) -> ApiError {
        match self {
            ReadSubject::Plan(_) => ApiError::PlanNotFoundToRead,
            ReadSubject::Execution(id) => ApiError::ExecutionNotFound(id),
        }
    }
}

/// RFC 3339 in UTC with `Z`, fractions of a second only when there are some.
fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// An execution's status from its columns (see the module's rules):
/// `ended` pairs are terminal ones, which a pair ended without starting
/// (cancelled, timed out, dead-lettered; contract, section 14) also is.
fn status_of(started_at: Option<DateTime<Utc>>, open_pairs: i32, ended: i64) -> ExecutionStatus {
    match (started_at, open_pairs) {
        (_, 0) => ExecutionStatus::Finished,
        (None, _) if ended == 0 => ExecutionStatus::Queued,
        _ => ExecutionStatus::Running,
    }
}

/// [`status_of`] an execution read with its counts.
pub(crate) fn status_of_row(row: &ExecutionRow) -> ExecutionStatus {
    let c = &row.counts;
    let ended = c.passed + c.failed + c.error + c.skipped + c.aborted;
    status_of(row.started_at, row.open_pairs, ended)
}

pub(crate) fn summary(row: ExecutionRow) -> ExecutionSummary {
    let status = status_of_row(&row);
    let c = row.counts;
    let counts = StatusCounts {
        queued: c.queued,
        running: c.running,
        passed: c.passed,
        failed: c.failed,
        error: c.error,
        skipped: c.skipped,
        aborted: c.aborted,
    };
    ExecutionSummary {
        execution_id: row.execution_id,
        plan_id: row.plan_id,
        kind: row.kind,
        source_execution_id: row.source_execution_id,
        trigger: row.trigger,
        retry_of: row.retry_of,
        framework_type: row.framework_type,
        requested_by: row.requested_by,
        requested_at: rfc3339(row.requested_at),
        started_at: row.started_at.map(rfc3339),
        finished_at: row.finished_at.map(rfc3339),
        status,
        counts,
    }
}

fn pair(row: PairRow) -> ExecutionPair {
    ExecutionPair {
        scenario_id: row.scenario_id,
        environment_id: row.environment_id,
        attempt: row.attempt,
        status: row.status,
        message_id: row.message_id.map(|m| m.to_string()),
        published_at: row.published_at.map(rfc3339),
        started_at: row.started_at.map(rfc3339),
        finished_at: row.finished_at.map(rfc3339),
        duration_ms: row.duration_ms,
        report_url: row.report_url,
        detail: row.detail,
        reason: row.reason,
    }
}

/// A pair of the read model as `attempts=none` answers it: `attemptCount`
/// in place of `attempts` (contract, section 22).
fn latest_pair(row: LatestPairRow) -> ResultPair {
    let latest = row.latest;
    ResultPair {
        scenario_id: latest.scenario_id,
        environment_id: latest.environment_id,
        status: latest.status,
        attempt: latest.attempt,
        execution_id: latest.execution_id,
        reason: latest.reason,
        flaky: row.flaky,
        attempts: None,
        attempt_count: Some(row.attempt_count.max(0) as usize),
    }
}

/// Groups a chain's attempts (ordered by scenario, environment, attempt
/// descending) into the consolidated pairs, ordered by scenario then
/// environment, each with its attempts first to latest.
fn consolidate(rows: Vec<AttemptRow>) -> Vec<ResultPair> {
    let mut pairs: Vec<ResultPair> = Vec::new();
    for row in rows {
        let reason = row.reason;
        let attempt = PairAttempt {
            attempt: row.attempt,
            execution_id: row.execution_id,
            status: row.status,
        };
        match pairs.last_mut() {
            Some(p)
                if (p.scenario_id, p.environment_id) == (row.scenario_id, row.environment_id) =>
            {
                p.attempts.get_or_insert_with(Vec::new).push(attempt)
            }
            _ => pairs.push(ResultPair {
                scenario_id: row.scenario_id,
                environment_id: row.environment_id,
                status: attempt.status.clone(),
                attempt: attempt.attempt,
                execution_id: attempt.execution_id,
                reason,
                flaky: false,
                attempts: Some(vec![attempt]),
                attempt_count: None,
            }),
        }
    }
    for p in &mut pairs {
        let attempts = p.attempts.get_or_insert_with(Vec::new);
        attempts.reverse();
        p.flaky = is_flaky(attempts);
    }
    pairs
}

/// An earlier attempt `FAILED` or `ERROR` and a later one `PASSED`
/// ([`PairStatus::is_flaky`]); `attempts` first to latest.
fn is_flaky(attempts: &[PairAttempt]) -> bool {
    PairStatus::is_flaky(attempts.iter().filter_map(|a| a.status.parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scenario_id: i64, environment_id: i64, attempt: i32, status: &str) -> AttemptRow {
        AttemptRow {
            scenario_id,
            environment_id,
            attempt,
            execution_id: 5000 + attempt as i64,
            status: status.to_owned(),
            reason: None,
        }
    }

    #[test]
    fn the_latest_attempt_gives_the_current_status() {
        let pairs = consolidate(vec![
            row(111, 222, 3, "QUEUED"),
            row(111, 222, 2, "PASSED"),
            row(111, 222, 1, "FAILED"),
            row(112, 222, 1, "PASSED"),
        ]);
        assert_eq!(pairs.len(), 2);
        let first = &pairs[0];
        assert_eq!((first.status.as_str(), first.attempt), ("QUEUED", 3));
        assert_eq!(first.execution_id, 5003);
        let order: Vec<i32> = first.attempts.iter().flatten().map(|a| a.attempt).collect();
        assert_eq!(order, [1, 2, 3]);
        assert!(
            first.flaky,
            "failed then passed stays flaky after a later attempt"
        );
        assert!(!pairs[1].flaky);
    }

    #[test]
    fn flaky_is_a_failure_or_error_followed_by_a_pass() {
        let flaky = |statuses: &[&str]| {
            let attempts: Vec<PairAttempt> = statuses
                .iter()
                .enumerate()
                .map(|(i, s)| PairAttempt {
                    attempt: i as i32 + 1,
                    execution_id: 1,
                    status: s.to_string(),
                })
                .collect();
            is_flaky(&attempts)
        };
        assert!(flaky(&["FAILED", "PASSED"]));
        assert!(flaky(&["ERROR", "ABORTED", "PASSED"]));
        assert!(!flaky(&["PASSED", "FAILED"]));
        assert!(!flaky(&["ABORTED", "PASSED"]));
        assert!(!flaky(&["SKIPPED", "PASSED"]));
        assert!(!flaky(&["FAILED", "RUNNING"]));
        assert!(!flaky(&["PASSED"]));
    }

    #[test]
    fn an_execution_is_queued_then_running_then_finished() {
        let now = Some(Utc::now());
        assert_eq!(status_of(None, 3, 0), ExecutionStatus::Queued);
        assert_eq!(status_of(now, 2, 0), ExecutionStatus::Running);
        assert_eq!(status_of(now, 0, 3), ExecutionStatus::Finished);
    }

    #[test]
    fn an_execution_whose_pairs_ended_without_starting_is_running_then_finished() {
        assert_eq!(status_of(None, 2, 1), ExecutionStatus::Running);
        assert_eq!(status_of(None, 0, 3), ExecutionStatus::Finished);
    }

    #[test]
    fn counts_have_every_status_key() {
        let mut counts = StatusCounts::default();
        counts.add("FAILED", 2);
        counts.add("RUNNING", 1);
        let json = serde_json::to_value(&counts).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"QUEUED": 0, "RUNNING": 1, "PASSED": 0, "FAILED": 2,
                               "ERROR": 0, "SKIPPED": 0, "ABORTED": 0})
        );
    }

    #[test]
    fn the_counts_keys_are_the_pair_statuses_in_order() {
        let keys: Vec<String> = PairStatus::ALL.map(|s| format!("\"{s}\":0")).to_vec();
        assert_eq!(
            serde_json::to_string(&StatusCounts::default()).unwrap(),
            format!("{{{}}}", keys.join(","))
        );
    }
}
