//! The relay: publishes pending dispatch (outbox) rows to RabbitMQ and marks
//! them published.
//!
//! Each round claims a batch in one short statement (`FOR UPDATE SKIP LOCKED`
//! plus a lease in `locked_until`, so several service instances share one
//! database without publishing a row twice), publishes it outside any
//! transaction with pipelined publisher confirms, then marks the confirmed
//! rows published and releases the others: after a connection failure at
//! once (the reconnect backs off), after a return or nack with an exponential
//! back-off per row (the claim/back-off/delete-after-success pattern of
//! crates.io's `crates_io_worker/src/storage.rs`). A row is marked published
//! only after the broker confirmed it, so a crash in between re-publishes it
//! with the same `messageId`: delivery is at least once.
//!
//! Every log line about a message carries `request_id=` with the
//! `X-Request-Id` of the HTTP request that queued it (its AMQP
//! `correlation_id`), so a request can be followed to its messages.
//!
//! The relay wakes when a rerun commits ([`tokio::sync::Notify`]) and
//! otherwise looks for due rows every `RELAY_POLL_MS`.
//!
//! Its claims and marks run through [`with_connection`]: a connection the
//! database changed under (killed, read-only after a failover) is discarded
//! and the statement run again on a fresh one; a round that still fails is
//! logged and retried after `RELAY_POLL_MS`.

use crate::amqp::{PublishFailure, Publisher};
use crate::config::Config;
use crate::db::models::ClaimedDispatch;
use crate::db::{staleness, with_connection, PgPool};
use crate::metrics::{Metrics, PublishOutcome};
use anyhow::Context;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Text};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Shared view of the relay for readiness and metrics.
#[derive(Default)]
pub struct RelayStatus {
    broker_connected: AtomicBool,
}

impl RelayStatus {
    /// True while the relay holds an open broker connection.
    pub fn broker_connected(&self) -> bool {
        self.broker_connected.load(Ordering::Relaxed)
    }
}

/// The outbox relay of one service instance.
pub struct Relay {
    config: Arc<Config>,
    pool: PgPool,
    wakeup: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
    status: Arc<RelayStatus>,
    metrics: Arc<Metrics>,
}

const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(100);

impl Relay {
    /// `pool` is the relay's own small pool; `wakeup` is notified by the rerun
    /// service after each commit; the relay stops when `shutdown` turns true;
    /// every publish is counted in `metrics` by its outcome.
    pub fn new(
        config: Arc<Config>,
        pool: PgPool,
        wakeup: Arc<Notify>,
        shutdown: watch::Receiver<bool>,
        status: Arc<RelayStatus>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Relay {
            config,
            pool,
            wakeup,
            shutdown,
            status,
            metrics,
        }
    }

    /// Runs until shutdown: connect (with back-off), claim, publish, mark.
    /// At shutdown the batch in flight is finished (its confirms awaited) and
    /// one last round publishes what the final requests committed.
    pub async fn run(mut self) {
        let mut publisher: Option<Publisher> = None;
        let mut reconnect_delay = FIRST_RECONNECT_DELAY;
        // a batch claimed while the previous one was being published
        let mut prefetched: Option<Vec<ClaimedDispatch>> = None;
        while !*self.shutdown.borrow() {
            if publisher.as_ref().is_none_or(|p| !p.is_open()) {
                self.status.broker_connected.store(false, Ordering::Relaxed);
                publisher = self.connect().await;
                if publisher.is_none() {
                    self.sleep(reconnect_delay).await;
                    reconnect_delay = (reconnect_delay * 2).min(MAX_RECONNECT_DELAY);
                    continue;
                }
                reconnect_delay = FIRST_RECONNECT_DELAY;
            }
            let Some(current) = publisher.as_ref() else {
                continue;
            };
            match self.round(current, prefetched.take()).await {
                Ok(round) => {
                    prefetched = round.next;
                    if round.connection_failed {
                        publisher = None;
                        self.release(prefetched.take()).await;
                    }
                    if round.claimed < self.config.relay_batch_size as usize && prefetched.is_none()
                    {
                        self.idle().await;
                    }
                }
                Err(e) => {
                    log::warn!("relay: database error, retrying: {}", Failure(&e));
                    self.sleep(self.config.relay_poll_interval).await;
                }
            }
        }
        match publisher.filter(Publisher::is_open) {
            Some(p) => {
                match self.round(&p, prefetched.take()).await {
                    Ok(round) => self.release(round.next).await,
                    Err(e) => log::warn!("relay: last round at shutdown failed: {}", Failure(&e)),
                }
                p.close().await;
            }
            None => self.release(prefetched.take()).await,
        }
        self.status.broker_connected.store(false, Ordering::Relaxed);
        log::info!("relay stopped");
    }

