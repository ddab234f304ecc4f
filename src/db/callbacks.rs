//! The `callback_deliveries` table (contract, section 21): one row per
//! `execution.finished` event of an execution with a `callbackUrl`, written
//! in the transaction that finished it ([`insert_for_event`]), claimed by the
//! deliverer of `serve` with `FOR UPDATE SKIP LOCKED` and a lease
//! ([`claim`]), settled after each attempt ([`settle`]), and read back by
//! `GET /executions/{id}/callbacks` ([`log_of`]).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamptz, Uuid as SqlUuid};
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

/// How a settled delivery stands after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Delivered,
    /// Due again at the next attempt.
    Retried,
    /// Past `CALLBACK_RETRY_SECS` from its first attempt: no more attempts.
    GivenUp,
}

/// Records `attempt` on delivery `event_id` and releases its lease:
/// delivered when it carries no error; else due again in `retry_in_ms`, but
/// no later than `retry_for_secs` after the first attempt, and given up once
/// that time has passed (contract, section 21). A row no longer due (settled
/// by another deliverer whose lease overlapped) is left alone.
pub fn settle(
    conn: &mut PgConnection,
    event_id: Uuid,
    attempt: &Attempt,
    retry_in_ms: i64,
    retry_for_secs: i64,
) -> QueryResult<Option<Settled>> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        outcome: String,
    }
    let row: Option<Row> = diesel::sql_query(
        "WITH now AS (SELECT clock_timestamp() AS t), \
         d AS (SELECT c.event_id, coalesce(c.first_attempt_at, now.t) AS first, now.t AS t, \
                      coalesce(c.first_attempt_at, now.t) + make_interval(secs => $5) AS ends \
                 FROM callback_deliveries c, now \
                WHERE c.event_id = $1 AND c.next_attempt_at IS NOT NULL FOR UPDATE OF c) \
         UPDATE callback_deliveries c \
            SET attempts = c.attempts + 1, last_status = $2, last_error = $3, \
                last_attempt_at = d.t, first_attempt_at = d.first, lease_until = NULL, \
                delivered_at = CASE WHEN $3 IS NULL THEN d.t END, \
                given_up_at = CASE WHEN $3 IS NOT NULL AND d.t >= d.ends THEN d.t END, \
                next_attempt_at = CASE WHEN $3 IS NULL OR d.t >= d.ends THEN NULL \
                                       ELSE least(d.t + make_interval(secs => $4 / 1000.0), \
                                                  d.ends) END \
           FROM d WHERE c.event_id = d.event_id \
         RETURNING CASE WHEN c.delivered_at IS NOT NULL THEN 'delivered' \
                        WHEN c.given_up_at IS NOT NULL THEN 'given_up' \
                        ELSE 'retried' END AS outcome",
    )
    .bind::<SqlUuid, _>(event_id)
    .bind::<Nullable<Integer>, _>(attempt.status)
    .bind::<Nullable<Text>, _>(attempt.error.as_deref())
    .bind::<BigInt, _>(retry_in_ms)
    .bind::<BigInt, _>(retry_for_secs)
    .get_result(conn)
    .optional()?;
    Ok(row.map(|r| match r.outcome.as_str() {
        "delivered" => Settled::Delivered,
        "given_up" => Settled::GivenUp,
        _ => Settled::Retried,
    }))
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
          ORDER BY coalesce(first_attempt_at, 'infinity'), event_id",
    )
    .bind::<BigInt, _>(execution_id)
    .load(conn)
}
