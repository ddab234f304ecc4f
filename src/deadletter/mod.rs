//! The dead-letter watch (contract, section 17): consumes plan-queue's own
//! quorum queue `<exchange>.dead-letter.watch`, bound to the dead-letter
//! exchange beside the operators' queue `<exchange>.dead-letter` (which keeps
//! every dead-lettered message). A `scenario.run` / `scenario.rerun` message
//! that arrives there ends its pair, if not yet terminal, `ERROR` with reason
//! `DEAD_LETTERED` and `detail` the broker's `x-death` reason
//! (`delivery_limit`, `rejected`, `expired`), finishing its execution like
//! the results path (`results::apply::close_pairs`); every message is
//! acknowledged after its effect committed, anything else at once.
//!
//! While the database is unavailable the message stays unacknowledged and
//! is retried with a back-off; the watch reconnects to the broker with a
//! back-off like the results consumer. Several instances share the queue
//! (competing consumers), and a pair ends only while in flight, so a
//! message delivered twice changes nothing.

use crate::amqp::{declare_dead_letter_watch_each, BrokerConnection, BrokerStatus};
use crate::config::AmqpConfig;
use crate::db::ends::{self, Ending};
use crate::db::models::{MESSAGE_RERUN, MESSAGE_RUN, REASON_DEAD_LETTERED, STATUS_ERROR};
use crate::db::PgPool;
use crate::metrics::Metrics;
use crate::results::apply::{close_pairs, ended, Retries};
use crate::results::event::ExecutionFinished;
use anyhow::Context;
use diesel::prelude::*;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Messages taken at a time.
const PREFETCH: u16 = 20;

/// The dead-letter watch of one service instance.
pub struct DeadLetterWatch {
    amqp: AmqpConfig,
    pool: PgPool,
    relay_wakeup: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
    broker: BrokerConnection,
    /// What the executions it finishes do with their failures (section 18).
    retries: Retries,
}

/// A dead-lettered run message: the pair it names and why it died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadRun {
    pub message_id: Uuid,
    /// `x-death[0].reason`: `delivery_limit`, `rejected`, `expired`, …
    pub reason: String,
}

impl DeadRun {
    /// The run message in `delivery`, or `None` for anything else (a result,
    /// an event, a run message without a readable `messageId`).
    pub fn of(delivery: &Delivery) -> Option<DeadRun> {
        let kind = delivery.properties.kind().as_ref()?.as_str();
        if kind != MESSAGE_RUN && kind != MESSAGE_RERUN {
            return None;
        }
        let message_id = delivery
            .properties
            .message_id()
            .as_ref()
            .and_then(|id| Uuid::parse_str(id.as_str()).ok())
            .or_else(|| body_message_id(&delivery.data))?;
        let reason = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(death_reason)
            .unwrap_or_else(|| "unknown".to_owned());
        Some(DeadRun { message_id, reason })
    }
}

fn body_message_id(body: &[u8]) -> Option<Uuid> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        message_id: Uuid,
    }
    serde_json::from_slice::<Body>(body)
        .ok()
        .map(|b| b.message_id)
}

/// The reason of the latest death in the `x-death` header (RabbitMQ puts
/// the latest first), else `x-first-death-reason`.
pub fn death_reason(headers: &FieldTable) -> Option<String> {
    let text = |value: &AMQPValue| match value {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    };
    let inner = headers.inner();
    let latest = match inner.get("x-death") {
        Some(AMQPValue::FieldArray(deaths)) => deaths.as_slice().first().and_then(|d| match d {
            AMQPValue::FieldTable(death) => death.inner().get("reason").and_then(text),
            _ => None,
        }),
        _ => None,
    };
    latest.or_else(|| inner.get("x-first-death-reason").and_then(text))
}

impl DeadLetterWatch {
    /// `amqp` names the broker and topology; `pool` is the watch's own small
    /// pool; `relay_wakeup` is notified after a commit that wrote events;
    /// the executions it finishes are retried as `retries` says.
    pub fn new(
        amqp: AmqpConfig,
        pool: PgPool,
        relay_wakeup: Arc<Notify>,
        shutdown: watch::Receiver<bool>,
        metrics: Arc<Metrics>,
        retries: Retries,
    ) -> Self {
        let broker = BrokerConnection::new(
            &amqp.url,
            "plan-queue dead-letter watch",
            amqp.publish_timeout,
            Arc::new(BrokerStatus::default()),
        );
        DeadLetterWatch {
            amqp,
            pool,
            relay_wakeup,
            shutdown,
            metrics,
            broker,
            retries,
        }
    }

