//! `limit_broker` for `bench/run.sh`: confirmed persistent publishes per
//! second to a durable quorum queue, with messages the size of ours, at
//! several publisher-confirm windows (messages in flight before the next
//! publish waits for a confirm). A no-ack consumer drains the queue meanwhile,
//! as the runners would.
//!
//! Usage: `broker [--secs T] [--size BYTES] [--windows 1,16,...]`.
//! Prints `result window_<w> <msgs/s>` per window and `result best <msgs/s>`.

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;

const QUEUE: &str = "bench-broker-limit";

#[tokio::main]
async fn main() {
    let mut secs = 3.0f64;
    let mut size = 450usize;
    let mut windows: Vec<usize> = vec![1, 16, 64, 256, 1024];
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let value = argv.next().expect("flag value");
        match flag.as_str() {
            "--secs" => secs = value.parse().expect("--secs"),
            "--size" => size = value.parse().expect("--size"),
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
            QUEUE.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .expect("declare the bench queue");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    let (_consumer_connection, mut consumer) =
        common::consume(&url, QUEUE, "bench-broker", false).await;
    tokio::spawn(async move { while let Some(Ok(_)) = consumer.next().await {} });

    let payload = vec![b'x'; size];
    let mut best = 0.0f64;
    for window in windows {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let start = Instant::now();
        let mut in_flight = FuturesUnordered::new();
        let mut confirmed = 0u64;
        while Instant::now() < deadline {
            while in_flight.len() < window {
                let properties = BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_content_type("application/json".into())
                    .with_message_id(uuid::Uuid::new_v4().to_string().into())
                    .with_type("scenario.rerun".into());
                let confirm = channel
                    .basic_publish(
                        "".into(),
                        QUEUE.into(),
                        BasicPublishOptions::default(),
                        &payload,
                        properties,
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
            assert!(matches!(result, Ok(Confirmation::Ack(_))));
            confirmed += 1;
        }
        let rate = confirmed as f64 / start.elapsed().as_secs_f64();
        println!("result window_{window} {rate:.0}");
        best = best.max(rate);
    }
    println!("result best {best:.0}");
    let _ = channel
        .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
        .await;
}
