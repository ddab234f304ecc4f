//! `limit_broker` for `bench/run.sh` and `bench/loop.sh`: what the broker
//! alone (lapin and RabbitMQ, nothing of ours) does per second with messages
//! the size of ours, at several publisher-confirm windows (messages in flight
//! before the next publish waits for a confirm). Two modes:
//!
//! - `publish` (the default, `bench/run.sh`'s rerun rows): confirmed
//!   persistent publishes to a durable quorum queue; a no-ack consumer drains
//!   the queue meanwhile, as the runners would.
//! - `roundtrip` (`bench/loop.sh`'s result ingestion): what ingesting a
//!   result unavoidably costs the broker, and nothing else: a confirmed
//!   persistent publish (`content_type` `application/json`, as
//!   `bench/results.rs` publishes) to a durable `fanout` exchange bound to a
//!   durable quorum queue (the shape of `<exchange>.results`, contract,
//!   section 9), and its delivery to a consumer on a connection of its own
//!   that acknowledges manually, as a minimal consumer would: prefetch
//!   `--prefetch` (500), one `basic.ack` with `multiple` every `--ack-every`
//!   (250) deliveries, or after 5 ms without one. The rate counts a message
//!   once it is confirmed and delivered: messages / time from the first
//!   publish until the last one is delivered. Fixed numbers, not the
//!   service's `RESULTS_PREFETCH`/`RESULTS_BATCH_SIZE`: the yardstick does
//!   not move with our code.
//!
//! Usage: `broker [--mode publish|roundtrip] [--secs T] [--size BYTES]
//! [--windows 1,16,...] [--prefetch N] [--ack-every N]`. The queue (and, for
//! `roundtrip`, the exchange) is `<AMQP_EXCHANGE>.broker-<mode>`, its own,
//! deleted at the end. Prints `result window_<w> <msgs/s>` per window,
//! `result best <msgs/s>` and `result messages <n>` (all windows' messages).

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;

/// How long the roundtrip consumer holds a partial window before acking it.
const ACK_IDLE: Duration = Duration::from_millis(5);

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Publish,
    Roundtrip,
}