    /// Runs until shutdown: connect (with back-off), consume, end pairs.
    pub async fn run(mut self) {
        let mut delay = FIRST_RETRY_DELAY;
        while !*self.shutdown.borrow() {
            let mut shutdown = self.shutdown.clone();
            let opened = tokio::select! {
                opened = self.open() => opened,
                _ = shutdown.changed() => break,
            };
            match opened {
                Ok((channel, consumer)) => {
                    delay = FIRST_RETRY_DELAY;
                    if let Err(e) = self.consume(&channel, consumer).await {
                        log::warn!("dead-letter watch: {e:#}; reconnecting");
                    }
                }
                Err(e) => log::warn!("dead-letter watch: RabbitMQ unreachable, will retry: {e:#}"),
            }
            self.broker
                .close("plan-queue dead-letter watch: session ended")
                .await;
            self.sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
        self.broker
            .close("plan-queue dead-letter watch stopping")
            .await;
        log::info!("dead-letter watch stopped");
    }

    async fn open(&mut self) -> anyhow::Result<(lapin::Channel, lapin::Consumer)> {
        let timeout = self.amqp.publish_timeout;
        let link = self.broker.open().await?;
        for conflict in declare_dead_letter_watch_each(&link, &self.amqp, timeout).await? {
            log::warn!(
                "dead-letter watch: RabbitMQ refused {} {} as configured ({}): {}",
                conflict.kind,
                conflict.name,
                conflict.argument,
                conflict.reason
            );
        }
        let queue = self.amqp.dead_letter_watch_name();
        let connection = link.connection();
        let opened = link
            .within(timeout, async {
                let channel = connection.create_channel().await?;
                channel
                    .basic_qos(PREFETCH, BasicQosOptions::default())
                    .await?;
                let consumer = channel
                    .basic_consume(
                        queue.as_str().into(),
                        "plan-queue-dead-letter-watch".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .with_context(|| format!("consuming {queue}"))?;
                anyhow::Ok((channel, consumer))
            })
            .await
            .map_err(|_| anyhow::anyhow!("starting to consume {queue} timed out"))??;
        self.broker.set_ready();
        log::info!("dead-letter watch: consuming {queue}");
        Ok(opened)
    }

    /// Handles deliveries until the channel fails or shutdown.
    async fn consume(
        &mut self,
        channel: &lapin::Channel,
        mut consumer: lapin::Consumer,
    ) -> anyhow::Result<()> {
        loop {
            let next = tokio::select! {
                next = consumer.next() => next,
                _ = self.shutdown.changed() => return Ok(()),
            };
            let delivery = next.context("the consumer was cancelled")??;
            if let Some(dead) = DeadRun::of(&delivery) {
                if !self.end_until_stored(channel, &dead).await {
                    return Ok(());
                }
            }
            delivery
                .ack(BasicAckOptions::default())
                .await
                .context("acknowledging")?;
        }
    }

    /// Ends the pair of `dead`, retrying while the database is unavailable.
    /// False when shutdown came or the channel closed first.
    async fn end_until_stored(&mut self, channel: &lapin::Channel, dead: &DeadRun) -> bool {
        let mut delay = FIRST_RETRY_DELAY;
        loop {
            let (pool, exchange, run, retries) = (
                self.pool.clone(),
                self.amqp.exchange.clone(),
                dead.clone(),
                self.retries,
            );
            let stored = tokio::task::spawn_blocking(move || {
                let mut conn = pool.get()?;
                anyhow::Ok(end_dead_run(&mut conn, &run, &exchange, retries)?)
            })
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
            match stored {
                Ok((ended, finished)) => {
                    if ended > 0 {
                        log::warn!(
                            "dead-letter watch: run message {} was dead-lettered ({}): its pair \
                             ended ERROR, reason DEAD_LETTERED",
                            dead.message_id,
                            dead.reason
                        );
                        self.metrics.pairs_ended(REASON_DEAD_LETTERED, ended);
                    }
                    for event in &finished {
                        self.metrics.execution_finished(event.flaky.len());
                    }
                    if !finished.is_empty() {
                        self.relay_wakeup.notify_one();
                    }
                    return true;
                }
                Err(e) => log::warn!(
                    "dead-letter watch: cannot end the pair of {}, retrying in {delay:?}: {e:#}",
                    dead.message_id
                ),
            }
            self.sleep(delay).await;
            delay = (delay * 2).min(MAX_RETRY_DELAY);
            if *self.shutdown.borrow() || !channel.status().connected() {
                return false;
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

/// Ends the pair of `dead` (if still in flight) and finishes its execution
/// when it was the last, in one transaction; the pairs ended (0 or 1) and
/// the `execution.finished` events written (the execution retried as
/// `retries` says).
pub fn end_dead_run(
    conn: &mut PgConnection,
    dead: &DeadRun,
    exchange: &str,
    retries: Retries,
) -> QueryResult<(usize, Vec<ExecutionFinished>)> {
    conn.transaction(|conn| {
        let pairs = ends::end_dead_lettered(
            conn,
            dead.message_id,
            Ending {
                status: STATUS_ERROR,
                reason: REASON_DEAD_LETTERED,
                detail: Some(&dead.reason),
            },
        )?;
        let finished = close_pairs(conn, pairs.iter().map(ended), exchange, retries)?;
        Ok((pairs.len(), finished))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString};

    #[test]
    fn the_death_reason_is_that_of_the_latest_death() {
        let death = |reason: &str| {
            let mut t = FieldTable::default();
            t.insert(
                "reason".into(),
                AMQPValue::LongString(LongString::from(reason)),
            );
            AMQPValue::FieldTable(t)
        };
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                death("delivery_limit"),
                death("rejected"),
            ])),
        );
        assert_eq!(death_reason(&headers).as_deref(), Some("delivery_limit"));
        let mut first = FieldTable::default();
        first.insert(
            "x-first-death-reason".into(),
            AMQPValue::LongString("expired".into()),
        );
        assert_eq!(death_reason(&first).as_deref(), Some("expired"));
        assert_eq!(death_reason(&FieldTable::default()), None);
    }
}
