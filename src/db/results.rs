//! Every query of the results consumer (contract, section 9): apply a batch
//! of runners' results to `execution_pairs`, close pairs on `executions`
//! (`open_pairs`, `started_at`, `finished_at`), and read what the
//! `execution.finished` event of a finished execution says (section 10).
//!
//! The caller runs them in one transaction per batch.

use super::models::{STATUS_QUEUED, STATUS_RUNNING};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamptz};
use uuid::Uuid;

/// The pair a result names: its `messageId` and four ids.
#[derive(QueryableByName, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PairKey {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    pub message_id: Uuid,
    #[diesel(sql_type = BigInt)]
    pub execution_id: i64,
    #[diesel(sql_type = BigInt)]
    pub scenario_id: i64,
    #[diesel(sql_type = BigInt)]
    pub environment_id: i64,
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
}

/// What a terminal result writes on its pair.
#[derive(Debug, Clone, PartialEq)]
pub struct TerminalUpdate {
    /// `PASSED`, `FAILED`, `ERROR`, `SKIPPED` or `ABORTED`.
    pub status: &'static str,
    pub finished_at: DateTime<Utc>,
    /// The start written when the pair never reported one (`at` − `durationMs`).
    pub implied_start: DateTime<Utc>,
    pub duration_ms: Option<i64>,
    pub report_url: Option<String>,
    pub detail: Option<String>,
}

/// The effect of one pair's results within a batch, in arrival order: the
/// first `RUNNING` before any terminal result, and the first terminal result.
#[derive(Debug, Clone, PartialEq)]
pub struct PairUpdate {
    pub key: PairKey,
    pub running_at: Option<DateTime<Utc>>,
    pub terminal: Option<TerminalUpdate>,
}

/// A pair [`apply`] changed.
#[derive(QueryableByName, Debug, Clone)]
pub struct AppliedPair {
    #[diesel(embed)]
    pub key: PairKey,
    /// The pair turned terminal (its execution has one open pair less).
    #[diesel(sql_type = Bool)]
    pub closed: bool,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub started_at: Option<DateTime<Utc>>,
}

