//! RabbitMQ: the topology of the contract (section 2) and a publisher with
//! publisher confirms.
//!
//! Topology: a durable `direct` exchange `AMQP_EXCHANGE`; for every framework
//! type `T` a durable quorum queue `<exchange>.<T>` bound with routing key `T`,
//! with a delivery limit and a dead-letter exchange `<exchange>.dead-letter`
//! (fanout) whose quorum queue `<exchange>.dead-letter` parks poison messages.
//! Part two (sections 9 and 10): the `fanout` exchange `<exchange>.results`
//! with its quorum queue, and the `topic` exchange `<exchange>.events`
//! ([`declare_results_topology`]).

use crate::config::AmqpConfig;
use crate::db::models::MESSAGE_EXECUTION_FINISHED;
use crate::db::outbox::ClaimedDispatch;
use crate::metrics::PublishOutcome;
use anyhow::Context;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use std::time::Duration;

/// AMQP `delivery_mode` of a persistent message.
pub const PERSISTENT: u8 = 2;

/// Why one message was not confirmed.
#[derive(Debug, Clone, PartialEq)]
pub enum PublishFailure {
    /// The connection or channel failed; the publisher must reconnect.
    Connection(String),
    /// The publish or its confirm did not come within the publish timeout;
    /// the publisher must reconnect (the channel's state is unknown).
    TimedOut(String),
    /// The broker acked but returned the message (`basic.return`, e.g. NO_ROUTE).
    Returned(String),
    /// The broker nacked the message.
    Nacked(String),
}

impl PublishFailure {
    /// True when the connection is in doubt (connection failure, timeout):
    /// reconnect and retry at once. Otherwise the broker answered and the row
    /// is retried after a back-off.
    pub fn needs_reconnect(&self) -> bool {
        matches!(
            self,
            PublishFailure::Connection(_) | PublishFailure::TimedOut(_)
        )
    }

    /// The reason, for logs and the dispatch row's `last_error`.
    pub fn reason(&self) -> &str {
        match self {
            PublishFailure::Connection(r)
            | PublishFailure::TimedOut(r)
            | PublishFailure::Returned(r)
            | PublishFailure::Nacked(r) => r,
        }
    }

    /// The metric outcome of this failure.
    pub fn outcome(&self) -> PublishOutcome {
        match self {
            PublishFailure::Connection(_) => PublishOutcome::Failed,
            PublishFailure::TimedOut(_) => PublishOutcome::TimedOut,
            PublishFailure::Returned(_) => PublishOutcome::Returned,
            PublishFailure::Nacked(_) => PublishOutcome::Nacked,
        }
    }
}

/// A connection with one confirm-mode channel, topology declared.
pub struct Publisher {
    connection: Connection,
    channel: Channel,
    exchange: String,
    events_exchange: String,
}

impl Publisher {
    /// Connects to `config.url` within `PUBLISH_TIMEOUT_MS`, enables
    /// publisher confirms and declares the topology.
    pub async fn connect(config: &AmqpConfig) -> anyhow::Result<Self> {
        let timeout = config.publish_timeout;
        let properties =
            ConnectionProperties::default().with_connection_name("plan-queue relay".into());
        let connection =
            tokio::time::timeout(timeout, Connection::connect(&config.url, properties))
                .await
                .context("connecting to RabbitMQ timed out")?
                .context("cannot connect to RabbitMQ")?;
        let channel = tokio::time::timeout(timeout, async {
            let channel = connection.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            declare_topology(&channel, config).await?;
            declare_results_topology(&channel, config).await?;
            anyhow::Ok(channel)
        })
        .await
        .context("declaring the RabbitMQ topology timed out")??;
        Ok(Publisher {
            connection,
            channel,
            exchange: config.exchange.clone(),
            events_exchange: config.events_name(),
        })
    }

    /// Where a dispatch row goes: an `execution.finished` event to
    /// `<exchange>.events` (contract, section 10), not mandatory (an event
    /// nobody has bound a queue for is dropped, not retried); every other row
    /// to the main exchange, mandatory.
    fn route(&self, row: &ClaimedDispatch) -> (&str, bool) {
        if row.message_type == MESSAGE_EXECUTION_FINISHED {
            (&self.events_exchange, false)
        } else {
            (&self.exchange, true)
        }
    }

