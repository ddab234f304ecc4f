//! `plan-queue events`: prints the events plan-queue publishes to
//! `<exchange>.events` (contract, section 10), one line each, for a person
//! watching the loop or a script waiting for an execution to finish.
//!
//! It binds a queue of its own (server-named, exclusive, auto-deleted when it
//! stops) with the routing key given, so it sees the events published while
//! it runs, and never those of other consumers' queues.

use crate::amqp::{BrokerConnection, BrokerStatus};
use crate::config::AmqpConfig;
use anyhow::Context;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use std::sync::Arc;
use std::time::Duration;

/// Options of `plan-queue events`.
#[derive(Debug, Clone, clap::Args)]
pub struct EventsOptions {
    /// The routing key to bind with: `#` for every event,
    /// `execution.finished.#` for finished executions, `*.*.APPIUM` for one
    /// framework type.
    #[arg(long, default_value = "#")]
    pub routing_key: String,
    /// Stop after this many events (default: run until SIGINT or SIGTERM).
    #[arg(long)]
    pub count: Option<u64>,
}

/// Prints `<routing key> <body>` per event on standard output until `count`
/// events were printed or the process is asked to stop. Declares
/// `<exchange>.events` as `serve` does (durable topic), so it may start
/// first. Errors: the broker cannot be reached, or refuses the declaration
/// or the binding.
pub async fn run(config: AmqpConfig, options: EventsOptions) -> anyhow::Result<()> {
    let status = Arc::new(BrokerStatus::default());
    let mut broker = BrokerConnection::new(
        &config.url,
        "plan-queue events",
        Duration::from_secs(10),
        status,
    );
    let link = broker.open().await?;
    let channel = link.connection().create_channel().await?;
    let private = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let queue = channel
        .queue_declare("".into(), private, FieldTable::default())
        .await
        .context("cannot declare a queue for the events")?;
    // declared as `serve` declares it (durable topic), so the watch can
    // start first
    let exchange = config.events_name();
    channel
        .exchange_declare(
            exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("cannot declare the exchange {exchange}"))?;
    channel
        .queue_bind(
            queue.name().as_str().into(),
            exchange.as_str().into(),
            options.routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| {
            format!(
                "cannot bind to the exchange {exchange}: is AMQP_EXCHANGE the one `plan-queue serve` uses, and has it started once?"
            )
        })?;
    let mut consumer = channel
        .basic_consume(
            queue.name().as_str().into(),
            "plan-queue events".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    eprintln!(
        "plan-queue events: watching {exchange} with routing key {}",
        options.routing_key
    );
    let mut printed = 0;
    let stop = stop_signal();
    tokio::pin!(stop);
    while options.count.is_none_or(|count| printed < count) {
        let delivery = tokio::select! {
            delivery = consumer.next() => delivery,
            _ = &mut stop => break,
        };
        let Some(delivery) = delivery else { break };
        let delivery = delivery.context("the broker closed the events queue")?;
        println!(
            "{} {}",
            delivery.routing_key,
            String::from_utf8_lossy(&delivery.data)
        );
        delivery.ack(BasicAckOptions::default()).await?;
        printed += 1;
    }
    broker.close("plan-queue events stopped").await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn stop_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
