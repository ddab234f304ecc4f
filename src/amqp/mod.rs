//! RabbitMQ: one flow-aware connection per component ([`link`]), the
//! topology of the contract, declared piece by piece ([`topology`]: section 2,
//! and part two's `<exchange>.results` and `<exchange>.events`, sections 9
//! and 10), and a publisher with publisher confirms.

pub mod conflict;
pub mod link;
pub mod topology;

pub use conflict::TopologyConflict;
pub use link::{BrokerConnection, BrokerStatus, Link};
pub use topology::{
    declare_dead_letter_watch_each, declare_each, declare_results_each, declare_topology,
    event_routing_key,
};

use crate::config::AmqpConfig;
use anyhow::Context;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};
use std::time::Duration;
use uuid::Uuid;

/// AMQP `delivery_mode` of a persistent message.
pub const PERSISTENT: u8 = 2;

/// One message to publish, as the transport sees it (the relay makes one
/// of each claimed outbox row).
#[derive(Debug, Clone, Copy)]
pub struct OutgoingMessage<'a> {
    /// The AMQP `message_id` property.
    pub message_id: Uuid,
    pub routing_key: &'a str,
    /// The AMQP `type` property, e.g. `scenario.rerun`.
    pub message_type: &'a str,
    /// The JSON body.
    pub body: &'a str,
    /// The AMQP `correlation_id` property: the request id that queued it.
    pub correlation_id: Option<&'a str>,
    pub destination: Destination,
}

/// Which exchange of the topology a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// `AMQP_EXCHANGE`, mandatory: a message no queue takes is returned.
    Exchange,
    /// `<exchange>.events` (contract, section 10), not mandatory: an event
    /// nobody has bound a queue for is dropped, not retried.
    Events,
}

/// What became of one publish, the `outcome` of
/// `plan_queue_publishes_total` (`crate::metrics`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    /// The broker confirmed (acked) the message and did not return it.
    Confirmed,
    /// The broker returned the message as unroutable (e.g. NO_ROUTE).
    Returned,
    /// The broker nacked the message.
    Nacked,
    /// The publish or its confirm did not come within `PUBLISH_TIMEOUT_MS`.
    TimedOut,
    /// The connection or channel failed.
    Failed,
}

/// Why one message was not confirmed.
#[derive(Debug, Clone, PartialEq)]
pub enum PublishFailure {
    /// The connection or channel failed; the publisher must reconnect.
    Connection(String),
    /// The publish or its confirm did not come within the publish timeout
    /// (time the broker blocked the connection not counted); the publisher
    /// must reconnect (the channel's state is unknown).
    TimedOut(String),
    /// The broker acked but returned the message (`basic.return`, e.g. NO_ROUTE).
    Returned(String),
    /// The broker nacked the message.
    Nacked(String),
}

impl PublishFailure {
    /// True when the connection is in doubt (connection failure, timeout):
    /// reconnect and retry at once. Otherwise the broker answered and the
    /// message is retried after a back-off.
    pub fn needs_reconnect(&self) -> bool {
        matches!(
            self,
            PublishFailure::Connection(_) | PublishFailure::TimedOut(_)
        )
    }

    /// The reason, for logs and the caller's records.
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

/// A confirm-mode channel on a [`Link`].
pub struct Publisher {
    link: Link,
    channel: Channel,
    exchange: String,
    events_exchange: String,
}

impl Publisher {
    /// Opens a channel on `link` and enables publisher confirms, within
    /// `PUBLISH_TIMEOUT_MS` (blocked time not counted). Declares nothing:
    /// declare the topology first ([`declare_each`]).
    pub async fn open(link: Link, config: &AmqpConfig) -> anyhow::Result<Self> {
        let connection = link.connection();
        let channel = link
            .within(config.publish_timeout, async {
                let channel = connection.create_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                anyhow::Ok(channel)
            })
            .await
            .map_err(|_| anyhow::anyhow!("opening a publisher channel timed out"))?
            .context("opening a publisher channel")?;
        Ok(Publisher {
            link,
            channel,
            exchange: config.exchange.clone(),
            events_exchange: config.events_name(),
        })
    }

    /// The connection the channel lives on.
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// The exchange of `destination` and whether a publish there is
    /// mandatory ([`Destination`]).
    fn route(&self, destination: Destination) -> (&str, bool) {
        match destination {
            Destination::Events => (&self.events_exchange, false),
            Destination::Exchange => (&self.exchange, true),
        }
    }

    /// Closes the channel and waits (at most `PUBLISH_TIMEOUT_MS`) for the
    /// broker to confirm, before the connection is closed: a channel merely
    /// dropped closes concurrently with its connection, and lapin logs that
    /// race at ERROR (`invalid channel state: Closing`) on every clean stop.
    pub async fn close(self, timeout: std::time::Duration) {
        if !self.is_open() {
            return;
        }
        match tokio::time::timeout(timeout, self.channel.close(200, "OK".into())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::debug!("closing the publisher channel: {e}"),
            Err(_) => log::debug!("the broker did not confirm closing the publisher channel"),
        }
    }

    /// True while the connection and channel are open.
    pub fn is_open(&self) -> bool {
        self.link.is_open() && self.channel.status().connected()
    }

    /// Publishes `batch` (persistent; mandatory but for events, [`Destination`])
    /// with pipelined confirms and
    /// waits at most `timeout` for all of them, not counting the time the
    /// broker blocks the connection; one result per message, in order.
    /// A message returned as unroutable is a failure even though the broker
    /// also acks it.
    pub async fn publish_batch(
        &self,
        batch: &[OutgoingMessage<'_>],
        timeout: Duration,
    ) -> Vec<Result<(), PublishFailure>> {
        let mut pending = Vec::with_capacity(batch.len());
        for message in batch {
            let (exchange, mandatory) = self.route(message.destination);
            let sent = self
                .link
                .within(
                    timeout,
                    self.channel.basic_publish(
                        exchange.into(),
                        message.routing_key.into(),
                        BasicPublishOptions {
                            mandatory,
                            ..Default::default()
                        },
                        message.body.as_bytes(),
                        properties(message),
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
        match self.link.within(timeout, confirms).await {
            Err(_) => fail_all(
                batch.len(),
                PublishFailure::TimedOut("publisher confirms timed out".to_owned()),
            ),
            Ok(results) => results.into_iter().map(confirmation_result).collect(),
        }
    }
}

/// Every message of a batch failed on the connection: those already sent have no
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

/// The AMQP properties of a message (contract, section 2).
fn properties(message: &OutgoingMessage<'_>) -> BasicProperties {
    let message_id = message.message_id.to_string();
    let properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type("application/json".into())
        .with_message_id(message_id.as_str().into())
        .with_type(message.message_type.into())
        .with_app_id("plan-queue".into());
    match message.correlation_id {
        Some(id) => properties.with_correlation_id(id.into()),
        None => properties,
    }
}
