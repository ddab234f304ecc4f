//! The topology of the contract, declared piece by piece.
//!
//! Section 2: a durable `direct` exchange `AMQP_EXCHANGE`; for every
//! framework type `T` a durable quorum queue `<exchange>.<T>` bound with
//! routing key `T`, with a delivery limit and a dead-letter exchange
//! `<exchange>.dead-letter` (fanout) whose quorum queue
//! `<exchange>.dead-letter` parks poison messages. Sections 9 and 10: the
//! durable `fanout` exchange `<exchange>.results` with the durable quorum
//! queue `<exchange>.results` bound to it (dead-letter exchange and delivery
//! limit as the run queues), and the durable `topic` exchange
//! `<exchange>.events` (routing keys `execution.finished.<T>`).
//!
//! RabbitMQ refuses to re-declare an existing exchange or queue with other
//! arguments (`PRECONDITION_FAILED - inequivalent arg …`) and closes the
//! channel. That is a configuration conflict in one part of the topology,
//! not an outage: [`declare_each`] declares every part on its own (a fresh
//! channel after each refusal) and reports each refusal as a
//! [`TopologyConflict`] naming the routing keys it holds back, so the rest
//! of the topology works.
//!
//! One exception: `x-quorum-initial-group-size` (`QUORUM_GROUP_SIZE`) only
//! matters when a queue is created, yet RabbitMQ refuses a re-declaration
//! with another value. A queue refused for that alone is declared again
//! with the value it has, so it keeps its replicas and is not a conflict.

use super::conflict::TopologyConflict;
use super::link::Link;
use crate::config::AmqpConfig;
use anyhow::Context;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::protocol::{AMQPError, AMQPErrorKind};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ErrorKind, ExchangeKind};
use std::time::Duration;

/// The routing key of a framework type's `execution.finished` events on
/// `<exchange>.events`: `execution.finished.<T>` (contract, section 10).
pub fn event_routing_key(framework_type: &str) -> String {
    format!("execution.finished.{framework_type}")
}

/// One declaration of the topology.
enum Part {
    Exchange {
        name: String,
        kind: ExchangeKind,
    },
    Queue {
        name: String,
        arguments: FieldTable,
    },
    Bind {
        queue: String,
        exchange: String,
        routing_key: String,
    },
}

impl Part {
    fn kind(&self) -> &'static str {
        match self {
            Part::Exchange { .. } => "exchange",
            Part::Queue { .. } => "queue",
            Part::Bind { .. } => "binding",
        }
    }

    fn name(&self) -> &str {
        match self {
            Part::Exchange { name, .. } | Part::Queue { name, .. } => name,
            Part::Bind { queue, .. } => queue,
        }
    }

    async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        match self {
            Part::Exchange { name, kind } => {
                let durable = ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                };
                channel
                    .exchange_declare(
                        name.as_str().into(),
                        kind.clone(),
                        durable,
                        FieldTable::default(),
                    )
                    .await
            }
            Part::Queue { name, arguments } => {
                let durable = QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                };
                channel
                    .queue_declare(name.as_str().into(), durable, arguments.clone())
                    .await
                    .map(drop)
            }
            Part::Bind {
                queue,
                exchange,
                routing_key,
            } => {
                channel
                    .queue_bind(
                        queue.as_str().into(),
                        exchange.as_str().into(),
                        routing_key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
            }
        }
    }
}

