//! The read endpoints' queries (contract, section 11): an execution with its
//! pairs, a page of a plan's executions, and the attempts of a source run's
//! chain. Each is a few index probes whatever the plan's history:
//!
//! - an execution: its primary key, its pairs by the pairs' primary key
//!   (`execution_id` first), their dispatches by `dispatches_execution_id_idx`;
//! - a page: `executions_plan_requested_idx` (plan, requested_at DESC, id
//!   DESC) from the cursor on (a keyset condition, never an offset), `limit
//!   + 1` rows; the counts of each by its pairs' primary key;
//! - the consolidated results: the plan's latest full run by
//!   `executions_latest_run_idx`, then its chain by `execution_pairs_chain_idx`
//!   (source run, scenario, environment, attempt DESC, covering execution
//!   and status since migration 7), in index order: an index-only scan;
//!   with `attempts=none`, the chain's read model instead
//!   (`plan_pair_latest`, migration 17): one row per pair.
//!
//! Visibility (code 1010's read rule): `member` `Some(user)` limits every
//! answer to plans of projects that user is a member of; `None` (QUEUE_ADMIN)
//! sees everything. An invisible row reads as a missing one.

use super::models::{
    STATUS_ABORTED, STATUS_ERROR, STATUS_FAILED, STATUS_PASSED, STATUS_QUEUED, STATUS_RUNNING,
    STATUS_SKIPPED,
};
use chrono::{DateTime, Utc};
use diesel::pg::PgConnection;
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text, Timestamptz, Uuid};
use diesel::{OptionalExtension, QueryResult, QueryableByName, RunQueryDsl};

/// An execution with the counts of its pairs per status.
#[derive(QueryableByName, Debug, Clone)]
pub struct ExecutionRow {
    #[diesel(sql_type = BigInt)]
    pub execution_id: i64,
    #[diesel(sql_type = BigInt)]
    pub plan_id: i64,
    /// `RUN` or `RERUN`.
    #[diesel(sql_type = Text)]
    pub kind: String,
    /// The chain's source run; a full run's own id.
    #[diesel(sql_type = BigInt)]
    pub source_execution_id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub framework_type: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub requested_by: i64,
    #[diesel(sql_type = Timestamptz)]
    pub requested_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub started_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Pairs not yet terminal.
    #[diesel(sql_type = Integer)]
    pub open_pairs: i32,
    /// `USER`, or `RETRY` for an automatic rerun (contract, section 18).
    #[diesel(sql_type = Text)]
    pub trigger: String,
    /// The execution whose failures an automatic rerun retries.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub retry_of: Option<i64>,
    /// Its pairs per status.
    #[diesel(embed)]
    pub counts: StatusCountsRow,
}

/// An execution's pairs per status, one column per status of the schema.
#[derive(QueryableByName, Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusCountsRow {
    #[diesel(sql_type = BigInt)]
    pub queued: i64,
    #[diesel(sql_type = BigInt)]
    pub running: i64,
    #[diesel(sql_type = BigInt)]
    pub passed: i64,
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
    #[diesel(sql_type = BigInt)]
    pub error: i64,
    #[diesel(sql_type = BigInt)]
    pub skipped: i64,
    #[diesel(sql_type = BigInt)]
    pub aborted: i64,
}

/// `SELECT` of [`ExecutionRow`] from `executions x`, with the counts of its
/// pairs (one pass over them by their primary key).
pub(crate) fn execution_columns() -> String {
    let count = |status: &str, name: &str| {
        format!("count(*) FILTER (WHERE p.status = '{status}') AS {name}")
    };
    format!(
        "SELECT x.id AS execution_id, x.plan_id, x.kind, \
                coalesce(x.source_execution_id, x.id) AS source_execution_id, \
                x.framework_type, x.requested_by, x.requested_at, x.started_at, \
                x.finished_at, x.open_pairs, x.trigger, x.retry_of, c.* \
           FROM executions x \
          CROSS JOIN LATERAL (SELECT {}, {}, {}, {}, {}, {}, {} FROM execution_pairs p \
                               WHERE p.execution_id = x.id) c",
        count(STATUS_QUEUED, "queued"),
        count(STATUS_RUNNING, "running"),
        count(STATUS_PASSED, "passed"),
        count(STATUS_FAILED, "failed"),
        count(STATUS_ERROR, "error"),
        count(STATUS_SKIPPED, "skipped"),
        count(STATUS_ABORTED, "aborted"),
    )
}

/// `plans p` is visible to the member `$n` (any plan when `$n` is null).
pub(crate) fn visible_plan(param: u8) -> String {
    format!(
        "(${param}::bigint IS NULL OR EXISTS (SELECT 1 FROM project_members m \
          WHERE m.project_id = p.project_id AND m.user_id = ${param}))"
    )
}

