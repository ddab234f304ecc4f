//! The results consumer (contract, section 9): takes runners' results from
//! the quorum queue `<exchange>.results` and applies them to the pairs they
//! name, and announces each execution that turns `FINISHED` (section 10).
//!
//! Manual acknowledgements with a bounded prefetch (`RESULTS_PREFETCH`).
//! Results are applied in batches (`RESULTS_BATCH_SIZE`): every result of a
//! batch is parsed and checked first, and a bad one is rejected without
//! requeue (dead-lettered through `<exchange>.dead-letter`) with a log line
//! saying why; the good ones are applied in one transaction, and after its
//! commit the results naming no pair are rejected and the rest acknowledged
//! with one `basic.ack` (`multiple`). If the transaction fails on the data
//! (not the connection), the batch is applied one result at a time, so one
//! bad result never holds back the others.
//!
//! While the database is unavailable the batch is kept, unacknowledged, and
//! retried with a back-off (not requeued: a requeue would count towards the
//! queue's delivery limit and dead-letter good results); if the broker
//! connection drops meanwhile, the broker delivers the results again. The
//! consumer holds one broker connection at a time ([`BrokerConnection`]: the
//! old one closed before the next, set-up waits not counting time the broker
//! blocks it) and reconnects with a back-off, like the relay. Results
//! are idempotent, so a result applied and then delivered again (a lost ack)
//! changes nothing. Diesel runs on the blocking pool with the consumer's own
//! small pool; commits are synchronous (an acknowledged result is durable).

pub mod apply;
pub mod event;
pub mod message;

use crate::amqp::{declare_results_each, BrokerConnection, BrokerStatus};
use crate::config::{AmqpConfig, ResultsConfig};
use crate::db::{staleness, Db, DbUnavailable, PgPool};
use crate::domain::events::ResultRejected;
use crate::metrics::Metrics;
use anyhow::Context;
use apply::{BatchOutcome, Outcome};
use chrono::Utc;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};
use message::{Rejection, RunnerResult};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
/// The connection name the broker shows for the results consumer.
const CONNECTION_NAME: &str = "plan-queue results consumer";

/// The results consumer of one service instance.
pub struct ResultsConsumer {
    amqp: AmqpConfig,
    config: ResultsConfig,
    /// The consumer's own small pool.
    db: Db,
    relay_wakeup: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    broker: BrokerConnection,
    /// What the executions a batch finishes do with their failures.
    retries: apply::Retries,
}

/// A consuming channel on the consumer's broker connection.
struct Session {
    channel: Channel,
    consumer: Consumer,
}

/// Why a batch could not be applied.
enum Failure {
    /// No connection, or it was lost: retry later, acknowledge nothing.
    Unavailable(String),
    /// The database answered with an error about the data.
    Data(String),
}

/// A result that passed the checks, with its delivery tag.
struct Checked {
    tag: u64,
    result: RunnerResult,
}

