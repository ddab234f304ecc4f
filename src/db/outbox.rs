//! The transactional outbox: every query on the `dispatches` table.
//!
//! A dispatch row is one message to publish, written in the same statement
//! as the execution it belongs to (the server functions `queue_rerun` and
//! `queue_run` of migration 9; [`insert_event`] for an event),
//! claimed by a relay as a row lock held by a transaction ([`claim`], `FOR
//! UPDATE SKIP LOCKED`, so several service instances share one database
//! without publishing a row twice; no lease is written), then, in that same
//! transaction, marked published or released for a retry ([`settle`],
//! [`release`]): one write per publish — the claim / back-off / delete-after-success pattern of
//! crates.io's `crates_io_worker/src/storage.rs`. The body is stored as the
//! exact bytes that go on the wire, so a re-publish is byte-identical.

use super::schema::dispatches;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Nullable, Text};
use std::time::Duration;
use uuid::Uuid;

/// A dispatch row claimed by the relay.
#[derive(Queryable, QueryableByName, Debug, Clone)]
#[diesel(table_name = dispatches)]
pub struct ClaimedDispatch {
    pub id: i64,
    pub message_id: Uuid,
    pub routing_key: String,
    /// The AMQP `type`: `scenario.rerun`, `scenario.run` or `execution.finished`.
    pub message_type: String,
    pub body: String,
    pub correlation_id: Option<String>,
}

/// Unpublished dispatch rows: how many, and the age of the oldest in ms.
#[derive(QueryableByName, Debug, Clone, Copy)]
pub struct OutboxBacklog {
    #[diesel(sql_type = BigInt)]
    pub pending: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub oldest_ms: Option<i64>,
}

/// What became of one claimed row's publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    /// The broker confirmed it: mark it published.
    Published,
    /// The connection failed: release it for the next round at once (the
    /// reconnect backs off). The text is kept as `last_error`.
    RetryNow(String),
    /// The broker returned it (no queue took it): retry after a back-off of
    /// 0.2 s doubling per attempt up to 60 s. The text is kept as `last_error`.
    RetryLater(String),
    /// The broker nacked it: the same back-off, but up to 1 s. A quorum
    /// queue nacks publishes while it elects a new leader (about 2 s after
    /// a node's loss, issue 12's node-loss test), and a row should follow
    /// the new leader within a second, not after 60 s.
    RetrySoon(String),
}

/// The longest back-off of [`Settlement::RetryLater`], in seconds.
const RETURNED_MAX_BACKOFF_SECS: f64 = 60.0;
/// The longest back-off of [`Settlement::RetrySoon`], in seconds.
const NACKED_MAX_BACKOFF_SECS: f64 = 1.0;

/// Counts the unpublished rows and the age of the oldest (readiness, metrics).
pub fn backlog(conn: &mut PgConnection) -> QueryResult<OutboxBacklog> {
    diesel::sql_query(
        "SELECT count(*) AS pending, \
                (extract(epoch FROM now() - min(created_at)) * 1000)::bigint AS oldest_ms \
           FROM dispatches WHERE published_at IS NULL",
    )
    .get_result(conn)
}

/// Claims up to `size` due rows of `exchange` (the instance's
/// `AMQP_EXCHANGE`; other exchanges' rows belong to other instances) for the
/// caller's transaction, oldest first, ordered by id, skipping the rows of
/// the `held_back` routing keys (whose queue the broker refused to declare
/// as configured: they wait, they are not failed).
///
/// The claim is a row lock (`FOR UPDATE SKIP LOCKED`), not a write: call it
/// inside a transaction, publish, and [`settle`] in that same transaction;
/// the rows stay claimed until it ends, and another relay skips them. A
/// relay that dies loses its claim with its connection; one that hangs
/// (frozen, partitioned) loses it after `lease` without a statement, which
/// PostgreSQL enforces by ending its session
/// (`idle_in_transaction_session_timeout`, set for this transaction): keep
/// the transaction alive while publishing with [`keep_claim`]. A row still
/// under a lease written by an earlier version (`locked_until`) is left to
/// its holder until the lease ends.
pub fn claim(
    conn: &mut PgConnection,
    exchange: &str,
    size: i64,
    lease: Duration,
    held_back: &[String],
) -> QueryResult<Vec<ClaimedDispatch>> {
    diesel::sql_query("SELECT set_config('idle_in_transaction_session_timeout', $1, true)")
        .bind::<Text, _>(lease.as_millis().max(1).to_string())
        .execute(conn)?;
    diesel::sql_query(
        "SELECT id, message_id, routing_key, message_type, body, correlation_id \
           FROM dispatches \
          WHERE exchange = $3 AND published_at IS NULL AND next_attempt_at <= now() \
            AND (locked_until IS NULL OR locked_until < now()) \
            AND routing_key <> ALL ($2) \
          ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind::<BigInt, _>(size)
    .bind::<Array<Text>, _>(held_back)
    .bind::<Text, _>(exchange)
    .load(conn)
}

/// Tells PostgreSQL that the transaction holding a [`claim`] is alive (one
/// statement that reads and writes nothing), so that its
/// `idle_in_transaction_session_timeout` starts again: while the broker
/// blocks the connection, a publish may wait longer than a lease.
pub fn keep_claim(conn: &mut PgConnection) -> QueryResult<()> {
    diesel::sql_query("SELECT 1").execute(conn).map(drop)
}

/// Records `exchange` on the unpublished rows that record none (written
/// before migration 9, when one database served one exchange); returns how
/// many. A relay calls it once, before its first claim.
pub fn adopt_unowned(conn: &mut PgConnection, exchange: &str) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE dispatches SET exchange = $1 WHERE exchange IS NULL AND published_at IS NULL",
    )
    .bind::<Text, _>(exchange)
    .execute(conn)
}

