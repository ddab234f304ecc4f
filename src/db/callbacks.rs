//! The `callback_deliveries` table (contract, section 21): one row per
//! `execution.finished` event of an execution with a `callbackUrl`, written
//! in the transaction that finished it ([`insert_for_event`]), claimed by the
//! deliverer of `serve` with `FOR UPDATE SKIP LOCKED` and a lease
//! ([`claim`]), settled after attempts, several in one statement
//! ([`settle`]), and read back by
//! `GET /executions/{id}/callbacks` ([`log_of`]).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use uuid::Uuid;

/// Writes the delivery of the `execution.finished` event `event_id` (its
/// exact `body`) when execution `execution_id` has a `callbackUrl`, due at
/// once; nothing otherwise. Run it in the transaction that finished the
/// execution, so the delivery commits with the event or not at all.
pub fn insert_for_event(
    conn: &mut PgConnection,
    event_id: Uuid,
    execution_id: i64,
    body: &str,
) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO callback_deliveries (event_id, execution_id, url, body) \
         SELECT $1, x.id, x.callback_url, $2 FROM executions x \
          WHERE x.id = $3 AND x.callback_url IS NOT NULL",
    )
    .bind::<SqlUuid, _>(event_id)
    .bind::<Text, _>(body)
    .bind::<BigInt, _>(execution_id)
    .execute(conn)
    .map(drop)
}

/// A delivery due now, claimed by one deliverer until its lease ends.
#[derive(QueryableByName, Debug, Clone)]
pub struct DueDelivery {
    #[diesel(sql_type = SqlUuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Text)]
    pub body: String,
    /// Attempts made before this one.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
}

/// Claims at most `limit` due deliveries (oldest due first) for `lease_ms`
/// milliseconds: rows another deliverer holds (locked, or leased and the
/// lease not over) are skipped, so several instances share the work and a
/// crashed one's rows are taken again once its lease ends.
pub fn claim(conn: &mut PgConnection, limit: i64, lease_ms: i64) -> QueryResult<Vec<DueDelivery>> {
    diesel::sql_query(
        "UPDATE callback_deliveries d \
            SET lease_until = clock_timestamp() + make_interval(secs => $2 / 1000.0) \
          WHERE d.event_id IN ( \
                SELECT c.event_id FROM callback_deliveries c \
                 WHERE c.next_attempt_at <= clock_timestamp() \
                   AND (c.lease_until IS NULL OR c.lease_until < clock_timestamp()) \
                 ORDER BY c.next_attempt_at LIMIT $1 \
                   FOR UPDATE SKIP LOCKED) \
         RETURNING d.event_id, d.url, d.body, d.attempts",
    )
    .bind::<BigInt, _>(limit)
    .bind::<BigInt, _>(lease_ms)
    .load(conn)
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The answer's HTTP status, if one came.
    pub status: Option<i32>,
    /// Why it failed (no 2xx in time); `None` when delivered.
    pub error: Option<String>,
}

/// One attempt to record: on delivery `event_id`, what it came to, and the
/// back-off before the next one if it failed (milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tried {
    pub event_id: Uuid,
    pub attempt: Attempt,
    pub retry_in_ms: i64,
}

/// How a settled delivery stands after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    /// Due again at the next attempt.
    Retried,
    /// Past `CALLBACK_RETRY_SECS` from when its row was written (the
    /// execution's finish): no more attempts.
    GivenUp,
}

/// A delivery as [`settle`] left it: its event, its attempts so far and how
/// it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledDelivery {
    pub event_id: Uuid,
    pub attempts: i32,
    pub settled: Settled,
}