    /// Gives claimed rows back unpublished (lease cleared), so that they need
    /// not wait for the lease to expire: after a connection failure or at shutdown.
    async fn release(&self, rows: Option<Vec<ClaimedDispatch>>) {
        let Some(rows) = rows.filter(|r| !r.is_empty()) else {
            return;
        };
        let results = vec![
            Err(PublishFailure::Connection(
                "not published: the relay lost its broker connection or stopped".to_owned()
            ));
            rows.len()
        ];
        let pool = self.pool.clone();
        if let Err(e) = blocking(move || mark(&pool, &rows, &results)).await {
            log::warn!(
                "relay: releasing claimed rows failed, their lease will expire: {}",
                Failure(&e)
            );
        }
    }

    /// One connection attempt, abandoned at shutdown.
    async fn connect(&mut self) -> Option<Publisher> {
        let attempt = Publisher::connect(&self.config, self.config.publish_timeout);
        let result = tokio::select! {
            result = attempt => result,
            _ = self.shutdown.changed() => return None,
        };
        match result {
            Ok(connected) => {
                log::info!(
                    "relay connected to RabbitMQ, exchange {}",
                    self.config.exchange
                );
                self.status.broker_connected.store(true, Ordering::Relaxed);
                Some(connected)
            }
            Err(e) => {
                log::warn!("relay: RabbitMQ unreachable, will retry: {e:#}");
                None
            }
        }
    }

    /// One claim → publish → mark round. `prefetched` is a batch claimed
    /// already; when this round's batch is full (a backlog), the next batch is
    /// claimed while this one is published and confirmed, and returned.
    async fn round(
        &self,
        publisher: &Publisher,
        prefetched: Option<Vec<ClaimedDispatch>>,
    ) -> anyhow::Result<RoundResult> {
        let started = std::time::Instant::now();
        let batch = match prefetched {
            Some(batch) => batch,
            None => self.claim().await?,
        };
        if batch.is_empty() {
            return Ok(RoundResult::default());
        }
        let claimed_at = started.elapsed();
        let publish = publisher.publish_batch(&batch, self.config.publish_timeout);
        let (results, next) = if batch.len() >= self.config.relay_batch_size as usize {
            let (results, next) = tokio::join!(publish, self.claim());
            (results, Some(next))
        } else {
            (publish.await, None)
        };
        let confirmed_at = started.elapsed();
        let connection_failed = results
            .iter()
            .any(|r| r.as_ref().is_err_and(PublishFailure::needs_reconnect));
        for result in &results {
            self.metrics.publish(match result {
                Ok(()) => PublishOutcome::Confirmed,
                Err(failure) => failure.outcome(),
            });
        }
        log_results(&batch, &results);
        let claimed = batch.len();
        let pool = self.pool.clone();
        let marked = blocking(move || mark(&pool, &batch, &results)).await;
        let next = match (marked, next) {
            (Ok(()), next) => next.transpose()?,
            (Err(e), next) => {
                self.release(next.and_then(Result::ok)).await;
                return Err(e);
            }
        };
        log::debug!(
            "relay: batch of {claimed}: claimed in {claimed_at:?}, confirmed after {confirmed_at:?}, marked after {:?}",
            started.elapsed()
        );
        Ok(RoundResult {
            claimed,
            connection_failed,
            next,
        })
    }

    /// Claims the next batch of due rows on the blocking pool.
    async fn claim(&self) -> anyhow::Result<Vec<ClaimedDispatch>> {
        let (pool, size, lease) = (
            self.pool.clone(),
            self.config.relay_batch_size,
            self.config.relay_lease,
        );
        blocking(move || claim(&pool, size, lease)).await
    }

    /// Waits for a commit, the poll interval, or shutdown.
    async fn idle(&mut self) {
        let poll = self.config.relay_poll_interval;
        tokio::select! {
            _ = self.wakeup.notified() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = self.shutdown.changed() => {}
        }
    }

    async fn sleep(&mut self, delay: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.shutdown.changed() => {}
        }
    }
}

#[derive(Default)]
struct RoundResult {
    claimed: usize,
    connection_failed: bool,
    /// The next batch, claimed during this round's publish.
    next: Option<Vec<ClaimedDispatch>>,
}

/// A failed round for a log line: a stale connection by its kind only (a
/// server's message may name the statement), any other error in full.
struct Failure<'a>(&'a anyhow::Error);

impl std::fmt::Display for Failure<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self
            .0
            .downcast_ref::<diesel::result::Error>()
            .and_then(staleness)
        {
            Some(why) => write!(f, "database unavailable ({why})"),
            None => write!(f, "{:#}", self.0),
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .context("relay database task panicked")?
}