/// Every declaration in order, each with the routing keys it holds back when
/// the broker refuses it: the exchange holds back all of them, a framework
/// type's queue or binding its own key, `<exchange>.events` the
/// `execution.finished.<T>` keys of every type, the dead-letter and results
/// parts none.
fn parts(config: &AmqpConfig) -> Vec<(Part, Vec<String>)> {
    let dead_letter = config.dead_letter_name();
    let all: Vec<String> = config
        .framework_types
        .iter()
        .map(|t| t.to_string())
        .collect();
    let mut parts = vec![
        (
            Part::Exchange {
                name: config.exchange.clone(),
                kind: ExchangeKind::Direct,
            },
            all,
        ),
        (
            Part::Exchange {
                name: dead_letter.clone(),
                kind: ExchangeKind::Fanout,
            },
            Vec::new(),
        ),
        (
            Part::Queue {
                name: dead_letter.clone(),
                arguments: quorum_arguments(config, None),
            },
            Vec::new(),
        ),
        (
            Part::Bind {
                queue: dead_letter.clone(),
                exchange: dead_letter.clone(),
                routing_key: String::new(),
            },
            Vec::new(),
        ),
    ];
    parts.extend(dead_letter_watch_parts(config).into_iter().skip(1));
    for framework_type in config.framework_types.iter() {
        let queue = config.queue_name(framework_type);
        let key = vec![framework_type.to_string()];
        parts.push((
            Part::Queue {
                name: queue.clone(),
                arguments: quorum_arguments(config, Some(&dead_letter)),
            },
            key.clone(),
        ));
        parts.push((
            Part::Bind {
                queue,
                exchange: config.exchange.clone(),
                routing_key: framework_type.to_string(),
            },
            key,
        ));
    }
    parts.extend(results_parts(config));
    let events: Vec<String> = config
        .framework_types
        .iter()
        .map(|t| event_routing_key(t))
        .collect();
    parts.push((
        Part::Exchange {
            name: config.events_name(),
            kind: ExchangeKind::Topic,
        },
        events,
    ));
    parts
}

/// The results exchange, its queue and their binding (contract, section 9).
/// They hold back no dispatch rows: the service only consumes from them.
fn results_parts(config: &AmqpConfig) -> Vec<(Part, Vec<String>)> {
    let results = config.results_name();
    vec![
        (
            Part::Exchange {
                name: results.clone(),
                kind: ExchangeKind::Fanout,
            },
            Vec::new(),
        ),
        (
            Part::Queue {
                name: results.clone(),
                arguments: quorum_arguments(config, Some(&config.dead_letter_name())),
            },
            Vec::new(),
        ),
        (
            Part::Bind {
                queue: results.clone(),
                exchange: results,
                routing_key: String::new(),
            },
            Vec::new(),
        ),
    ]
}

/// plan-queue's own queue on the dead-letter exchange (contract, section
/// 17): the exchange, the durable quorum queue `<exchange>.dead-letter.watch`
/// (without a dead-letter exchange of its own) and its binding. They hold
/// back no dispatch rows.
fn dead_letter_watch_parts(config: &AmqpConfig) -> Vec<(Part, Vec<String>)> {
    let dead_letter = config.dead_letter_name();
    let watch = config.dead_letter_watch_name();
    vec![
        (
            Part::Exchange {
                name: dead_letter.clone(),
                kind: ExchangeKind::Fanout,
            },
            Vec::new(),
        ),
        (
            Part::Queue {
                name: watch.clone(),
                arguments: quorum_arguments(config, None),
            },
            Vec::new(),
        ),
        (
            Part::Bind {
                queue: watch,
                exchange: dead_letter,
                routing_key: String::new(),
            },
            Vec::new(),
        ),
    ]
}

/// [`declare_each`] for the dead-letter exchange and the watch queue with
/// its binding only (what the dead-letter watch needs before it consumes).
pub async fn declare_dead_letter_watch_each(
    link: &Link,
    config: &AmqpConfig,
    timeout: Duration,
) -> anyhow::Result<Vec<TopologyConflict>> {
    declare_parts(link, dead_letter_watch_parts(config), timeout).await
}

/// Declares the whole topology on `channel`, failing on the first refusal.
/// Idempotent while the arguments stay the same.
pub async fn declare_topology(channel: &Channel, config: &AmqpConfig) -> anyhow::Result<()> {
    for (part, _) in parts(config) {
        part.declare(channel)
            .await
            .with_context(|| format!("declaring {} {}", part.kind(), part.name()))?;
    }
    Ok(())
}

/// Declares every part of the topology on its own channel of `link`
/// (a new channel after each refusal, since the broker closes it), each
/// within `timeout` (blocked time not counted), and returns the refusals;
/// a binding is skipped when its queue was refused. A refused
/// `<exchange>.events` holds back the `execution.finished.<T>` rows.
/// Errors: the connection failed or a declaration timed out (an outage,
/// not a conflict).
pub async fn declare_each(
    link: &Link,
    config: &AmqpConfig,
    timeout: Duration,
) -> anyhow::Result<Vec<TopologyConflict>> {
    declare_parts(link, parts(config), timeout).await
}