impl ResultsConsumer {
    /// `amqp` names the broker and topology, `config` the prefetch and batch;
    /// `pool` is the consumer's own small pool; `relay_wakeup` is notified
    /// after a commit that wrote `execution.finished` events; it stops when
    /// `shutdown` turns true; results are counted in `metrics`; `status`
    /// shows its connection (the node it uses) to readiness and metrics;
    /// the executions it finishes are retried as `retries` says.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        amqp: AmqpConfig,
        config: ResultsConfig,
        pool: PgPool,
        relay_wakeup: Arc<Notify>,
        shutdown: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
        status: Arc<BrokerStatus>,
        retries: apply::Retries,
    ) -> Self {
        let broker =
            BrokerConnection::new(&amqp.url, CONNECTION_NAME, amqp.publish_timeout, status);
        let timeout = pool.connection_timeout();
        ResultsConsumer {
            broker,
            amqp,
            config,
            db: Db::new(pool, timeout),
            relay_wakeup,
            shutdown,
            metrics,
            retries,
        }
    }

    /// Runs until shutdown: connect (with back-off), take a batch, apply,
    /// acknowledge. At shutdown the batch in hand is finished; results not
    /// yet taken stay in the queue.
    pub async fn run(mut self) {
        let mut delay = FIRST_RETRY_DELAY;
        while !*self.shutdown.borrow() {
            let Some(mut session) = self.connect().await else {
                self.sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
                continue;
            };
            delay = FIRST_RETRY_DELAY;
            self.metrics.results_consumer_connected.set(1);
            while let Some(batch) = self.next_batch(&mut session.consumer).await {
                if !self.handle(&session.channel, batch).await {
                    break;
                }
            }
            self.metrics.results_consumer_connected.set(0);
            self.broker
                .close("plan-queue results consumer: session ended")
                .await;
        }
        log::info!("results consumer stopped");
    }

    /// One connection attempt: declare the results topology, set the
    /// prefetch, start consuming, each step within `PUBLISH_TIMEOUT_MS`
    /// (blocked time not counted). `None` (logged, the connection closed)
    /// when the broker is unreachable or shutdown came first.
    async fn connect(&mut self) -> Option<Session> {
        let mut shutdown = self.shutdown.clone();
        let result = tokio::select! {
            result = self.open() => Some(result),
            _ = shutdown.changed() => None,
        };
        let Some(result) = result else {
            self.broker
                .close("plan-queue results consumer stopping")
                .await;
            return None;
        };
        match result {
            Ok(session) => {
                log::info!(
                    "results consumer connected to RabbitMQ, queue {}",
                    self.amqp.results_name()
                );
                Some(session)
            }
            Err(e) => {
                log::warn!("results consumer: RabbitMQ unreachable, will retry: {e:#}");
                self.broker.close("connecting failed").await;
                None
            }
        }
    }

    /// Opens the connection, declares the results exchange, queue and
    /// binding (a refusal is logged and the queue consumed as it is; the
    /// relay reports it in readiness), then consumes.
    async fn open(&mut self) -> anyhow::Result<Session> {
        let timeout = self.amqp.publish_timeout;
        let link = self.broker.open().await?;
        for conflict in declare_results_each(&link, &self.amqp, timeout).await? {
            log::warn!(
                "results consumer: RabbitMQ refused {} {} as configured ({}), consuming it as it is: {}",
                conflict.kind,
                conflict.name,
                conflict.argument,
                conflict.reason
            );
        }
        let queue = self.amqp.results_name();
        let prefetch = self.config.prefetch;
        let connection = link.connection();
        let (channel, consumer) = link
            .within(timeout, async {
                let channel = connection
                    .create_channel()
                    .await
                    .context("opening a channel")?;
                channel
                    .basic_qos(prefetch, BasicQosOptions::default())
                    .await
                    .context("setting the prefetch")?;
                let consumer = channel
                    .basic_consume(
                        queue.as_str().into(),
                        "plan-queue-results".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .with_context(|| format!("consuming {queue}"))?;
                anyhow::Ok((channel, consumer))
            })
            .await
            .map_err(|_| anyhow::anyhow!("starting to consume the results timed out"))??;
        self.broker.set_ready();
        Ok(Session { channel, consumer })
    }

    /// Waits for a delivery, then takes those that follow within
    /// `RESULTS_BATCH_WAIT_MS` of each other, up to `RESULTS_BATCH_SIZE`.
    /// `None` at shutdown or when the channel failed (logged).
    async fn next_batch(&mut self, consumer: &mut Consumer) -> Option<Vec<Delivery>> {
        let first = tokio::select! {
            next = consumer.next() => next,
            _ = self.shutdown.changed() => return None,
        };
        let mut batch = vec![delivery_or_log(first)?];
        while batch.len() < self.config.batch_size {
            match tokio::time::timeout(self.config.batch_wait, consumer.next()).await {
                Ok(next) => match delivery_or_log(next) {
                    Some(delivery) => batch.push(delivery),
                    None => break,
                },
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// Checks, applies and settles one batch. False when the channel failed
    /// or shutdown came while the database was unavailable (the unsettled
    /// results go back to the queue when the connection closes).
    async fn handle(&mut self, channel: &Channel, batch: Vec<Delivery>) -> bool {
        let mut checked = Vec::with_capacity(batch.len());
        for delivery in &batch {
            match RunnerResult::parse(&delivery.data) {
                Ok(result) => checked.push(Checked {
                    tag: delivery.delivery_tag,
                    result,
                }),
                Err(rejection) => {
                    if !self.reject(channel, delivery, &rejection).await {
                        return false;
                    }
                }
            }
        }
        if checked.is_empty() {
            return true;
        }
        let Some(outcome) = self.apply_until_stored(channel, &checked).await else {
            return false;
        };
        self.settle(channel, &batch, &checked, outcome).await
    }

    /// Applies `checked` as one batch, falling back to one result at a time
    /// when the batch fails on its data; while the database is unavailable,
    /// retries with a back-off. `None` when the channel closed or shutdown
    /// came first.
    async fn apply_until_stored(
        &mut self,
        channel: &Channel,
        checked: &[Checked],
    ) -> Option<BatchOutcome> {
        let mut delay = FIRST_RETRY_DELAY;
        loop {
            let failure = match self.apply(checked).await {
                Ok(outcome) => return Some(outcome),
                Err(Failure::Data(reason)) => {
                    log::warn!(
                        "results consumer: batch of {} failed, applying one by one: {reason}",
                        checked.len()
                    );
                    match self.apply_one_by_one(checked).await {
                        Ok(outcome) => return Some(outcome),
                        Err(failure) => failure,
                    }
                }
                Err(failure) => failure,
            };
            let (Failure::Unavailable(reason) | Failure::Data(reason)) = failure;
            log::warn!(
                "results consumer: database unavailable, {} results kept unacknowledged, retrying in {delay:?}: {reason}",
                checked.len()
            );
            self.sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY_DELAY);
            if *self.shutdown.borrow() || !channel.status().connected() {
                return None;
            }
        }
    }

    /// Applies each result in its own transaction; one the database refuses
    /// while it still answers is rejected. Err only when it is unavailable.
    async fn apply_one_by_one(&self, checked: &[Checked]) -> Result<BatchOutcome, Failure> {
        let mut total = BatchOutcome::default();
        for one in checked {
            match self.apply(std::slice::from_ref(one)).await {
                Ok(outcome) => {
                    total.outcomes.extend(outcome.outcomes);
                    total.finished.extend(outcome.finished);
                }
                Err(Failure::Data(reason)) => {
                    self.ping().await?;
                    total
                        .outcomes
                        .push(Outcome::Rejected(Rejection::Refused(reason)));
                }
                Err(unavailable) => return Err(unavailable),
            }
        }
        Ok(total)
    }

    /// One transaction on the blocking pool ([`Db::run`]).
    async fn apply(&self, checked: &[Checked]) -> Result<BatchOutcome, Failure> {
        let results: Vec<RunnerResult> = checked.iter().map(|c| c.result.clone()).collect();
        let exchange = self.amqp.exchange.clone();
        let retries = self.retries;
        log::debug!("results consumer: applying {} results", results.len());
        self.db
            .run(move |conn| {
                apply::apply_batch(conn, &results, &exchange, retries).map_err(|e| classify(&e))
            })
            .await
    }

    /// Ok when the database answers `SELECT 1` on a pooled connection.
    async fn ping(&self) -> Result<(), Failure> {
        self.db
            .run(|conn| crate::db::ping(conn).map_err(|e| Failure::Unavailable(e.to_string())))
            .await
    }

    /// After the commit: rejects the results that named no pair (or were
    /// refused), acknowledges the rest with one multiple ack, counts and
    /// wakes the relay for the events written. False when the channel failed
    /// (the broker delivers the unacknowledged results again; applying them
    /// again changes nothing).
    async fn settle(
        &self,
        channel: &Channel,
        batch: &[Delivery],
        checked: &[Checked],
        outcome: BatchOutcome,
    ) -> bool {
        let now = Utc::now();
        let mut last_acked = None;
        for (one, outcome) in checked.iter().zip(&outcome.outcomes) {
            match outcome {
                Outcome::Applied => {
                    let lag = (now - one.result.at).num_milliseconds() as f64 / 1000.0;
                    self.metrics.result_applied(lag);
                    last_acked = Some(one.tag);
                }
                Outcome::Ignored => {
                    self.metrics.result_ignored();
                    last_acked = Some(one.tag);
                }
                Outcome::Late => {
                    self.metrics.result_ignored();
                    self.metrics.result_late();
                    last_acked = Some(one.tag);
                }
                Outcome::Rejected(rejection) => {
                    let Some(delivery) = batch.iter().find(|d| d.delivery_tag == one.tag) else {
                        continue;
                    };
                    if !self.reject(channel, delivery, rejection).await {
                        return false;
                    }
                }
            }
        }
        for event in &outcome.finished {
            log::info!(
                "results consumer: execution {} finished ({} flaky pairs), event {} queued",
                event.execution_id,
                event.flaky.len(),
                event.event_id
            );
            self.metrics.execution_finished(event.flaky.len());
        }
        if !outcome.finished.is_empty() {
            self.relay_wakeup.notify_one();
        }
        let Some(tag) = last_acked else {
            return true;
        };
        let options = BasicAckOptions { multiple: true };
        match channel.basic_ack(tag, options).await {
            Ok(()) => true,
            Err(e) => {
                log::warn!(
                    "results consumer: acknowledging failed, the broker will deliver again: {e}"
                );
                false
            }
        }
    }

    /// Rejects `delivery` without requeue (dead-lettered), logging why.
    /// False when the channel failed.
    async fn reject(&self, channel: &Channel, delivery: &Delivery, rejection: &Rejection) -> bool {
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .map_or_else(|| "-".to_owned(), |id| id.to_string());
        log::warn!(
            "results consumer: rejected result message_id={message_id} ({} bytes), dead-lettered: {rejection}",
            delivery.data.len()
        );
        self.metrics.result_rejected(rejection.label());
        self.announce_rejection(delivery, rejection).await;
        let options = BasicRejectOptions { requeue: false };
        match channel.basic_reject(delivery.delivery_tag, options).await {
            Ok(()) => true,
            Err(e) => {
                log::warn!(
                    "results consumer: rejecting failed, the broker will deliver again: {e}"
                );
                false
            }
        }
    }

    /// Writes the `result.rejected` event of `delivery` through the outbox
    /// (contract, section 17), so the runner's author sees why; `reason` is
    /// the log line's text. When the database is unavailable the event is
    /// lost (logged): the rejection itself does not wait for it.
    async fn announce_rejection(&self, delivery: &Delivery, rejection: &Rejection) {
        let run_message_id = run_message_id(&delivery.data);
        let event = ResultRejected::new(
            run_message_id.map(|id| id.to_string()),
            delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.to_string()),
            rejection.to_string(),
        );
        let exchange = self.amqp.exchange.clone();
        let written = self
            .db
            .run(move |conn| {
                let body =
                    serde_json::to_string(&event).map_err(|e| Failure::Data(e.to_string()))?;
                crate::db::outbox::insert_rejection_event(
                    conn,
                    event.event_id,
                    run_message_id,
                    &body,
                    &exchange,
                )
                .map_err(|e| classify(&e))
            })
            .await;
        match written {
            Ok(()) => self.relay_wakeup.notify_one(),
            Err(Failure::Unavailable(e) | Failure::Data(e)) => {
                log::warn!("results consumer: the result.rejected event was not written: {e}")
            }
        }
    }

    async fn sleep(&mut self, delay: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.shutdown.changed() => {}
        }
    }
}