/// Claims up to `size` due rows for `lease`, oldest first.
///
/// The due ids are collected once (`= ANY (ARRAY(...))`, an init plan) and
/// then looked up by primary key: written as `id IN (subquery)`, PostgreSQL
/// chose, whenever its statistics still described a near-empty table, a
/// nested loop that re-ran the subquery for every row of `dispatches`, and a
/// claim took seconds (bench/BENCHMARKS.md).
fn claim(pool: &PgPool, size: i64, lease: Duration) -> anyhow::Result<Vec<ClaimedDispatch>> {
    with_connection(pool, pool.connection_timeout(), |conn| {
        let mut rows: Vec<ClaimedDispatch> = diesel::sql_query(
            "UPDATE dispatches SET locked_until = now() + make_interval(secs => $1), \
                    attempts = attempts + 1 \
              WHERE id = ANY (ARRAY(SELECT id FROM dispatches \
                            WHERE published_at IS NULL AND next_attempt_at <= now() \
                              AND (locked_until IS NULL OR locked_until < now()) \
                            ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)) \
              RETURNING id, message_id, routing_key, body, correlation_id",
        )
        .bind::<Double, _>(lease.as_secs_f64())
        .bind::<BigInt, _>(size)
        .load(conn)
        .context("claiming dispatch rows")?;
        rows.sort_unstable_by_key(|r| r.id);
        Ok(rows)
    })
}

/// Marks confirmed rows published; releases the others for a retry: at once
/// after a connection failure (reconnecting backs off), after a return or
/// nack with a back-off of 0.2 s doubling per attempt up to 60 s.
fn mark(
    pool: &PgPool,
    batch: &[ClaimedDispatch],
    results: &[Result<(), PublishFailure>],
) -> anyhow::Result<()> {
    let mut published = Vec::new();
    let mut retry_now: (Vec<i64>, &str) = (Vec::new(), "");
    let mut back_off = Vec::new();
    for (row, result) in batch.iter().zip(results) {
        match result {
            Ok(()) => published.push(row.id),
            Err(failure) if failure.needs_reconnect() => {
                retry_now.0.push(row.id);
                retry_now.1 = failure.reason();
            }
            Err(failure) => back_off.push((row.id, failure.reason())),
        }
    }
    let mark_published = |conn: &mut PgConnection| {
        diesel::sql_query(
            "UPDATE dispatches SET published_at = now(), locked_until = NULL, last_error = NULL \
              WHERE id = ANY($1)",
        )
        .bind::<Array<BigInt>, _>(&published)
        .execute(conn)
    };
    if retry_now.0.is_empty() && back_off.is_empty() {
        // the usual round: one statement, no transaction round trips
        return with_connection(pool, pool.connection_timeout(), |conn| {
            mark_published(conn)
                .map(drop)
                .context("marking dispatch rows")
        });
    }
    with_connection(pool, pool.connection_timeout(), |conn| {
        conn.transaction(|conn| {
            if !published.is_empty() {
                mark_published(conn)?;
            }
            if !retry_now.0.is_empty() {
                diesel::sql_query(
                    "UPDATE dispatches SET locked_until = NULL, last_error = $2, next_attempt_at = now() \
                      WHERE id = ANY($1)",
                )
                .bind::<Array<BigInt>, _>(&retry_now.0)
                .bind::<Text, _>(retry_now.1)
                .execute(conn)?;
            }
            for (id, reason) in &back_off {
                diesel::sql_query(
                    "UPDATE dispatches SET locked_until = NULL, last_error = $2, \
                            next_attempt_at = now() + make_interval(secs => LEAST(0.1 * power(2, LEAST(attempts, 10)), 60)) \
                      WHERE id = $1",
                )
                .bind::<BigInt, _>(id)
                .bind::<Text, _>(reason)
                .execute(conn)?;
            }
            diesel::QueryResult::Ok(())
        })
        .context("marking dispatch rows")
    })
}

/// One line per message: published, or why not (with `request_id=`).
fn log_results(batch: &[ClaimedDispatch], results: &[Result<(), PublishFailure>]) {
    for (row, result) in batch.iter().zip(results) {
        let request_id = row.correlation_id.as_deref().unwrap_or("-");
        match result {
            Ok(()) => log::info!(
                "relay: published message {} routing key {} request_id={request_id}",
                row.message_id,
                row.routing_key,
            ),
            Err(failure) => log::warn!(
                "relay: message {} routing key {} request_id={request_id} not confirmed: {}; will retry",
                row.message_id,
                row.routing_key,
                failure.reason(),
            ),
        }
    }
}
