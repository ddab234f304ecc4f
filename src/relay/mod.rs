//! The relay: publishes pending dispatch (outbox) rows to RabbitMQ and marks
//! them published.
//!
//! Each round claims a batch in one short statement (`FOR UPDATE SKIP LOCKED`
//! plus a lease in `locked_until`, so several service instances share one
//! database without publishing a row twice), publishes it outside any
//! transaction with pipelined publisher confirms, then marks the confirmed
//! rows published and releases the others: after a connection failure at
//! once (the reconnect backs off), after a return or nack with an exponential
//! back-off per row, up to 60 s after a return and 1 s after a nack (a quorum
//! queue nacks while it elects a leader) (the claim/back-off/delete-after-success pattern of
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
//! Its claims and marks run through [`Db::run`] on the relay's own pool: a
//! connection the database changed under (killed, read-only after a failover) is discarded
//! and the statement run again on a fresh one; a round that still fails is
//! logged and retried after `RELAY_POLL_MS`.
//!
//! Broker faults that are not outages (issue 13): while the broker blocks the
//! connection (flow control: a memory or disk alarm) the relay claims
//! nothing, waits for the batch in flight without counting the blocked time
//! and keeps its lease, and never opens a second connection
//! ([`crate::amqp::link`]). A part of the topology the broker refuses to
//! declare (a queue declared elsewhere with other arguments) holds back only
//! the routing keys it serves: their rows stay pending and are not claimed,
//! and the declaration is retried every poll, so an operator's fix lets them
//! flow within seconds ([`crate::amqp::topology`]).

pub mod upkeep;

use crate::amqp::{
    declare_each, BrokerConnection, BrokerStatus, Destination, Link, OutgoingMessage,
    PublishFailure, PublishOutcome, Publisher, TopologyConflict,
};
use crate::config::{AmqpConfig, RelayConfig};
use crate::db::models::{
    MESSAGE_EXECUTION_CANCELLED, MESSAGE_EXECUTION_FINISHED, MESSAGE_RESULT_REJECTED,
};
use crate::db::outbox::{self, ClaimedDispatch, Settlement};
use crate::db::{staleness, Db, PgPool};
use crate::metrics::Metrics;
use anyhow::Context;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// Shared view of the relay's broker connection for readiness and metrics:
/// connected, blocked by the broker's flow control, topology conflicts.
pub type RelayStatus = BrokerStatus;

/// The connection name the broker shows for the relay.
const CONNECTION_NAME: &str = "plan-queue relay";

/// The outbox relay of one service instance.
pub struct Relay {
    amqp: AmqpConfig,
    config: RelayConfig,
    /// The relay's own small pool.
    db: Db,
    wakeup: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
    status: Arc<RelayStatus>,
    metrics: Arc<Metrics>,
    /// The rows written before dispatch rows recorded their exchange were
    /// adopted ([`outbox::adopt_unowned`], once, before the first claim).
    adopted: Arc<AtomicBool>,
}

const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(100);