/// [`declare_each`] for the results exchange, queue and binding only (what
/// the results consumer needs before it consumes); the refusals returned
/// hold back no rows.
pub async fn declare_results_each(
    link: &Link,
    config: &AmqpConfig,
    timeout: Duration,
) -> anyhow::Result<Vec<TopologyConflict>> {
    declare_parts(link, results_parts(config), timeout).await
}

async fn declare_parts(
    link: &Link,
    parts: Vec<(Part, Vec<String>)>,
    timeout: Duration,
) -> anyhow::Result<Vec<TopologyConflict>> {
    let mut conflicts: Vec<TopologyConflict> = Vec::new();
    let mut channel: Option<Channel> = None;
    for (mut part, held_back) in parts {
        if matches!(part, Part::Bind { .. }) && conflicts.iter().any(|c| c.name == part.name()) {
            continue;
        }
        let mut kept_group_size = false;
        loop {
            let open = match channel.take().filter(|c| c.status().connected()) {
                Some(open) => open,
                None => link
                    .within(timeout, link.connection().create_channel())
                    .await
                    .map_err(|_| anyhow::anyhow!("opening a channel timed out"))?
                    .context("opening a channel to declare the topology")?,
            };
            let declared = link
                .within(timeout, part.declare(&open))
                .await
                .map_err(|_| {
                    anyhow::anyhow!("declaring {} {} timed out", part.kind(), part.name())
                })?;
            let e = match declared {
                Ok(()) => {
                    channel = Some(open);
                    break;
                }
                Err(e) => e,
            };
            let refusal = channel_error(&e)
                .with_context(|| format!("declaring {} {}: {e}", part.kind(), part.name()))?;
            match with_existing_group_size(&part, refusal) {
                Some(existing) if !kept_group_size => {
                    log::info!(
                        "queue {} exists with another {GROUP_SIZE}; it keeps its size \
                         (change it with rabbitmq-queues grow / add_member)",
                        part.name()
                    );
                    part = existing;
                    kept_group_size = true;
                }
                _ => {
                    conflicts.push(conflict(&part, refusal, held_back));
                    break;
                }
            }
        }
    }
    Ok(conflicts)
}

/// The queue argument of the initial replica count.
const GROUP_SIZE: &str = "x-quorum-initial-group-size";

/// When the broker refused queue `part` only because the queue exists with
/// another `x-quorum-initial-group-size` (`… received '3' but current is
/// '1'`, or `current is none` for a queue declared without it), the same
/// declaration with the existing value, so every other argument is still
/// checked: the group size only applies when a queue is created, so an
/// existing queue keeps its replicas (RabbitMQ 3.10 checks the argument on
/// re-declaration all the same). `None` for any other refusal.
fn with_existing_group_size(part: &Part, refusal: &AMQPError) -> Option<Part> {
    let Part::Queue { name, arguments } = part else {
        return None;
    };
    let reason = refusal.get_message().as_str();
    if !reason.contains(&format!("inequivalent arg '{GROUP_SIZE}'")) {
        return None;
    }
    let current = reason.rsplit_once("but current is ")?.1.trim();
    let mut kept = FieldTable::default();
    for (key, value) in arguments.inner() {
        if key.as_str() != GROUP_SIZE {
            kept.insert(key.clone(), value.clone());
        }
    }
    if current != "none" {
        let size: i64 = current.trim_matches('\'').parse().ok()?;
        kept.insert(GROUP_SIZE.into(), AMQPValue::LongLongInt(size));
    }
    Some(Part::Queue {
        name: name.clone(),
        arguments: kept,
    })
}

/// The broker's channel-level refusal in `error`, or an error when the
/// connection itself failed.
fn channel_error(error: &lapin::Error) -> anyhow::Result<&AMQPError> {
    match error.kind() {
        ErrorKind::ProtocolError(amqp) if matches!(amqp.kind(), AMQPErrorKind::Soft(_)) => Ok(amqp),
        _ => anyhow::bail!("the broker connection failed"),
    }
}