/// Applies `updates` (at most one per pair) in one statement, changing only
/// pairs found by `messageId` with the same four ids, and only forward: a
/// `QUEUED` pair takes `RUNNING` (with `started_at`) or a terminal status; a
/// `RUNNING` pair takes a terminal status; a terminal pair nothing (the first
/// terminal result wins). A terminal status sets `finished_at`,
/// `duration_ms`, `report_url`, `detail`, and `started_at` if never set.
///
/// Returns the pairs changed; an update not returned names no pair or
/// changed nothing.
pub fn apply(conn: &mut PgConnection, updates: &[PairUpdate]) -> QueryResult<Vec<AppliedPair>> {
    let column = |f: fn(&PairUpdate) -> i64| updates.iter().map(f).collect::<Vec<i64>>();
    fn terminal(u: &PairUpdate) -> Option<&TerminalUpdate> {
        u.terminal.as_ref()
    }
    let sql = format!(
        "UPDATE execution_pairs p \
            SET status = coalesce(r.terminal, '{running}'), \
                started_at = coalesce(p.started_at, r.running_at, r.implied_start), \
                finished_at = CASE WHEN r.terminal IS NULL THEN p.finished_at ELSE r.finished_at END, \
                duration_ms = CASE WHEN r.terminal IS NULL THEN p.duration_ms ELSE r.duration_ms END, \
                report_url = CASE WHEN r.terminal IS NULL THEN p.report_url ELSE r.report_url END, \
                detail = CASE WHEN r.terminal IS NULL THEN p.detail ELSE r.detail END \
           FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::integer[], \
                       $6::text[], $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], \
                       $10::bigint[], $11::text[], $12::text[]) \
                AS r(message_id, execution_id, scenario_id, environment_id, attempt, terminal, \
                     running_at, finished_at, implied_start, duration_ms, report_url, detail) \
          WHERE p.message_id = r.message_id AND p.execution_id = r.execution_id \
            AND p.scenario_id = r.scenario_id AND p.environment_id = r.environment_id \
            AND p.attempt = r.attempt \
            AND (p.status = '{queued}' OR (p.status = '{running}' AND r.terminal IS NOT NULL)) \
         RETURNING p.message_id, p.execution_id, p.scenario_id, p.environment_id, p.attempt, \
                   r.terminal IS NOT NULL AS closed, p.started_at",
        running = STATUS_RUNNING,
        queued = STATUS_QUEUED,
    );
    diesel::sql_query(sql)
        .bind::<Array<diesel::sql_types::Uuid>, _>(
            updates.iter().map(|u| u.key.message_id).collect::<Vec<_>>(),
        )
        .bind::<Array<BigInt>, _>(column(|u| u.key.execution_id))
        .bind::<Array<BigInt>, _>(column(|u| u.key.scenario_id))
        .bind::<Array<BigInt>, _>(column(|u| u.key.environment_id))
        .bind::<Array<Integer>, _>(updates.iter().map(|u| u.key.attempt).collect::<Vec<_>>())
        .bind::<Array<Nullable<Text>>, _>(
            updates
                .iter()
                .map(|u| terminal(u).map(|t| t.status))
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Timestamptz>>, _>(
            updates.iter().map(|u| u.running_at).collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Timestamptz>>, _>(
            updates
                .iter()
                .map(|u| terminal(u).map(|t| t.finished_at))
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Timestamptz>>, _>(
            updates
                .iter()
                .map(|u| terminal(u).map(|t| t.implied_start))
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<BigInt>>, _>(
            updates
                .iter()
                .map(|u| terminal(u).and_then(|t| t.duration_ms))
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(
            updates
                .iter()
                .map(|u| terminal(u).and_then(|t| t.report_url.clone()))
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Nullable<Text>>, _>(
            updates
                .iter()
                .map(|u| terminal(u).and_then(|t| t.detail.clone()))
                .collect::<Vec<_>>(),
        )
        .load(conn)
}

/// A pair found by its message id, and why plan-queue ended it, if it did.
#[derive(QueryableByName, Debug, Clone)]
pub struct ExistingPair {
    #[diesel(embed)]
    pub key: PairKey,
    /// `CANCELLED`, `QUEUE_TIMEOUT`, `RUN_TIMEOUT` or `DEAD_LETTERED`
    /// (contract, section 14): a result for it is late.
    #[diesel(sql_type = Nullable<Text>)]
    pub reason: Option<String>,
}

/// The pairs holding any of `message_ids`, to tell a result that changed
/// nothing (its pair exists) from one that names no pair, and a late one
/// (its pair was ended with a reason) from a duplicate.
pub fn pairs_of_messages(
    conn: &mut PgConnection,
    message_ids: &[Uuid],
) -> QueryResult<Vec<ExistingPair>> {
    diesel::sql_query(
        "SELECT message_id, execution_id, scenario_id, environment_id, attempt, reason \
           FROM execution_pairs WHERE message_id = ANY ($1)",
    )
    .bind::<Array<diesel::sql_types::Uuid>, _>(message_ids)
    .load(conn)
}

/// Pairs of one execution closed (turned terminal) or started by a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionProgress {
    pub execution_id: i64,
    /// Pairs that turned terminal.
    pub closed: i32,
    /// The earliest `started_at` of the pairs changed.
    pub first_start: Option<DateTime<Utc>>,
}

/// Records `progress` on the executions: `open_pairs` decreases by the pairs
/// closed, `started_at` is the earliest start, and `finished_at` is set to
/// the last pair's end when `open_pairs` reaches 0.
///
/// Returns the ids of the executions this turned `FINISHED`.
pub fn record_progress(
    conn: &mut PgConnection,
    progress: &[ExecutionProgress],
) -> QueryResult<Vec<i64>> {
    let ids: Vec<i64> = progress.iter().map(|p| p.execution_id).collect();
    let closed: Vec<i32> = progress.iter().map(|p| p.closed).collect();
    let starts: Vec<Option<DateTime<Utc>>> = progress.iter().map(|p| p.first_start).collect();
    let rows: Vec<FinishedRow> = diesel::sql_query(
        "UPDATE executions x \
            SET open_pairs = x.open_pairs - d.closed, \
                started_at = least(x.started_at, d.first_start), \
                finished_at = CASE WHEN d.closed > 0 AND x.open_pairs - d.closed = 0 \
                                   THEN (SELECT max(p.finished_at) FROM execution_pairs p \
                                          WHERE p.execution_id = x.id) \
                                   ELSE x.finished_at END \
           FROM unnest($1::bigint[], $2::integer[], $3::timestamptz[]) AS d(id, closed, first_start) \
          WHERE x.id = d.id \
         RETURNING x.id, d.closed > 0 AND x.open_pairs = 0 AS finished",
    )
    .bind::<Array<BigInt>, _>(&ids)
    .bind::<Array<Integer>, _>(&closed)
    .bind::<Array<Nullable<Timestamptz>>, _>(&starts)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .filter(|r| r.finished)
        .map(|r| r.id)
        .collect())
}

#[derive(QueryableByName)]
struct FinishedRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Bool)]
    finished: bool,
}

/// A scenario on an environment.
#[derive(QueryableByName, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScenarioEnvironment {
    #[diesel(sql_type = BigInt)]
    pub scenario_id: i64,
    #[diesel(sql_type = BigInt)]
    pub environment_id: i64,
}