#[tokio::main]
async fn main() {
    let mut mode = Mode::Publish;
    let mut secs = 3.0f64;
    let mut size = 450usize;
    let mut windows: Vec<usize> = vec![1, 16, 64, 256, 1024];
    let mut prefetch = 500u16;
    let mut ack_every = 250u64;
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let value = argv.next().expect("flag value");
        match flag.as_str() {
            "--mode" => {
                mode = match value.as_str() {
                    "publish" => Mode::Publish,
                    "roundtrip" => Mode::Roundtrip,
                    other => panic!("--mode publish|roundtrip, not {other}"),
                }
            }
            "--secs" => secs = value.parse().expect("--secs"),
            "--size" => size = value.parse().expect("--size"),
            "--prefetch" => prefetch = value.parse().expect("--prefetch"),
            "--ack-every" => ack_every = value.parse().expect("--ack-every"),
            "--windows" => {
                windows = value
                    .split(',')
                    .map(|w| w.parse().expect("--windows"))
                    .collect()
            }
            other => panic!("unknown flag {other}"),
        }
    }
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let prefix = std::env::var("AMQP_EXCHANGE").unwrap_or_else(|_| "bench".to_owned());
    let name = match mode {
        Mode::Publish => format!("{prefix}.broker-publish"),
        Mode::Roundtrip => format!("{prefix}.broker-roundtrip"),
    };
    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            name.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .expect("declare the bench queue");
    channel
        .queue_purge(name.as_str().into(), QueuePurgeOptions::default())
        .await
        .expect("purge the bench queue");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");

    let payload = vec![b'x'; size];
    let mut best = 0.0f64;
    let mut total = 0u64;
    match mode {
        Mode::Publish => {
            let (_consumer_connection, mut consumer) =
                common::consume(&url, &name, "bench-broker", false).await;
            tokio::spawn(async move { while let Some(Ok(_)) = consumer.next().await {} });
            for window in windows {
                let properties = || {
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type("application/json".into())
                        .with_message_id(uuid::Uuid::new_v4().to_string().into())
                        .with_type("scenario.rerun".into())
                };
                let start = Instant::now();
                let confirmed =
                    publish_for(&channel, "", &name, &payload, window, secs, properties).await;
                let rate = confirmed as f64 / start.elapsed().as_secs_f64();
                println!("result window_{window} {rate:.0}");
                best = best.max(rate);
                total += confirmed;
            }
        }
        Mode::Roundtrip => {
            channel
                .exchange_declare(
                    name.as_str().into(),
                    ExchangeKind::Fanout,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .expect("declare the bench exchange");
            channel
                .queue_bind(
                    name.as_str().into(),
                    name.as_str().into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind the bench queue");
            let consumed = Arc::new(AtomicU64::new(0));
            let _consumer_connection =
                acking_consumer(&url, &name, prefetch, ack_every, consumed.clone()).await;
            for window in windows {
                let properties = || {
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type("application/json".into())
                };
                let before = consumed.load(Ordering::Relaxed);
                let start = Instant::now();
                let confirmed =
                    publish_for(&channel, &name, "", &payload, window, secs, properties).await;
                let wait_until = Instant::now() + Duration::from_secs(60);
                while consumed.load(Ordering::Relaxed) - before < confirmed {
                    assert!(Instant::now() < wait_until, "not all delivered in 60 s");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let rate = confirmed as f64 / start.elapsed().as_secs_f64();
                println!("result window_{window} {rate:.0}");
                best = best.max(rate);
                total += confirmed;
            }
            let _ = channel
                .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    println!("result best {best:.0}");
    println!("result messages {total}");
    let _ = channel
        .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
        .await;
}

/// Publishes `payload` to `exchange` with `routing_key` for `secs`, at most
/// `window` unconfirmed; returns how many were confirmed (all of them, once
/// it returns; a nack panics).
async fn publish_for(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    payload: &[u8],
    window: usize,
    secs: f64,
    properties: impl Fn() -> BasicProperties,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut in_flight = FuturesUnordered::new();
    let mut confirmed = 0u64;
    while Instant::now() < deadline {
        while in_flight.len() < window {
            let confirm = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    payload,
                    properties(),
                )
                .await
                .expect("publish");
            in_flight.push(confirm);
        }
        match in_flight.next().await {
            Some(Ok(Confirmation::Ack(_))) => confirmed += 1,
            other => panic!("not confirmed: {other:?}"),
        }
    }
    while let Some(result) = in_flight.next().await {
        assert!(matches!(result, Ok(Confirmation::Ack(_))), "not confirmed");
        confirmed += 1;
    }
    confirmed
}

/// A consumer of `queue` on a connection of its own with manual acks:
/// prefetch `prefetch`, one `multiple` ack every `ack_every` deliveries or
/// after [`ACK_IDLE`] without one; counts deliveries in `consumed`.
async fn acking_consumer(
    url: &str,
    queue: &str,
    prefetch: u16,
    ack_every: u64,
    consumed: Arc<AtomicU64>,
) -> Connection {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect the consumer to RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .expect("qos");
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "bench-broker-roundtrip".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    tokio::spawn(async move {
        let (mut pending, mut last) = (0u64, 0u64);
        let ack = BasicAckOptions { multiple: true };
        loop {
            let next = if pending == 0 {
                consumer.next().await
            } else {
                match tokio::time::timeout(ACK_IDLE, consumer.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        channel.basic_ack(last, ack).await.expect("ack");
                        pending = 0;
                        continue;
                    }
                }
            };
            let Some(Ok(delivery)) = next else { break };
            last = delivery.delivery_tag;
            pending += 1;
            consumed.fetch_add(1, Ordering::Relaxed);
            if pending >= ack_every {
                channel.basic_ack(last, ack).await.expect("ack");
                pending = 0;
            }
        }
    });
    connection
}