/// Records every attempt of `tried` in one statement and releases their
/// leases: a delivery is delivered when its attempt carries no error; else
/// due again after its `retry_in_ms`, but no later than `retry_for_secs`
/// after its row was written (when the execution finished), and given up
/// once that time has passed (contract, section 21: tried again for
/// `CALLBACK_RETRY_SECS`). A row no longer due (settled by another deliverer
/// whose lease overlapped) is left alone and missing from the answer.
pub fn settle(
    conn: &mut PgConnection,
    tried: &[Tried],
    retry_for_secs: i64,
) -> QueryResult<Vec<SettledDelivery>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        event_id: Uuid,
        #[diesel(sql_type = Integer)]
        attempts: i32,
        #[diesel(sql_type = Text)]
        outcome: String,
    }
    if tried.is_empty() {
        return Ok(Vec::new());
    }
    let event_ids: Vec<Uuid> = tried.iter().map(|t| t.event_id).collect();
    let statuses: Vec<Option<i32>> = tried.iter().map(|t| t.attempt.status).collect();
    let errors: Vec<Option<&str>> = tried.iter().map(|t| t.attempt.error.as_deref()).collect();
    let retry_in_ms: Vec<i64> = tried.iter().map(|t| t.retry_in_ms).collect();
    let rows: Vec<Row> = diesel::sql_query(
        "WITH now AS (SELECT clock_timestamp() AS t), \
         o AS (SELECT * FROM unnest($1, $2, $3, $4) AS o(event_id, status, error, retry_in_ms)), \
         d AS (SELECT c.event_id, o.status, o.error, o.retry_in_ms, now.t AS t, \
                      c.created_at + make_interval(secs => $5) AS ends \
                 FROM callback_deliveries c JOIN o ON o.event_id = c.event_id, now \
                WHERE c.next_attempt_at IS NOT NULL \
                ORDER BY c.event_id FOR UPDATE OF c) \
         UPDATE callback_deliveries c \
            SET attempts = c.attempts + 1, last_status = d.status, last_error = d.error, \
                last_attempt_at = d.t, first_attempt_at = coalesce(c.first_attempt_at, d.t), \
                lease_until = NULL, \
                delivered_at = CASE WHEN d.error IS NULL THEN d.t END, \
                given_up_at = CASE WHEN d.error IS NOT NULL AND d.t >= d.ends THEN d.t END, \
                next_attempt_at = CASE WHEN d.error IS NULL OR d.t >= d.ends THEN NULL \
                                       ELSE least(d.t + make_interval(secs => d.retry_in_ms / 1000.0), \
                                                  d.ends) END \
           FROM d WHERE c.event_id = d.event_id \
         RETURNING c.event_id, c.attempts, \
                   CASE WHEN c.delivered_at IS NOT NULL THEN 'delivered' \
                        WHEN c.given_up_at IS NOT NULL THEN 'given_up' \
                        ELSE 'retried' END AS outcome",
    )
    .bind::<Array<SqlUuid>, _>(event_ids)
    .bind::<Array<Nullable<Integer>>, _>(statuses)
    .bind::<Array<Nullable<Text>>, _>(errors)
    .bind::<Array<BigInt>, _>(retry_in_ms)
    .bind::<BigInt, _>(retry_for_secs)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| SettledDelivery {
            event_id: r.event_id,
            attempts: r.attempts,
            settled: match r.outcome.as_str() {
                "delivered" => Settled::Delivered,
                "given_up" => Settled::GivenUp,
                _ => Settled::Retried,
            },
        })
        .collect())
}

/// One round of the deliverer in one transaction: [`settle`] `ended`, then
/// [`claim`] at most `limit` due rows for `lease_ms` (none when `limit` is
/// 0). Nothing is recorded unless both succeed, so a failed round may be
/// run again with the same attempts.
pub fn settle_and_claim(
    conn: &mut PgConnection,
    ended: &[Tried],
    retry_for_secs: i64,
    limit: i64,
    lease_ms: i64,
) -> QueryResult<(Vec<SettledDelivery>, Vec<DueDelivery>)> {
    conn.transaction(|conn| {
        let settled = settle(conn, ended, retry_for_secs)?;
        let due = if limit > 0 {
            claim(conn, limit, lease_ms)?
        } else {
            Vec::new()
        };
        Ok((settled, due))
    })
}

/// One delivery as `GET /executions/{id}/callbacks` shows it (section 21).
#[derive(QueryableByName, Debug, Clone)]
pub struct DeliveryLog {
    #[diesel(sql_type = SqlUuid)]
    pub event_id: Uuid,
    #[diesel(sql_type = Text)]
    pub url: String,
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    #[diesel(sql_type = Nullable<Integer>)]
    pub last_status: Option<i32>,
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_attempt_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub delivered_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub given_up_at: Option<DateTime<Utc>>,
}

/// The deliveries of execution `execution_id`, oldest event first.
pub fn log_of(conn: &mut PgConnection, execution_id: i64) -> QueryResult<Vec<DeliveryLog>> {
    diesel::sql_query(
        "SELECT event_id, url, attempts, last_status, last_error, last_attempt_at, \
                delivered_at, given_up_at \
           FROM callback_deliveries WHERE execution_id = $1 \
          ORDER BY created_at, event_id",
    )
    .bind::<BigInt, _>(execution_id)
    .load(conn)
}
