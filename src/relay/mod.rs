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

pub mod upkeep;

use crate::amqp::{PublishFailure, Publisher};
use crate::config::{AmqpConfig, RelayConfig};
use crate::db::outbox::{self, ClaimedDispatch, Settlement};
use crate::db::{staleness, with_connection, PgPool};
use crate::metrics::{Metrics, PublishOutcome};
use anyhow::Context;
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
    amqp: AmqpConfig,
    config: RelayConfig,
    pool: PgPool,
    wakeup: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
    status: Arc<RelayStatus>,
    metrics: Arc<Metrics>,
}

const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(100);

impl Relay {
    /// `amqp` names the broker and topology, `config` the relay's batch,
    /// poll and lease; `pool` is the relay's own small pool; `wakeup` is notified by the rerun
    /// service after each commit; the relay stops when `shutdown` turns true;
    /// every publish is counted in `metrics` by its outcome.
    pub fn new(
        amqp: AmqpConfig,
        config: RelayConfig,
        pool: PgPool,
        wakeup: Arc<Notify>,
        shutdown: watch::Receiver<bool>,
        status: Arc<RelayStatus>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Relay {
            amqp,
            config,
            pool,
            wakeup,
            shutdown,
            status,
            metrics,
        }
    }

    /// Publishes every due dispatch row now, round after round on a
    /// connection of its own, until a claim finds nothing; returns the rows
    /// claimed. The relay's work without its loop: for tests, which run one
    /// relay pass instead of sleeping (zero-to-production's
    /// `dispatch_all_pending_emails`, crates.io's `run_pending_background_jobs`).
    ///
    /// Errors: the broker cannot be reached, a connection failed mid-way, or
    /// the database failed (rows not confirmed are released for a retry).
    pub async fn publish_pending(&mut self) -> anyhow::Result<usize> {
        let publisher = Publisher::connect(&self.amqp).await?;
        let mut claimed = 0;
        let mut prefetched = None;
        loop {
            let round = self.round(&publisher, prefetched.take()).await?;
            claimed += round.claimed;
            anyhow::ensure!(
                !round.connection_failed,
                "the broker connection failed during a relay pass"
            );
            prefetched = round.next;
            if round.claimed == 0 && prefetched.is_none() {
                break;
            }
        }
        publisher.close().await;
        Ok(claimed)
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
                    if round.claimed < self.config.batch_size as usize && prefetched.is_none() {
                        self.idle().await;
                    }
                }
                Err(e) => {
                    log::warn!("relay: database error, retrying: {}", Failure(&e));
                    self.sleep(self.config.poll_interval).await;
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
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let pool = self.pool.clone();
        let released = blocking(move || {
            with_connection(&pool, pool.connection_timeout(), |conn| {
                outbox::release(
                    conn,
                    &ids,
                    "not published: the relay lost its broker connection or stopped",
                )
                .context("releasing dispatch rows")
            })
        });
        if let Err(e) = released.await {
            log::warn!(
                "relay: releasing claimed rows failed, their lease will expire: {}",
                Failure(&e)
            );
        }
    }

    /// One connection attempt, abandoned at shutdown.
    async fn connect(&mut self) -> Option<Publisher> {
        let attempt = Publisher::connect(&self.amqp);
        let result = tokio::select! {
            result = attempt => result,
            _ = self.shutdown.changed() => return None,
        };
        match result {
            Ok(connected) => {
                log::info!(
                    "relay connected to RabbitMQ, exchange {}",
                    self.amqp.exchange
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
        let publish = publisher.publish_batch(&batch, self.amqp.publish_timeout);
        let (results, next) = if batch.len() >= self.config.batch_size as usize {
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
        let ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
        let settlements: Vec<Settlement> = results.iter().map(settlement).collect();
        let pool = self.pool.clone();
        let marked = blocking(move || {
            with_connection(&pool, pool.connection_timeout(), |conn| {
                outbox::settle(conn, &ids, &settlements).context("marking dispatch rows")
            })
        })
        .await;
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
        let (pool, size, lease) = (self.pool.clone(), self.config.batch_size, self.config.lease);
        blocking(move || {
            with_connection(&pool, pool.connection_timeout(), |conn| {
                outbox::claim(conn, size, lease).context("claiming dispatch rows")
            })
        })
        .await
    }

    /// Waits for a commit, the poll interval, or shutdown.
    async fn idle(&mut self) {
        let poll = self.config.poll_interval;
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

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .context("relay database task panicked")?
}

/// What the outbox records for one publish result.
fn settlement(result: &Result<(), PublishFailure>) -> Settlement {
    match result {
        Ok(()) => Settlement::Published,
        Err(failure) if failure.needs_reconnect() => {
            Settlement::RetryNow(failure.reason().to_owned())
        }
        Err(failure) => Settlement::RetryLater(failure.reason().to_owned()),
    }
}

/// A relay failure for the log: the kind of a database failure the
/// connection layer recognises (never the statement text), else the error chain.
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