fn conflict(part: &Part, refusal: &AMQPError, held_back: Vec<String>) -> TopologyConflict {
    let reason = refusal.get_message().to_string();
    let argument = reason
        .split_once("inequivalent arg '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(argument, _)| argument.to_owned())
        .unwrap_or_else(|| reason.split(" - ").next().unwrap_or(&reason).to_owned());
    TopologyConflict {
        kind: part.kind().to_owned(),
        name: part.name().to_owned(),
        argument,
        reason,
        held_back,
    }
}

/// `x-queue-type: quorum` with `x-quorum-initial-group-size`
/// (`QUORUM_GROUP_SIZE`: replicas when the queue is created; RabbitMQ caps
/// it at the cluster's size), and when `dead_letter` is given, the
/// dead-letter exchange and `x-delivery-limit` (`DELIVERY_LIMIT`: deliveries
/// before a message is dead-lettered).
fn quorum_arguments(config: &AmqpConfig, dead_letter: Option<&str>) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments.insert(
        GROUP_SIZE.into(),
        AMQPValue::LongLongInt(i64::from(config.quorum_group_size)),
    );
    if let Some(exchange) = dead_letter {
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(exchange.into()),
        );
        arguments.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(config.delivery_limit)),
        );
    }
    arguments
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::protocol::AMQPSoftError;

    fn queue_with_group_size(size: Option<i64>) -> Part {
        let mut arguments = FieldTable::default();
        arguments.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(5));
        if let Some(size) = size {
            arguments.insert(GROUP_SIZE.into(), AMQPValue::LongLongInt(size));
        }
        Part::Queue {
            name: "x.JUNIT".to_owned(),
            arguments,
        }
    }

    fn arguments(part: &Part) -> Vec<(String, AMQPValue)> {
        let Part::Queue { arguments, .. } = part else {
            panic!("not a queue");
        };
        let mut list: Vec<_> = arguments
            .inner()
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    #[test]
    fn a_queue_refused_only_for_its_group_size_is_declared_again_with_the_size_it_has() {
        let refusal = |current: &str| {
            AMQPError::new(
                AMQPSoftError::PRECONDITIONFAILED.into(),
                format!("PRECONDITION_FAILED - inequivalent arg 'x-quorum-initial-group-size' for queue 'x.JUNIT' in vhost '/': received '3' but current is {current}").into(),
            )
        };
        let part = queue_with_group_size(Some(3));
        let kept = with_existing_group_size(&part, &refusal("'1'")).unwrap();
        assert_eq!(arguments(&kept), arguments(&queue_with_group_size(Some(1))));
        let kept = with_existing_group_size(&part, &refusal("none")).unwrap();
        assert_eq!(arguments(&kept), arguments(&queue_with_group_size(None)));
        let other = AMQPError::new(
            AMQPSoftError::PRECONDITIONFAILED.into(),
            "PRECONDITION_FAILED - inequivalent arg 'x-delivery-limit' for queue 'x.JUNIT' in vhost '/': received '5' but current is '2'".into(),
        );
        assert!(with_existing_group_size(&part, &other).is_none());
    }

    #[test]
    fn a_refusal_names_the_inequivalent_argument_or_else_the_error() {
        let part = Part::Queue {
            name: "x.JUNIT".to_owned(),
            arguments: FieldTable::default(),
        };
        let refusal = AMQPError::new(
            AMQPSoftError::PRECONDITIONFAILED.into(),
            "PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue 'x.JUNIT' in vhost '/'".into(),
        );
        let found = conflict(&part, &refusal, vec!["JUNIT".to_owned()]);
        assert_eq!(
            (found.kind.as_str(), found.name.as_str()),
            ("queue", "x.JUNIT")
        );
        assert_eq!(found.argument, "x-dead-letter-exchange");
        assert_eq!(found.held_back, ["JUNIT"]);
        let refusal = AMQPError::new(
            AMQPSoftError::ACCESSREFUSED.into(),
            "ACCESS_REFUSED - access to queue 'x.JUNIT' refused".into(),
        );
        assert_eq!(conflict(&part, &refusal, vec![]).argument, "ACCESS_REFUSED");
    }
}
