//! Every query that ends pairs with a `reason` (contract, sections 14–17):
//! a cancel ([`end_in_executions`]), the queue and run deadlines
//! ([`end_past_queue_deadline`], [`end_past_run_deadline`]) and a
//! dead-lettered run message ([`end_dead_lettered`]); and the reads they
//! need (who may cancel what, the age of the oldest in-flight pair).
//!
//! Each ending is one `UPDATE` whose pairs are first locked in primary-key
//! order (`FOR UPDATE`) and changed only while still `QUEUED` or `RUNNING`,
//! so a pair ends once whoever gets there first — a runner's result, a
//! cancel, a deadline, a dead letter, on any instance. The deadline sweeps
//! lock with `SKIP LOCKED` and a `LIMIT`: several instances share the due
//! pairs instead of queueing behind each other, in short transactions. The
//! caller then records the closed pairs on their executions
//! (`results::apply::close_pairs`), after the pairs, in execution id order,
//! like the results path.

use super::models::{STATUS_QUEUED, STATUS_RUNNING};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Integer, Nullable, Text, Timestamptz};
use uuid::Uuid;

/// A pair just ended with a reason.
#[derive(QueryableByName, Debug, Clone, PartialEq)]
pub struct EndedPair {
    #[diesel(sql_type = BigInt)]
    pub execution_id: i64,
    #[diesel(sql_type = BigInt)]
    pub scenario_id: i64,
    #[diesel(sql_type = BigInt)]
    pub environment_id: i64,
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    /// `QUEUED` or `RUNNING`: its status before.
    #[diesel(sql_type = Text)]
    pub previous_status: String,
    /// The message id of its run message.
    #[diesel(sql_type = Nullable<diesel::sql_types::Uuid>)]
    pub message_id: Option<Uuid>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub started_at: Option<DateTime<Utc>>,
}

/// How pairs end: the terminal status, the reason and, for a dead letter,
/// the `detail`.
#[derive(Debug, Clone, Copy)]
pub struct Ending<'a> {
    /// `ABORTED` or `ERROR`.
    pub status: &'a str,
    /// `CANCELLED`, `QUEUE_TIMEOUT`, `RUN_TIMEOUT` or `DEAD_LETTERED`.
    pub reason: &'a str,
    /// Replaces the pair's `detail` when given.
    pub detail: Option<&'a str>,
}

/// Ends the pairs that `selection` returns (an SQL `SELECT` of
/// `p.execution_id, p.scenario_id, p.environment_id, p.status` from
/// `execution_pairs p` that locks them, binding `$4` on) if they are still in
/// flight: `status`, `reason`, `finished_at` = now, `detail` when given.
fn end_selected<'q>(
    conn: &mut PgConnection,
    selection: &str,
    ending: Ending<'_>,
    bind: impl FnOnce(
        diesel::query_builder::BoxedSqlQuery<'q, diesel::pg::Pg, diesel::query_builder::SqlQuery>,
    ) -> diesel::query_builder::BoxedSqlQuery<
        'q,
        diesel::pg::Pg,
        diesel::query_builder::SqlQuery,
    >,
) -> QueryResult<Vec<EndedPair>> {
    let sql = format!(
        "WITH target AS ({selection}) \
         UPDATE execution_pairs p \
            SET status = $1, reason = $2, finished_at = now(), detail = coalesce($3, p.detail) \
           FROM target t \
          WHERE p.execution_id = t.execution_id AND p.scenario_id = t.scenario_id \
            AND p.environment_id = t.environment_id \
            AND p.status IN ('{STATUS_QUEUED}', '{STATUS_RUNNING}') \
         RETURNING p.execution_id, p.scenario_id, p.environment_id, p.attempt, \
                   t.status AS previous_status, p.message_id, p.started_at"
    );
    let query = diesel::sql_query(sql)
        .into_boxed()
        .bind::<Text, _>(ending.status.to_owned())
        .bind::<Text, _>(ending.reason.to_owned())
        .bind::<Nullable<Text>, _>(ending.detail.map(str::to_owned));
    let mut ended: Vec<EndedPair> = bind(query).load(conn)?;
    ended.sort_by_key(|p| (p.execution_id, p.scenario_id, p.environment_id));
    Ok(ended)
}

/// Ends every in-flight pair of `execution_ids` (a cancel, section 16).
pub fn end_in_executions(
    conn: &mut PgConnection,
    execution_ids: &[i64],
    ending: Ending<'_>,
) -> QueryResult<Vec<EndedPair>> {
    let selection = format!(
        "SELECT p.execution_id, p.scenario_id, p.environment_id, p.status \
           FROM execution_pairs p \
          WHERE p.execution_id = ANY ($4) \
            AND p.status IN ('{STATUS_QUEUED}', '{STATUS_RUNNING}') \
          ORDER BY p.execution_id, p.scenario_id, p.environment_id \
          FOR UPDATE OF p"
    );
    let ids = execution_ids.to_vec();
    end_selected(conn, &selection, ending, move |q| {
        q.bind::<Array<BigInt>, _>(ids)
    })
}