/// Records what became of each claimed row (`settlements[i]` belongs to
/// `ids[i]`), in the transaction of its [`claim`]: published rows are
/// marked (one statement in the usual round where all were confirmed), the
/// others released for a retry as their [`Settlement`] says; each row's
/// `attempts` counts this publish.
pub fn settle(conn: &mut PgConnection, ids: &[i64], settlements: &[Settlement]) -> QueryResult<()> {
    let mut published = Vec::new();
    let mut retry_now: (Vec<i64>, &str) = (Vec::new(), "");
    let mut back_off = Vec::new();
    for (id, settlement) in ids.iter().zip(settlements) {
        match settlement {
            Settlement::Published => published.push(*id),
            Settlement::RetryNow(reason) => {
                retry_now.0.push(*id);
                retry_now.1 = reason;
            }
            Settlement::RetryLater(reason) => {
                back_off.push((*id, reason.as_str(), RETURNED_MAX_BACKOFF_SECS))
            }
            Settlement::RetrySoon(reason) => {
                back_off.push((*id, reason.as_str(), NACKED_MAX_BACKOFF_SECS))
            }
        }
    }
    if retry_now.0.is_empty() && back_off.is_empty() {
        return mark_published(conn, &published);
    }
    conn.transaction(|conn| {
        if !published.is_empty() {
            mark_published(conn, &published)?;
        }
        if !retry_now.0.is_empty() {
            release(conn, &retry_now.0, retry_now.1)?;
        }
        if !back_off.is_empty() {
            let ids: Vec<i64> = back_off.iter().map(|b| b.0).collect();
            let reasons: Vec<&str> = back_off.iter().map(|b| b.1).collect();
            let caps: Vec<f64> = back_off.iter().map(|b| b.2).collect();
            diesel::sql_query(
                "UPDATE dispatches d SET locked_until = NULL, last_error = r.reason, \
                        attempts = d.attempts + 1, \
                        next_attempt_at = now() + make_interval( \
                            secs => LEAST(0.1 * power(2, LEAST(d.attempts + 1, 10)), r.cap)) \
                   FROM unnest($1::bigint[], $2::text[], $3::float8[]) AS r(id, reason, cap) \
                  WHERE d.id = r.id",
            )
            .bind::<Array<BigInt>, _>(&ids)
            .bind::<Array<Text>, _>(&reasons)
            .bind::<Array<Double>, _>(&caps)
            .execute(conn)?;
        }
        QueryResult::Ok(())
    })
}

/// Gives claimed rows back unpublished, due at once (`reason` kept as
/// `last_error`, the attempt counted): after a connection failure or at
/// shutdown.
pub fn release(conn: &mut PgConnection, ids: &[i64], reason: &str) -> QueryResult<usize> {
    diesel::sql_query(
        "UPDATE dispatches SET locked_until = NULL, last_error = $2, next_attempt_at = now(), \
                attempts = attempts + 1 \
          WHERE id = ANY($1)",
    )
    .bind::<Array<BigInt>, _>(ids)
    .bind::<Text, _>(reason)
    .execute(conn)
}

