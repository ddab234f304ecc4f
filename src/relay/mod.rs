//! The relay: publishes pending dispatch (outbox) rows to RabbitMQ and marks
//! them published.
//!
//! Each round is one database transaction: it claims a batch as row locks
//! (`FOR UPDATE SKIP LOCKED`, no write: several service instances share one
//! database without publishing a row twice), publishes it with pipelined
//! publisher confirms while the transaction holds the claim, then marks the
//! confirmed rows published and releases the others in the same
//! transaction, one write per row and one commit per batch: after a
//! connection failure at once (the reconnect backs off), after a return or
//! nack with an exponential
//! back-off per row, up to 60 s after a return and 1 s after a nack (a quorum
//! queue nacks while it elects a leader) (the claim/back-off/delete-after-success pattern of
//! crates.io's `crates_io_worker/src/storage.rs`). A row is marked published
//! only after the broker confirmed it, so a crash in between re-publishes it
//! with the same `messageId`: delivery is at least once. A relay that dies
//! loses its claim with its database session; one that hangs loses it after
//! `RELAY_LEASE_MS` without a statement (PostgreSQL's
//! `idle_in_transaction_session_timeout`; a live relay touches its
//! transaction every third of that while it waits for confirms).
//!
//! Every log line about a message carries `request_id=` with the
//! `X-Request-Id` of the HTTP request that queued it (its AMQP
//! `correlation_id`), so a request can be followed to its messages.
//!
//! The relay wakes when a rerun commits ([`tokio::sync::Notify`]) and
//! otherwise looks for due rows every `RELAY_POLL_MS`.
//!
//! A round runs through [`Db::run`] on the relay's own pool, on a blocking
//! thread that drives the publish with [`tokio::runtime::Handle::block_on`]:
//! a connection the database changed under (killed, read-only after a
//! failover) is discarded and the round run again on a fresh one (a
//! re-publish with the same `messageId`s); a round that still fails is
//! logged and retried after `RELAY_POLL_MS`.
//!
//! Broker faults that are not outages (issue 13): while the broker blocks the
//! connection (flow control: a memory or disk alarm) the relay claims
//! nothing, waits for the batch in flight without counting the blocked time
//! and keeps its claim, and never opens a second connection
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
use diesel::Connection;
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
        )
        .publish_only();
        let link = broker.open().await?;
        self.declare(&link).await?;
        let publisher = Arc::new(Publisher::open(link, &self.amqp).await?);
        let mut claimed = 0;
        let passed = loop {
            let round = match self.round(&publisher).await {
                Ok(round) => round,
                Err(e) => break Err(e),
            };
            claimed += round.claimed;
            if round.connection_failed {
                break Err(anyhow::anyhow!(
                    "the broker connection failed during a relay pass"
                ));
            }
            if round.claimed == 0 {
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
        )
        .publish_only();
        let mut publisher: Option<Arc<Publisher>> = None;
        let mut reconnect_delay = FIRST_RECONNECT_DELAY;
        let mut declared_at = Instant::now();
        while !*self.shutdown.borrow() {
            if publisher.as_ref().is_none_or(|p| !p.is_open()) {
                drop(publisher.take());
                publisher = self.connect(&mut broker).await.map(Arc::new);
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
                self.hold_while_blocked(current.link()).await;
                continue;
            }
            if !self.status.conflicts().is_empty()
                && declared_at.elapsed() >= self.config.poll_interval
            {
                self.redeclare(current.link()).await;
                declared_at = Instant::now();
            }
            match self.round(current).await {
                Ok(round) => {
                    if round.connection_failed {
                        // its state is unknown: closed before the next one opens
                        publisher = None;
                        broker.close("publish failed or timed out").await;
                    }
                    if round.claimed < self.config.batch_size as usize {
                        self.idle().await;
                    }
                }
                Err(e) => {
                    log::warn!("relay: database error, retrying: {}", Failure(&e));
                    self.sleep(self.config.poll_interval).await;
                }
            }
        }
        if let Some(p) = publisher
            .as_ref()
            .filter(|p| p.is_open() && !p.link().is_blocked())
        {
            if let Err(e) = self.round(p).await {
                log::warn!("relay: last round at shutdown failed: {}", Failure(&e));
            }
        }
        // the last round is over: no one else holds the publisher
        if let Some(p) = publisher.and_then(Arc::into_inner) {
            p.close(self.amqp.publish_timeout).await;
        }
        broker.close("plan-queue shutting down").await;
        log::info!("relay stopped");
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

    /// One claim → publish → mark round in one database transaction (see
    /// the module's documentation), run on the blocking pool; the publish is
    /// driven there with [`tokio::runtime::Handle::block_on`]. Before the
    /// first claim, adopts the rows that record no exchange.
    async fn round(&self, publisher: &Arc<Publisher>) -> anyhow::Result<RoundResult> {
        let started = Instant::now();
        let (size, lease) = (self.config.batch_size, self.config.lease);
        let held_back = held_back(&self.status.conflicts());
        let exchange = self.amqp.exchange.clone();
        let adopted = self.adopted.clone();
        let publisher = publisher.clone();
        let shutdown = self.shutdown.clone();
        let metrics = self.metrics.clone();
        let timeout = self.amqp.publish_timeout;
        let runtime = tokio::runtime::Handle::current();
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
                conn.transaction(|conn| {
                    let batch = outbox::claim(conn, &exchange, size, lease, &held_back)
                        .context("claiming dispatch rows")?;
                    if batch.is_empty() {
                        return Ok(RoundResult::default());
                    }
                    let claimed_at = started.elapsed();
                    let keep_claim = || {
                        if let Err(e) = outbox::keep_claim(conn) {
                            log::warn!("relay: keeping the claim on rows in flight failed: {e}");
                        }
                    };
                    let publishing =
                        publish(&publisher, &batch, timeout, lease, shutdown.clone(), keep_claim);
                    let results = runtime.block_on(publishing);
                    let confirmed_at = started.elapsed();
                    let connection_failed = results
                        .iter()
                        .any(|r| r.as_ref().is_err_and(PublishFailure::needs_reconnect));
                    for result in &results {
                        metrics.publish(match result {
                            Ok(()) => PublishOutcome::Confirmed,
                            Err(failure) => failure.outcome(),
                        });
                    }
                    log_results(&batch, &results);
                    let ids: Vec<i64> = batch.iter().map(|r| r.id).collect();
                    let settlements: Vec<Settlement> = results.iter().map(settlement).collect();
                    outbox::settle(conn, &ids, &settlements).context("marking dispatch rows")?;
                    log::debug!(
                        "relay: batch of {}: claimed in {claimed_at:?}, confirmed after {confirmed_at:?}, marked after {:?}",
                        batch.len(),
                        started.elapsed()
                    );
                    anyhow::Ok(RoundResult {
                        claimed: batch.len(),
                        connection_failed,
                    })
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
}

/// Publishes `batch` while its transaction holds the claim, calling
/// `keep_claim` every third of `lease` while the confirms are awaited
/// (which may be long while the broker blocks the connection); gives up
/// (every row a connection failure, so released) when the relay stops while
/// the broker blocks.
async fn publish(
    publisher: &Publisher,
    batch: &[ClaimedDispatch],
    timeout: Duration,
    lease: Duration,
    mut shutdown: watch::Receiver<bool>,
    mut keep_claim: impl FnMut(),
) -> Vec<Result<(), PublishFailure>> {
    let stopping_while_blocked = async {
        let _ = shutdown.wait_for(|stop| *stop).await;
        publisher.link().blocked().await;
    };
    let messages: Vec<OutgoingMessage<'_>> = batch.iter().map(outgoing).collect();
    let publishing = publisher.publish_batch(&messages, timeout);
    tokio::pin!(publishing, stopping_while_blocked);
    loop {
        tokio::select! {
            results = &mut publishing => return results,
            _ = &mut stopping_while_blocked => {
                let failure = PublishFailure::Connection(
                    "the relay stopped while the broker blocked publishing".to_owned(),
                );
                return vec![Err(failure); batch.len()];
            }
            _ = tokio::time::sleep(lease / 3) => keep_claim(),
        }
    }
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
