//! What the bench programs share (included with `#[path]`).

use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, Consumer};

/// A connection of its own consuming `queue` without acks, as a runner that
/// keeps up would; with `purge`, the queue is emptied first.
pub async fn consume(url: &str, queue: &str, tag: &str, purge: bool) -> (Connection, Consumer) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect the consumer to RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    if purge {
        channel
            .queue_purge(queue.into(), QueuePurgeOptions::default())
            .await
            .expect("purge the bench queue (is the service running?)");
    }
    channel
        .basic_qos(5000, BasicQosOptions::default())
        .await
        .expect("qos");
    let consumer = channel
        .basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    (connection, consumer)
}