/// The execution's pairs that are flaky after it (contract, section 6): this
/// attempt has status `passed` and an earlier attempt in the source run's
/// chain one of `failing` (`FAILED`, `ERROR`). Ordered by scenario, then
/// environment; one probe of `execution_pairs_chain_idx` per passed pair.
pub fn flaky_pairs(
    conn: &mut PgConnection,
    execution_id: i64,
    passed: &str,
    failing: &[&str],
) -> QueryResult<Vec<ScenarioEnvironment>> {
    diesel::sql_query(
        "SELECT p.scenario_id, p.environment_id FROM execution_pairs p \
          WHERE p.execution_id = $1 AND p.status = $2 \
            AND EXISTS (SELECT 1 FROM execution_pairs e \
                         WHERE e.source_execution_id = p.source_execution_id \
                           AND e.scenario_id = p.scenario_id \
                           AND e.environment_id = p.environment_id \
                           AND e.attempt < p.attempt AND e.status = ANY ($3)) \
          ORDER BY p.scenario_id, p.environment_id",
    )
    .bind::<BigInt, _>(execution_id)
    .bind::<Text, _>(passed)
    .bind::<Array<Text>, _>(failing)
    .load(conn)
}

#[derive(QueryableByName)]
struct RetryRow {
    #[diesel(sql_type = Nullable<BigInt>)]
    retry: Option<i64>,
}

/// Queues the automatic rerun of the finished execution `execution_id`'s
/// `FAILED` and `ERROR` pairs (contract, section 18) through the server
/// function `queue_retry` (`src/db/functions/queue_retry.sql`), which writes
/// it with `queue_rerun`: trigger `RETRY`, its budget one less, pairs at
/// `max_attempts` (`MAX_ATTEMPTS`) or in flight elsewhere left out, its
/// dispatch rows recording `exchange`. Called in the transaction that
/// finished the execution.
///
/// Returns the retry's execution id; `None` when its budget is 0 or no pair
/// is left to retry.
pub fn queue_retry(
    conn: &mut PgConnection,
    execution_id: i64,
    max_attempts: i32,
    queue_timeout_secs: i32,
    exchange: &str,
) -> QueryResult<Option<i64>> {
    diesel::sql_query("SELECT queue_retry($1, $2, $3, $4) AS retry")
        .bind::<BigInt, _>(execution_id)
        .bind::<Integer, _>(max_attempts)
        .bind::<Text, _>(exchange)
        .bind::<Integer, _>(queue_timeout_secs)
        .get_result::<RetryRow>(conn)
        .map(|r| r.retry)
}