/// The execution `execution_id` with its counts, if it exists and `member`
/// may see it.
pub fn execution(
    conn: &mut PgConnection,
    execution_id: i64,
    member: Option<i64>,
) -> QueryResult<Option<ExecutionRow>> {
    diesel::sql_query(format!(
        "{} WHERE x.id = $1 \
           AND EXISTS (SELECT 1 FROM plans p WHERE p.id = x.plan_id AND {})",
        execution_columns(),
        visible_plan(2)
    ))
    .bind::<BigInt, _>(execution_id)
    .bind::<Nullable<BigInt>, _>(member)
    .get_result(conn)
    .optional()
}

/// A pair of an execution, with when its message was published.
#[derive(QueryableByName, Debug, Clone)]
pub struct PairRow {
    #[diesel(sql_type = BigInt)]
    pub scenario_id: i64,
    #[diesel(sql_type = BigInt)]
    pub environment_id: i64,
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    #[diesel(sql_type = Text)]
    pub status: String,
    /// The message id of its dispatch; `None` for a pair of a seeded run.
    #[diesel(sql_type = Nullable<Uuid>)]
    pub message_id: Option<uuid::Uuid>,
    /// When the relay had the broker confirm its message.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub published_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub started_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub finished_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub duration_ms: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    pub report_url: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub detail: Option<String>,
    /// Why plan-queue ended it (contract, section 14); `None` when a
    /// runner's result did.
    #[diesel(sql_type = Nullable<Text>)]
    pub reason: Option<String>,
}

/// The pairs of an execution, ordered by scenario then environment; a pair's
/// `published_at` is its dispatch row's, or, once the outbox upkeep deleted
/// that row, the copy it left on the pair (migration 19). The
/// dispatches are joined on the execution too, so that PostgreSQL reads the
/// execution's own (`dispatches_execution_id_idx`) rather than the whole table.
pub fn execution_pairs(conn: &mut PgConnection, execution_id: i64) -> QueryResult<Vec<PairRow>> {
    diesel::sql_query(
        "SELECT p.scenario_id, p.environment_id, p.attempt, p.status, p.message_id, \
                COALESCE(d.published_at, p.published_at) AS published_at, p.started_at, \
                p.finished_at, p.duration_ms, p.report_url, \
                p.detail, p.reason \
           FROM execution_pairs p \
           LEFT JOIN dispatches d \
                  ON d.execution_id = p.execution_id AND d.message_id = p.message_id \
          WHERE p.execution_id = $1 \
          ORDER BY p.scenario_id, p.environment_id",
    )
    .bind::<BigInt, _>(execution_id)
    .load(conn)
}

#[derive(QueryableByName)]
struct Found {
    #[diesel(sql_type = Bool)]
    found: bool,
}

/// True when the plan exists and `member` may see it.
pub fn plan_visible(
    conn: &mut PgConnection,
    plan_id: i64,
    member: Option<i64>,
) -> QueryResult<bool> {
    diesel::sql_query(format!(
        "SELECT EXISTS (SELECT 1 FROM plans p WHERE p.id = $1 AND {}) AS found",
        visible_plan(2)
    ))
    .bind::<BigInt, _>(plan_id)
    .bind::<Nullable<BigInt>, _>(member)
    .get_result::<Found>(conn)
    .map(|f| f.found)
}

#[derive(QueryableByName)]
struct Requested {
    #[diesel(sql_type = Timestamptz)]
    requested_at: DateTime<Utc>,
}

/// When the execution `execution_id` of plan `plan_id` was requested;
/// `None` when it is not an execution of that plan.
pub fn requested_at(
    conn: &mut PgConnection,
    plan_id: i64,
    execution_id: i64,
) -> QueryResult<Option<DateTime<Utc>>> {
    diesel::sql_query("SELECT requested_at FROM executions WHERE id = $1 AND plan_id = $2")
        .bind::<BigInt, _>(execution_id)
        .bind::<BigInt, _>(plan_id)
        .get_result::<Requested>(conn)
        .optional()
        .map(|r| r.map(|r| r.requested_at))
}

