//! The `callback_deliveries` table (contract, section 21): one row per
//! `execution.finished` event of an execution with a `callbackUrl`, written
//! in the transaction that finished it ([`insert_for_event`]), claimed by the
//! deliverer of `serve` with `FOR UPDATE SKIP LOCKED` and a lease and
//! settled after attempts, several of each in one statement per round
//! ([`settle_and_claim`]), and read back by
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
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub event_id: Uuid,
    pub url: String,
    pub body: String,
    /// Attempts made before this one.
    pub attempts: i32,
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

/// A delivery as [`settle_and_claim`] left it: its event, its attempts so
/// far and how it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledDelivery {
    pub event_id: Uuid,
    pub attempts: i32,
    pub settled: Settled,
}

/// One round of the deliverer, in one statement:
///
/// - records every attempt of `ended` and releases its lease: a delivery is
///   delivered when its attempt carries no error; else due again after its
///   `retry_in_ms`, but no later than `retry_for_secs` after its row was
///   written (when the execution finished), and given up once that time has
///   passed (contract, section 21: tried again for `CALLBACK_RETRY_SECS`).
///   A row no longer due (settled by another deliverer whose lease
///   overlapped) is left alone and missing from the answer;
/// - claims at most `limit` (0: none) other due deliveries, oldest due
///   first, for `lease_ms` milliseconds: rows another deliverer holds
///   (locked, or leased and the lease not over) are skipped, so several
///   instances share the work and a crashed one's rows are taken again once
///   its lease ends.
///
/// Nothing is recorded unless the statement succeeds, so a failed round may
/// be run again with the same attempts.
pub fn settle_and_claim(
    conn: &mut PgConnection,
    ended: &[Tried],
    retry_for_secs: i64,
    limit: i64,
    lease_ms: i64,
) -> QueryResult<(Vec<SettledDelivery>, Vec<DueDelivery>)> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = SqlUuid)]
        event_id: Uuid,
        #[diesel(sql_type = Integer)]
        attempts: i32,
        /// `delivered`, `given_up`, `retried`, or `claimed`
        #[diesel(sql_type = Text)]
        outcome: String,
        #[diesel(sql_type = Nullable<Text>)]
        url: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        body: Option<String>,
    }
    let event_ids: Vec<Uuid> = ended.iter().map(|t| t.event_id).collect();
    let statuses: Vec<Option<i32>> = ended.iter().map(|t| t.attempt.status).collect();
    let errors: Vec<Option<&str>> = ended.iter().map(|t| t.attempt.error.as_deref()).collect();
    let retry_in_ms: Vec<i64> = ended.iter().map(|t| t.retry_in_ms).collect();
    let rows: Vec<Row> = diesel::sql_query(
        "WITH now AS (SELECT clock_timestamp() AS t), \
         o AS (SELECT * FROM unnest($1, $2, $3, $4) AS o(event_id, status, error, retry_in_ms)), \
         d AS (SELECT c.event_id, o.status, o.error, o.retry_in_ms, now.t AS t, \
                      c.created_at + make_interval(secs => $5) AS ends \
                 FROM callback_deliveries c JOIN o ON o.event_id = c.event_id, now \
                WHERE c.next_attempt_at IS NOT NULL \
                ORDER BY c.event_id FOR UPDATE OF c), \
         settled AS ( \
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
                          ELSE 'retried' END AS outcome), \
         claimed AS ( \
           UPDATE callback_deliveries c \
              SET lease_until = clock_timestamp() + make_interval(secs => $7 / 1000.0) \
            WHERE c.event_id IN ( \
                  SELECT x.event_id FROM callback_deliveries x \
                   WHERE x.next_attempt_at <= clock_timestamp() \
                     AND (x.lease_until IS NULL OR x.lease_until < clock_timestamp()) \
                     AND x.event_id <> ALL ($1) \
                   ORDER BY x.next_attempt_at LIMIT $6 \
                     FOR UPDATE SKIP LOCKED) \
           RETURNING c.event_id, c.attempts, c.url, c.body) \
         SELECT event_id, attempts, outcome, NULL::text AS url, NULL::text AS body FROM settled \
         UNION ALL \
         SELECT event_id, attempts, 'claimed', url, body FROM claimed",
    )
    .bind::<Array<SqlUuid>, _>(event_ids)
    .bind::<Array<Nullable<Integer>>, _>(statuses)
    .bind::<Array<Nullable<Text>>, _>(errors)
    .bind::<Array<BigInt>, _>(retry_in_ms)
    .bind::<BigInt, _>(retry_for_secs)
    .bind::<BigInt, _>(limit)
    .bind::<BigInt, _>(lease_ms)
    .load(conn)?;
    let (mut settled, mut due) = (Vec::new(), Vec::new());
    for row in rows {
        let Row {
            event_id,
            attempts,
            outcome,
            url,
            body,
        } = row;
        let settled_as = match outcome.as_str() {
            "claimed" => {
                due.push(DueDelivery {
                    event_id,
                    url: url.unwrap_or_default(),
                    body: body.unwrap_or_default(),
                    attempts,
                });
                continue;
            }
            "delivered" => Settled::Delivered,
            "given_up" => Settled::GivenUp,
            _ => Settled::Retried,
        };
        settled.push(SettledDelivery {
            event_id,
            attempts,
            settled: settled_as,
        });
    }
    Ok((settled, due))
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