/// Deletes up to `batch` rows published more than `retention` ago, oldest
/// first, skipping rows another transaction holds; returns how many. A run
/// or rerun message's `published_at` is copied onto its pair in the same
/// statement, so the pair's `publishedAt` reads the same afterwards. Small
/// batches keep each statement's locks short; call it until it deletes fewer
/// than `batch`.
pub fn delete_published(
    conn: &mut PgConnection,
    retention: Duration,
    batch: i64,
) -> QueryResult<usize> {
    #[derive(QueryableByName)]
    struct Deleted {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    conn.transaction(|conn| {
        // the copy onto the pairs bumps their plans' results_version (migration
        // 15's triggers): committed durably, whatever the pool's default
        conn.batch_execute("SET LOCAL synchronous_commit = on")?;
        diesel::sql_query(
            "WITH gone AS ( \
                 DELETE FROM dispatches WHERE id = ANY (ARRAY( \
                     SELECT id FROM dispatches \
                      WHERE published_at < now() - make_interval(secs => $1) \
                      ORDER BY published_at LIMIT $2 FOR UPDATE SKIP LOCKED)) \
                 RETURNING message_id, published_at), \
             kept AS ( \
                 UPDATE execution_pairs p SET published_at = g.published_at \
                   FROM gone g \
                  WHERE p.message_id = g.message_id AND p.published_at IS NULL) \
             SELECT count(*) AS n FROM gone",
        )
        .bind::<Double, _>(retention.as_secs_f64())
        .bind::<BigInt, _>(batch)
        .get_result::<Deleted>(conn)
        .map(|d| d.n as usize)
    })
}

/// Marks `ids` published at the time of the mark (after their publisher
/// confirms: `clock_timestamp()`, not the claim's transaction start) and, in the same statement, bumps the
/// `results_version` of their executions' plans once each, in plan order
/// (a pair's `publishedAt` is part of the reads of contract section 22;
/// migration 18 replaced the per-row trigger that did it at commit).
fn mark_published(conn: &mut PgConnection, ids: &[i64]) -> QueryResult<()> {
    // The relay's pool commits asynchronously (a lost mark only publishes
    // again), but a bumped results_version must never be lost once a reader
    // saw it: a crash would hand the same version to other content (a wrong
    // 304, a stale cached answer). This transaction waits for its WAL flush.
    conn.batch_execute("SET LOCAL synchronous_commit = on")?;
    diesel::sql_query(
        "WITH marked AS ( \
             UPDATE dispatches SET published_at = clock_timestamp(), locked_until = NULL, \
                    last_error = NULL, \
                    attempts = attempts + 1 \
              WHERE id = ANY($1) AND published_at IS NULL \
             RETURNING execution_id) \
         UPDATE plans p SET results_version = p.results_version + 1 \
           FROM (SELECT DISTINCT x.plan_id FROM executions x \
                  WHERE x.id IN (SELECT m.execution_id FROM marked m) \
                  ORDER BY x.plan_id) b \
          WHERE p.id = b.plan_id",
    )
    .bind::<Array<BigInt>, _>(ids)
    .execute(conn)
    .map(drop)
}

/// An event to publish through the outbox (contract, section 10): one
/// dispatch row, written in the transaction that produced the event.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// The execution the event is about.
    pub execution_id: i64,
    /// The AMQP `message_id` (the body's `eventId`).
    pub message_id: Uuid,
    /// E.g. `execution.finished.APPIUM`.
    pub routing_key: &'a str,
    /// The AMQP `type`, e.g. `execution.finished`; the relay picks the
    /// exchange by it.
    pub message_type: &'a str,
    /// The JSON body, exactly as published.
    pub body: &'a str,
    /// `AMQP_EXCHANGE` of the instance writing it: its relay publishes the
    /// row (to that exchange's `.events`).
    pub exchange: &'a str,
}

/// Inserts the dispatch row of `event`, due at once.
pub fn insert_event(conn: &mut PgConnection, event: &NewEvent<'_>) -> QueryResult<()> {
    diesel::sql_query(
        "INSERT INTO dispatches (message_id, execution_id, routing_key, message_type, body, \
                                 exchange) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind::<diesel::sql_types::Uuid, _>(event.message_id)
    .bind::<BigInt, _>(event.execution_id)
    .bind::<Text, _>(event.routing_key)
    .bind::<Text, _>(event.message_type)
    .bind::<Text, _>(event.body)
    .bind::<Text, _>(event.exchange)
    .execute(conn)
    .map(drop)
}

/// Inserts the dispatch row of a `result.rejected` event (contract, section
/// 17), due at once: routing key `result.rejected.<frameworkType>` of the
/// execution whose pair has the run message `run_message_id`
/// (`result.rejected.UNKNOWN`, and no execution, when none has).
pub fn insert_rejection_event(
    conn: &mut PgConnection,
    event_id: Uuid,
    run_message_id: Option<Uuid>,
    body: &str,
    exchange: &str,
) -> QueryResult<()> {
    diesel::sql_query(format!(
        "INSERT INTO dispatches (message_id, execution_id, routing_key, message_type, body, \
                                 exchange) \
         SELECT $1, x.id, 'result.rejected.' || coalesce(x.framework_type, 'UNKNOWN'), \
                '{}', $3, $4 \
           FROM (SELECT 1) one \
           LEFT JOIN execution_pairs p ON p.message_id = $2 \
           LEFT JOIN executions x ON x.id = p.execution_id",
        super::models::MESSAGE_RESULT_REJECTED
    ))
    .bind::<diesel::sql_types::Uuid, _>(event_id)
    .bind::<Nullable<diesel::sql_types::Uuid>, _>(run_message_id)
    .bind::<Text, _>(body)
    .bind::<Text, _>(exchange)
    .execute(conn)
    .map(drop)
}