/// Up to `limit` executions of the plan, newest first (`requested_at`, then
/// id, both descending), starting after `after` (the `requested_at` and id
/// of the previous page's last execution) when given.
pub fn executions_page(
    conn: &mut PgConnection,
    plan_id: i64,
    after: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> QueryResult<Vec<ExecutionRow>> {
    let (columns, order) = (
        execution_columns(),
        "ORDER BY x.requested_at DESC, x.id DESC LIMIT $2",
    );
    match after {
        None => diesel::sql_query(format!("{columns} WHERE x.plan_id = $1 {order}"))
            .bind::<BigInt, _>(plan_id)
            .bind::<BigInt, _>(limit)
            .load(conn),
        Some((requested_at, id)) => diesel::sql_query(format!(
            "{columns} WHERE x.plan_id = $1 AND (x.requested_at, x.id) < ($3, $4) {order}"
        ))
        .bind::<BigInt, _>(plan_id)
        .bind::<BigInt, _>(limit)
        .bind::<Timestamptz, _>(requested_at)
        .bind::<BigInt, _>(id)
        .load(conn),
    }
}

#[derive(QueryableByName)]
struct Source {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// The plan's source run: its most recent full run (contract, section 1),
/// if it ever ran.
pub fn source_run(conn: &mut PgConnection, plan_id: i64) -> QueryResult<Option<i64>> {
    // the rule's one definition, the server function source_run (inlined)
    diesel::sql_query("SELECT id FROM source_run($1)")
        .bind::<BigInt, _>(plan_id)
        .get_result::<Source>(conn)
        .optional()
        .map(|s| s.map(|s| s.id))
}

/// One attempt of a pair in a source run's chain.
#[derive(QueryableByName, Debug, Clone)]
pub struct AttemptRow {
    #[diesel(sql_type = BigInt)]
    pub scenario_id: i64,
    #[diesel(sql_type = BigInt)]
    pub environment_id: i64,
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    #[diesel(sql_type = BigInt)]
    pub execution_id: i64,
    #[diesel(sql_type = Text)]
    pub status: String,
    /// Why plan-queue ended it (contract, section 14), if it did.
    #[diesel(sql_type = Nullable<Text>)]
    pub reason: Option<String>,
}

/// Every attempt of every pair of the source run's chain (the run and each
/// rerun made from it), ordered by scenario, environment, then attempt
/// descending (the order of `execution_pairs_chain_idx`, which covers every
/// column read: an index-only scan).
pub fn chain_attempts(
    conn: &mut PgConnection,
    source_execution_id: i64,
) -> QueryResult<Vec<AttemptRow>> {
    diesel::sql_query(
        "SELECT scenario_id, environment_id, attempt, execution_id, status, reason \
           FROM execution_pairs WHERE source_execution_id = $1 \
          ORDER BY scenario_id, environment_id, attempt DESC",
    )
    .bind::<BigInt, _>(source_execution_id)
    .load(conn)
}

/// A pair of the consolidated results as the read model of migration 17
/// (`plan_pair_latest`) keeps it: its latest attempt, how many it has, and
/// whether it is flaky (an attempt `FAILED` or `ERROR` before one `PASSED`).
#[derive(QueryableByName, Debug, Clone)]
pub struct LatestPairRow {
    /// The latest attempt (its number, execution, status and reason).
    #[diesel(embed)]
    pub latest: AttemptRow,
    /// Attempts of the pair in the chain.
    #[diesel(sql_type = Integer)]
    pub attempt_count: i32,
    #[diesel(sql_type = Bool)]
    pub flaky: bool,
}

/// The pairs of the source run's chain, one row each, ordered by scenario
/// then environment: a range of `plan_pair_latest`'s primary key, read in
/// its order (no sort, no attempt read), 1 000 rows for 1 000 pairs
/// whatever the number of attempts.
pub fn latest_pairs(
    conn: &mut PgConnection,
    source_execution_id: i64,
) -> QueryResult<Vec<LatestPairRow>> {
    diesel::sql_query(
        "SELECT scenario_id, environment_id, attempt, execution_id, status, reason, \
                attempt_count, coalesce(first_failed < last_passed, false) AS flaky \
           FROM plan_pair_latest WHERE source_execution_id = $1 \
          ORDER BY scenario_id, environment_id",
    )
    .bind::<BigInt, _>(source_execution_id)
    .load(conn)
}

/// What an answer's entity tag is built from (contract, section 22): the
/// plan's `results_version` (grown once by every transaction that writes
/// its executions, their pairs or their publications: the triggers of
/// migration 15, the server functions `queue_rerun` and `queue_run` in their
/// last statement, the relay's mark) and its `catalog_version`.
#[derive(QueryableByName, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadVersions {
    #[diesel(sql_type = BigInt)]
    pub results_version: i64,
    #[diesel(sql_type = BigInt)]
    pub catalog_version: i64,
}

/// The versions of the plan `plan_id`, if it exists and `member` may see it:
/// one probe of the plans' primary key (and of the members' when `member`
/// is given).
pub fn plan_versions(
    conn: &mut PgConnection,
    plan_id: i64,
    member: Option<i64>,
) -> QueryResult<Option<ReadVersions>> {
    diesel::sql_query(format!(
        "SELECT p.results_version, p.catalog_version FROM plans p WHERE p.id = $1 AND {}",
        visible_plan(2)
    ))
    .bind::<BigInt, _>(plan_id)
    .bind::<Nullable<BigInt>, _>(member)
    .get_result(conn)
    .optional()
}

/// The versions of the plan of execution `execution_id`, if it exists and
/// `member` may see it: a probe of the executions' primary key, then the
/// plans'.
pub fn execution_versions(
    conn: &mut PgConnection,
    execution_id: i64,
    member: Option<i64>,
) -> QueryResult<Option<ReadVersions>> {
    diesel::sql_query(format!(
        "SELECT p.results_version, p.catalog_version \
           FROM executions x JOIN plans p ON p.id = x.plan_id \
          WHERE x.id = $1 AND {}",
        visible_plan(2)
    ))
    .bind::<BigInt, _>(execution_id)
    .bind::<Nullable<BigInt>, _>(member)
    .get_result(conn)
    .optional()
}