impl Relay {
    /// `amqp` names the broker and topology, `config` the relay's batch,
    /// poll and lease; `pool` is the relay's own small pool; `wakeup` is notified by the queue
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
        let timeout = pool.connection_timeout();
        Relay {
            amqp,
            config,
            db: Db::new(pool, timeout),
            wakeup,
            shutdown,
            status,
            metrics,
            adopted: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Publishes every due dispatch row now, round after round on a
    /// connection of its own (topology declared first), until a claim finds
    /// nothing; returns the rows claimed. The relay's work without its loop:
    /// for tests, which run one relay pass instead of sleeping
    /// (zero-to-production's `dispatch_all_pending_emails`, crates.io's
    /// `run_pending_background_jobs`).
    ///
    /// Errors: the broker cannot be reached, a connection failed mid-way, or
    /// the database failed (rows not confirmed are released for a retry).
    pub async fn publish_pending(&mut self) -> anyhow::Result<usize> {
        let mut broker = BrokerConnection::new(
            &self.amqp.url,
            "plan-queue relay pass",
            self.amqp.publish_timeout,
            Arc::new(BrokerStatus::default()),
        );
        let link = broker.open().await?;
        self.declare(&link).await?;
        let publisher = Publisher::open(link, &self.amqp).await?;
        let mut claimed = 0;
        let mut prefetched = None;
        let passed = loop {
            let round = match self.round(&publisher, prefetched.take()).await {
                Ok(round) => round,
                Err(e) => break Err(e),
            };
            claimed += round.claimed;
            if round.connection_failed {
                self.release(round.next).await;
                break Err(anyhow::anyhow!(
                    "the broker connection failed during a relay pass"
                ));
            }
            prefetched = round.next;
            if round.claimed == 0 && prefetched.is_none() {
                break Ok(claimed);
            }
        };
        broker.close("relay pass done").await;
        passed
    }

    /// Runs until shutdown: connect (with back-off; the failed connection
    /// closed first), declare the topology, then claim, publish, mark; hold
    /// off while the broker blocks the connection. At shutdown the batch in
    /// flight is finished (its confirms awaited, unless the broker blocks)
    /// and one last round publishes what the final requests committed.
    pub async fn run(mut self) {
        let mut broker = BrokerConnection::new(
            &self.amqp.url,
            CONNECTION_NAME,
            self.amqp.publish_timeout,
            self.status.clone(),
        );
        let mut publisher: Option<Publisher> = None;
        let mut reconnect_delay = FIRST_RECONNECT_DELAY;
        let mut declared_at = Instant::now();
        // a batch claimed while the previous one was being published
        let mut prefetched: Option<Vec<ClaimedDispatch>> = None;
        while !*self.shutdown.borrow() {
            if publisher.as_ref().is_none_or(|p| !p.is_open()) {
                drop(publisher.take());
                self.release(prefetched.take()).await;
                publisher = self.connect(&mut broker).await;
                if publisher.is_none() {
                    self.sleep(reconnect_delay).await;
                    reconnect_delay = (reconnect_delay * 2).min(MAX_RECONNECT_DELAY);
                    continue;
                }
                declared_at = Instant::now();
                reconnect_delay = FIRST_RECONNECT_DELAY;
            }
            let Some(current) = publisher.as_ref() else {
                continue;
            };
            if current.link().is_blocked() {
                self.release(prefetched.take()).await;
                self.hold_while_blocked(current.link()).await;
                continue;
            }
            if !self.status.conflicts().is_empty()
                && declared_at.elapsed() >= self.config.poll_interval
            {
                self.redeclare(current.link()).await;
                declared_at = Instant::now();
            }
            match self.round(current, prefetched.take()).await {
                Ok(round) => {
                    prefetched = round.next;
                    if round.connection_failed {
                        // its state is unknown: closed before the next one opens
                        publisher = None;
                        self.release(prefetched.take()).await;
                        broker.close("publish failed or timed out").await;
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
        match publisher
            .as_ref()
            .filter(|p| p.is_open() && !p.link().is_blocked())
        {
            Some(p) => match self.round(p, prefetched.take()).await {
                Ok(round) => self.release(round.next).await,
                Err(e) => log::warn!("relay: last round at shutdown failed: {}", Failure(&e)),
            },
            None => self.release(prefetched.take()).await,
        }
        if let Some(p) = publisher {
            p.close(self.amqp.publish_timeout).await;
        }
        broker.close("plan-queue shutting down").await;
        log::info!("relay stopped");
    }

    /// Gives claimed rows back unpublished (lease cleared), so that they need
    /// not wait for the lease to expire: after a connection failure, when the
    /// broker blocks the connection, or at shutdown.
    async fn release(&self, rows: Option<Vec<ClaimedDispatch>>) {
        let Some(rows) = rows.filter(|r| !r.is_empty()) else {
            return;
        };
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let released = self.db.run(move |conn| {
            outbox::release(
                conn,
                &ids,
                "not published: the relay lost or paused its broker connection, or stopped",
            )
            .context("releasing dispatch rows")
        });
        if let Err(e) = released.await {
            log::warn!(
                "relay: releasing claimed rows failed, their lease will expire: {}",
                Failure(&e)
            );
        }
    }

    /// One connection attempt (the previous connection closed first), the
    /// topology declared part by part, a publisher channel opened; abandoned
    /// at shutdown.
    async fn connect(&self, broker: &mut BrokerConnection) -> Option<Publisher> {
        let mut shutdown = self.shutdown.clone();
        let attempt = async {
            let link = broker.open().await?;
            self.declare(&link).await?;
            let publisher = Publisher::open(link, &self.amqp).await?;
            broker.set_ready();
            anyhow::Ok(publisher)
        };
        let result = tokio::select! {
            result = attempt => result,
            _ = shutdown.changed() => return None,
        };
        match result {
            Ok(connected) => {
                log::info!(
                    "relay connected to RabbitMQ, exchange {}",
                    self.amqp.exchange
                );
                Some(connected)
            }
            Err(e) => {
                log::warn!("relay: RabbitMQ unreachable, will retry: {e:#}");
                broker.close("connecting failed").await;
                None
            }
        }
    }

    /// Declares every part of the topology on its own; records (and logs
    /// when they change) the parts the broker refused. Errors: the connection
    /// failed or the declarations timed out.
    async fn declare(&self, link: &Link) -> anyhow::Result<()> {
        let started = Instant::now();
        let conflicts = declare_each(link, &self.amqp, self.amqp.publish_timeout).await?;
        log::debug!("relay: topology declared in {:?}", started.elapsed());
        let before = self.status.conflicts();
        log_conflict_changes(&before, &conflicts);
        self.status.set_conflicts(conflicts);
        Ok(())
    }

    /// Declares the topology again while some part of it is refused, so an
    /// operator's fix is picked up within a poll interval.
    async fn redeclare(&self, link: &Link) {
        if let Err(e) = self.declare(link).await {
            log::warn!("relay: declaring the topology again failed: {e:#}");
        }
    }

    /// Waits while the broker blocks the connection: until it unblocks, a
    /// poll interval passes (to notice a connection that died), or shutdown.
    async fn hold_while_blocked(&mut self, link: &Link) {
        let poll = self.config.poll_interval;
        tokio::select! {
            _ = link.unblocked() => {}
            _ = tokio::time::sleep(poll) => {}
            _ = self.shutdown.changed() => {}
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
        let started = Instant::now();
        let batch = match prefetched {
            Some(batch) => batch,
            None => self.claim().await?,
        };
        if batch.is_empty() {
            return Ok(RoundResult::default());
        }
        let claimed_at = started.elapsed();
        let ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
        let publish = self.publish(publisher, &batch, &ids);
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
        let settlements: Vec<Settlement> = results.iter().map(settlement).collect();
        let marked = self
            .db
            .run(move |conn| {
                outbox::settle(conn, &ids, &settlements).context("marking dispatch rows")
            })
            .await;
        let mut next = match (marked, next) {
            (Ok(()), next) => next.transpose()?,
            (Err(e), next) => {
                self.release(next.and_then(Result::ok)).await;
                return Err(e);
            }
        };
        if confirmed_at >= self.config.lease / 2 {
            // claimed before a long wait (the broker blocked): its lease may
            // be running out, so it is given back and claimed afresh
            self.release(next.take()).await;
        }
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

    /// Publishes `batch` and keeps the lease of its rows (`ids`) while the
    /// confirms are awaited, which may be long while the broker blocks the
    /// connection; gives up (every row a connection failure, so released)
    /// when the relay stops while the broker blocks.
    async fn publish(
        &self,
        publisher: &Publisher,
        batch: &[ClaimedDispatch],
        ids: &[i64],
    ) -> Vec<Result<(), PublishFailure>> {
        let mut shutdown = self.shutdown.clone();
        let stopping_while_blocked = async {
            let _ = shutdown.wait_for(|stop| *stop).await;
            publisher.link().blocked().await;
        };
        let keep_lease = async {
            loop {
                tokio::time::sleep(self.config.lease / 3).await;
                self.extend_lease(ids).await;
            }
        };
        let messages: Vec<OutgoingMessage<'_>> = batch.iter().map(outgoing).collect();
        tokio::select! {
            results = publisher.publish_batch(&messages, self.amqp.publish_timeout) => results,
            _ = stopping_while_blocked => {
                let failure = PublishFailure::Connection(
                    "the relay stopped while the broker blocked publishing".to_owned(),
                );
                vec![Err(failure); batch.len()]
            }
            _ = keep_lease => Vec::new(),
        }
    }

    /// Renews the lease of rows still being published.
    async fn extend_lease(&self, ids: &[i64]) {
        let (ids, lease) = (ids.to_vec(), self.config.lease);
        let extended = self.db.run(move |conn| {
            outbox::extend_lease(conn, &ids, lease).context("extending the lease")
        });
        if let Err(e) = extended.await {
            log::warn!(
                "relay: renewing the lease of rows in flight failed: {}",
                Failure(&e)
            );
        }
    }

    /// Claims the next batch of due rows of this instance's exchange on the
    /// blocking pool, skipping the routing keys a topology conflict holds
    /// back; before the first claim, adopts the rows that record no exchange.
    async fn claim(&self) -> anyhow::Result<Vec<ClaimedDispatch>> {
        let (size, lease) = (self.config.batch_size, self.config.lease);
        let held_back = held_back(&self.status.conflicts());
        let exchange = self.amqp.exchange.clone();
        let adopted = self.adopted.clone();
        self.db
            .run(move |conn| {
                if !adopted.load(Ordering::Relaxed) {
                    let rows = outbox::adopt_unowned(conn, &exchange)
                        .context("adopting dispatch rows without an exchange")?;
                    if rows > 0 {
                        log::info!("relay: adopted {rows} unpublished rows written before dispatch rows recorded their exchange");
                    }
                    adopted.store(true, Ordering::Relaxed);
                }
                outbox::claim(conn, &exchange, size, lease, &held_back)
                    .context("claiming dispatch rows")
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

/// The routing keys whose rows wait for a topology conflict to be resolved.
fn held_back(conflicts: &[TopologyConflict]) -> Vec<String> {
    let mut keys: Vec<String> = conflicts
        .iter()
        .flat_map(|c| c.held_back.iter().cloned())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// One line per conflict that appeared (warn) or was resolved (info).
fn log_conflict_changes(before: &[TopologyConflict], after: &[TopologyConflict]) {
    for conflict in after.iter().filter(|c| !before.contains(c)) {
        let held = if conflict.held_back.is_empty() {
            "nothing held back".to_owned()
        } else {
            format!(
                "dispatch rows of routing key(s) {} held back until it is fixed",
                conflict.held_back.join(", ")
            )
        };
        log::warn!(
            "relay: RabbitMQ refused to declare {} {} as configured ({}): {}; {held}; the rest of the topology is in use",
            conflict.kind,
            conflict.name,
            conflict.argument,
            conflict.reason,
        );
    }
    for conflict in before.iter().filter(|c| !after.contains(c)) {
        log::info!(
            "relay: {} {} is declared as configured now; routing key(s) {} flow again",
            conflict.kind,
            conflict.name,
            conflict.held_back.join(", "),
        );
    }
}

#[derive(Default)]
struct RoundResult {
    claimed: usize,
    connection_failed: bool,
    /// The next batch, claimed during this round's publish.
    next: Option<Vec<ClaimedDispatch>>,
}

/// The message of a claimed row: an event (`execution.finished`,
/// `execution.cancelled`, `result.rejected`; contract, sections 10, 16, 17)
/// goes to `<exchange>.events`, every other row to the main exchange.
fn outgoing(row: &ClaimedDispatch) -> OutgoingMessage<'_> {
    OutgoingMessage {
        message_id: row.message_id,
        routing_key: &row.routing_key,
        message_type: &row.message_type,
        body: &row.body,
        correlation_id: row.correlation_id.as_deref(),
        destination: if [
            MESSAGE_EXECUTION_FINISHED,
            MESSAGE_EXECUTION_CANCELLED,
            MESSAGE_RESULT_REJECTED,
        ]
        .contains(&row.message_type.as_str())
        {
            Destination::Events
        } else {
            Destination::Exchange
        },
    }
}

/// What the outbox records for one publish result.
fn settlement(result: &Result<(), PublishFailure>) -> Settlement {
    match result {
        Ok(()) => Settlement::Published,
        Err(failure) if failure.needs_reconnect() => {
            Settlement::RetryNow(failure.reason().to_owned())
        }
        Err(PublishFailure::Nacked(reason)) => Settlement::RetrySoon(reason.clone()),
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