/// Ends up to `limit` pairs still `QUEUED` more than `queue_timeout` after
/// their execution's `requestedAt` (section 15), skipping pairs another
/// transaction holds. The due executions come from
/// `executions_open_requested_idx`, their pairs by primary key.
pub fn end_past_queue_deadline(
    conn: &mut PgConnection,
    queue_timeout: std::time::Duration,
    limit: i64,
    ending: Ending<'_>,
) -> QueryResult<Vec<EndedPair>> {
    let selection = format!(
        "SELECT p.execution_id, p.scenario_id, p.environment_id, p.status \
           FROM executions x JOIN execution_pairs p ON p.execution_id = x.id \
          WHERE x.open_pairs > 0 AND x.requested_at < now() - make_interval(secs => $4) \
            AND p.status = '{STATUS_QUEUED}' \
          ORDER BY p.execution_id, p.scenario_id, p.environment_id \
          LIMIT $5 FOR UPDATE OF p SKIP LOCKED"
    );
    let secs = queue_timeout.as_secs_f64();
    end_selected(conn, &selection, ending, move |q| {
        q.bind::<Double, _>(secs).bind::<BigInt, _>(limit)
    })
}

/// Ends up to `limit` pairs still `RUNNING` more than their run timeout after
/// their `startedAt` (section 15): their plan's `run_timeout_secs`, else
/// `run_timeout`. Skips pairs another transaction holds. The candidates come
/// from `execution_pairs_running_started_idx`, bounded by the shortest
/// timeout of any plan.
pub fn end_past_run_deadline(
    conn: &mut PgConnection,
    run_timeout: std::time::Duration,
    limit: i64,
    ending: Ending<'_>,
) -> QueryResult<Vec<EndedPair>> {
    let selection = format!(
        "SELECT p.execution_id, p.scenario_id, p.environment_id, p.status \
           FROM execution_pairs p \
           JOIN executions x ON x.id = p.execution_id \
           JOIN plans pl ON pl.id = x.plan_id \
          WHERE p.status = '{STATUS_RUNNING}' \
            AND p.started_at < now() - make_interval(secs => \
                    least($4, (SELECT min(run_timeout_secs) FROM plans))) \
            AND p.started_at < now() - make_interval(secs => coalesce(pl.run_timeout_secs, $4)) \
          ORDER BY p.execution_id, p.scenario_id, p.environment_id \
          LIMIT $5 FOR UPDATE OF p SKIP LOCKED"
    );
    let secs = run_timeout.as_secs_f64();
    end_selected(conn, &selection, ending, move |q| {
        q.bind::<Double, _>(secs).bind::<BigInt, _>(limit)
    })
}

/// Ends the in-flight pair whose run message is `message_id` (a dead letter,
/// section 17); empty when there is none or it is already terminal.
pub fn end_dead_lettered(
    conn: &mut PgConnection,
    message_id: Uuid,
    ending: Ending<'_>,
) -> QueryResult<Vec<EndedPair>> {
    let selection = format!(
        "SELECT p.execution_id, p.scenario_id, p.environment_id, p.status \
           FROM execution_pairs p \
          WHERE p.message_id = $4 \
            AND p.status IN ('{STATUS_QUEUED}', '{STATUS_RUNNING}') \
          FOR UPDATE OF p"
    );
    end_selected(conn, &selection, ending, move |q| {
        q.bind::<diesel::sql_types::Uuid, _>(message_id)
    })
}

/// An execution a cancel may touch.
#[derive(QueryableByName, Debug, Clone, PartialEq)]
pub struct CancelTarget {
    #[diesel(sql_type = BigInt)]
    pub execution_id: i64,
    #[diesel(sql_type = BigInt)]
    pub plan_id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    pub framework_type: Option<String>,
}

/// `plans p` is visible to the member `$2` (any plan when it is null), as
/// the read endpoints see it (section 11).
const VISIBLE_PLAN: &str = "($2::bigint IS NULL OR EXISTS (SELECT 1 FROM project_members m \
                             WHERE m.project_id = p.project_id AND m.user_id = $2))";

/// The execution `execution_id` if it exists and `member` (`None`: anyone)
/// is a member of its plan's project.
pub fn visible_execution(
    conn: &mut PgConnection,
    execution_id: i64,
    member: Option<i64>,
) -> QueryResult<Option<CancelTarget>> {
    diesel::sql_query(format!(
        "SELECT x.id AS execution_id, x.plan_id, x.framework_type \
           FROM executions x JOIN plans p ON p.id = x.plan_id \
          WHERE x.id = $1 AND {VISIBLE_PLAN}"
    ))
    .bind::<BigInt, _>(execution_id)
    .bind::<Nullable<BigInt>, _>(member)
    .get_result(conn)
    .optional()
}

/// The executions of plan `plan_id` with pairs in flight, by id; `None`
/// when the plan does not exist or `member` may not see it.
pub fn open_executions_of_plan(
    conn: &mut PgConnection,
    plan_id: i64,
    member: Option<i64>,
) -> QueryResult<Option<Vec<CancelTarget>>> {
    if !super::reads::plan_visible(conn, plan_id, member)? {
        return Ok(None);
    }
    diesel::sql_query(
        "SELECT x.id AS execution_id, x.plan_id, x.framework_type FROM executions x \
          WHERE x.plan_id = $1 AND x.open_pairs > 0 ORDER BY x.id",
    )
    .bind::<BigInt, _>(plan_id)
    .load(conn)
    .map(Some)
}

#[derive(QueryableByName)]
struct Age {
    #[diesel(sql_type = Nullable<Double>)]
    seconds: Option<f64>,
}

/// Seconds since the oldest execution with pairs in flight was requested
/// (the first row of `executions_open_requested_idx`); 0 when none.
pub fn oldest_in_flight_age(conn: &mut PgConnection) -> QueryResult<f64> {
    diesel::sql_query(
        "SELECT extract(epoch FROM now() - min(requested_at))::float8 AS seconds \
           FROM executions WHERE open_pairs > 0",
    )
    .get_result::<Age>(conn)
    .map(|a| a.seconds.unwrap_or(0.0).max(0.0))
}