/// The `messageId` a result body names, when it can be read.
fn run_message_id(body: &[u8]) -> Option<uuid::Uuid> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    uuid::Uuid::parse_str(value.get("messageId")?.as_str()?).ok()
}

/// The delivery, or `None` (logged) when the stream ended or failed.
fn delivery_or_log(next: Option<lapin::Result<Delivery>>) -> Option<Delivery> {
    match next {
        Some(Ok(delivery)) => Some(delivery),
        Some(Err(e)) => {
            log::warn!("results consumer: channel failed, reconnecting: {e}");
            None
        }
        None => {
            log::warn!("results consumer: consumer cancelled, reconnecting");
            None
        }
    }
}

/// A connection the database changed under (lost, read-only, stale
/// prepared statements: [`staleness`]) is [`Failure::Unavailable`], and the
/// connection layer discards it; any other error is about the data.
fn classify(e: &diesel::result::Error) -> Failure {
    if staleness(e).is_some() {
        Failure::Unavailable(e.to_string())
    } else {
        Failure::Data(e.to_string())
    }
}

/// No connection came in time ([`Db::run`]).
impl From<DbUnavailable> for Failure {
    fn from(e: DbUnavailable) -> Self {
        Failure::Unavailable(format!("no database connection: {}", e.0))
    }
}

/// The database task failed (it panicked).
impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Data(format!("results {e:#}"))
    }
}