    /// True while the connection and channel are open.
    pub fn is_open(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// Publishes `batch` (persistent, mandatory) with pipelined confirms and
    /// waits at most `timeout` for all of them; one result per row, in order.
    /// A message returned as unroutable is a failure even though the broker
    /// also acks it.
    pub async fn publish_batch(
        &self,
        batch: &[ClaimedDispatch],
        timeout: Duration,
    ) -> Vec<Result<(), PublishFailure>> {
        let mut pending = Vec::with_capacity(batch.len());
        for row in batch {
            let (exchange, mandatory) = self.route(row);
            let sent = tokio::time::timeout(
                timeout,
                self.channel.basic_publish(
                    exchange.into(),
                    row.routing_key.as_str().into(),
                    BasicPublishOptions {
                        mandatory,
                        ..Default::default()
                    },
                    row.body.as_bytes(),
                    properties(row),
                ),
            )
            .await;
            match sent {
                Ok(Ok(confirm)) => pending.push(confirm),
                Ok(Err(e)) => {
                    return fail_all(
                        batch.len(),
                        PublishFailure::Connection(format!("publish failed: {e}")),
                    )
                }
                Err(_) => {
                    return fail_all(
                        batch.len(),
                        PublishFailure::TimedOut("publish timed out".to_owned()),
                    )
                }
            }
        }
        let confirms = futures_util::future::join_all(pending);
        match tokio::time::timeout(timeout, confirms).await {
            Err(_) => fail_all(
                batch.len(),
                PublishFailure::TimedOut("publisher confirms timed out".to_owned()),
            ),
            Ok(results) => results.into_iter().map(confirmation_result).collect(),
        }
    }

    /// Closes the connection politely (after in-flight confirms were awaited).
    pub async fn close(&self) {
        let _ = self
            .connection
            .close(200, "plan-queue shutting down".into())
            .await;
    }
}

/// Every row of a batch failed on the connection: rows already sent have no
/// known confirm either, so all are retried (a duplicate is allowed, a loss is not).
fn fail_all(total: usize, failure: PublishFailure) -> Vec<Result<(), PublishFailure>> {
    vec![Err(failure); total]
}

fn confirmation_result(result: lapin::Result<Confirmation>) -> Result<(), PublishFailure> {
    match result {
        Ok(Confirmation::Ack(None)) => Ok(()),
        Ok(Confirmation::Ack(Some(returned))) | Ok(Confirmation::Nack(Some(returned))) => {
            Err(PublishFailure::Returned(format!(
                "returned by the broker: {} {}",
                returned.reply_code, returned.reply_text
            )))
        }
        Ok(Confirmation::Nack(None)) => {
            Err(PublishFailure::Nacked("nacked by the broker".to_owned()))
        }
        Ok(Confirmation::NotRequested) => Err(PublishFailure::Connection(
            "publisher confirms are not enabled on the channel".to_owned(),
        )),
        Err(e) => Err(PublishFailure::Connection(format!("confirm failed: {e}"))),
    }
}

/// The AMQP properties of a dispatch row's message (contract, section 2).
fn properties(row: &ClaimedDispatch) -> BasicProperties {
    let message_id = row.message_id.to_string();
    let properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type("application/json".into())
        .with_message_id(message_id.as_str().into())
        .with_type(row.message_type.as_str().into())
        .with_app_id("plan-queue".into());
    match &row.correlation_id {
        Some(id) => properties.with_correlation_id(id.as_str().into()),
        None => properties,
    }
}

/// Declares the exchange, the per-framework quorum queues with their
/// bindings, and the dead-letter exchange and queue. Idempotent while the
/// arguments stay the same; RabbitMQ refuses (PRECONDITION_FAILED) to
/// re-declare an existing queue with other arguments.
pub async fn declare_topology(channel: &Channel, config: &AmqpConfig) -> anyhow::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let dead_letter = config.dead_letter_name();
    channel
        .exchange_declare(
            config.exchange.as_str().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring exchange {}", config.exchange))?;
    channel
        .exchange_declare(
            dead_letter.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("declaring exchange {dead_letter}"))?;
    declare_queue(channel, &dead_letter, quorum_arguments(None, 0)).await?;
    channel
        .queue_bind(
            dead_letter.as_str().into(),
            dead_letter.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("binding queue {dead_letter}"))?;
    for framework_type in config.framework_types.iter() {
        let queue = config.queue_name(framework_type);
        declare_queue(
            channel,
            &queue,
            quorum_arguments(Some(&dead_letter), config.delivery_limit),
        )
        .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                config.exchange.as_str().into(),
                framework_type.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("binding queue {queue}"))?;
    }
    Ok(())
}

/// Declares part two's exchanges (contract, sections 9 and 10): the durable
/// `fanout` exchange `<exchange>.results` with the durable quorum queue
/// `<exchange>.results` bound to it (dead-letter exchange and delivery limit
/// as the run queues), and the durable `topic` exchange `<exchange>.events`.
/// Idempotent like [`declare_topology`], which must have declared the
/// dead-letter exchange first.
pub async fn declare_results_topology(
    channel: &Channel,
    config: &AmqpConfig,
) -> anyhow::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let (results, events) = (config.results_name(), config.events_name());
    for (name, kind) in [
        (&results, ExchangeKind::Fanout),
        (&events, ExchangeKind::Topic),
    ] {
        channel
            .exchange_declare(name.as_str().into(), kind, durable, FieldTable::default())
            .await
            .with_context(|| format!("declaring exchange {name}"))?;
    }
    let dead_letter = config.dead_letter_name();
    declare_queue(
        channel,
        &results,
        quorum_arguments(Some(&dead_letter), config.delivery_limit),
    )
    .await?;
    channel
        .queue_bind(
            results.as_str().into(),
            results.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("binding queue {results}"))?;
    Ok(())
}

async fn declare_queue(channel: &Channel, name: &str, arguments: FieldTable) -> anyhow::Result<()> {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .with_context(|| format!("declaring queue {name}"))?;
    Ok(())
}

/// `x-queue-type: quorum`, and when `dead_letter` is given, the dead-letter
/// exchange and `x-delivery-limit` (deliveries before a message is dead-lettered).
fn quorum_arguments(dead_letter: Option<&str>, delivery_limit: u32) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    if let Some(exchange) = dead_letter {
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(exchange.into()),
        );
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(delivery_limit)),
        );
    }
    arguments
}
