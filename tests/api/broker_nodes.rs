//! Several broker addresses in `AMQP_URL` (issue 12, part 1): the service
//! connects to the first node that answers, moves to the next when its
//! node goes away, and readiness and metrics name the node each connection
//! uses.

use crate::broker::PrivateBroker;
use crate::helpers::{
    broker_channel, message_ids, pair_body, received_ids, spawn_app_with, take_from, TestApp,
    AMQP_URL, DEAD_AMQP_URL, DEMO_PAIRS,
};
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;
use std::collections::HashSet;
use std::time::{Duration, Instant};

const SHARED_NODE: &str = "127.0.0.1:5672";

/// Waits up to 30 s until readiness says the relay (`brokerNode`) and the
/// results consumer (`resultsBrokerNode`) are both on `node`, and answers 200.
async fn wait_on_node(app: &TestApp, node: &str) {
    let started = Instant::now();
    loop {
        let (status, text) = app.get("/health/ready").await;
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{text}"));
        let data = &body["data"];
        if status == 200 && data["brokerNode"] == node && data["resultsBrokerNode"] == node {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "readiness never named {node} for both connections: {status} {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reruns `count` demo pairs; returns the accepted `messageId`s.
async fn rerun_pairs(app: &TestApp, count: usize) -> HashSet<String> {
    let mut accepted = HashSet::new();
    for i in 0..count {
        let (s, e) = DEMO_PAIRS[i % DEMO_PAIRS.len()];
        let (status, body) = app.rerun(&pair_body(s, e)).await;
        assert_eq!(status, 200, "{body}");
        accepted.extend(message_ids(&body));
    }
    accepted
}

/// Takes the APPIUM messages of `app` from the broker at `url` until all
/// of `expected` arrived (or 30 s passed); returns the `messageId`s taken.
async fn delivered(app: &TestApp, url: &str, expected: &HashSet<String>) -> HashSet<String> {
    let queue = app.config.amqp.queue_name("APPIUM");
    let mut got = HashSet::new();
    let started = Instant::now();
    while !expected.is_subset(&got) && started.elapsed() < Duration::from_secs(30) {
        let taken = take_from(url, &queue, usize::MAX, Duration::from_secs(2)).await;
        got.extend(received_ids(&taken));
    }
    got
}

#[tokio::test]
async fn with_a_dead_first_address_reruns_are_delivered_through_the_second_and_readiness_names_it()
{
    let app = spawn_app_with(|c| c.amqp.url = format!("{DEAD_AMQP_URL}, {AMQP_URL}")).await;
    wait_on_node(&app, SHARED_NODE).await;

    let accepted = rerun_pairs(&app, 3).await;
    assert_eq!(
        delivered(&app, AMQP_URL, &accepted).await,
        accepted,
        "every rerun arrived"
    );
    let metrics = app.metrics().await;
    for connection in ["relay", "results"] {
        let line = format!(
            "plan_queue_broker_node{{connection=\"{connection}\",node=\"{SHARED_NODE}\"}} 1"
        );
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line} in\n{metrics}"
        );
    }
    let (_, readiness) = app.get("/health/ready").await;
    assert!(
        !readiness.contains("guest:guest") && !metrics.contains("guest:guest"),
        "credentials shown: {readiness}"
    );
}

#[tokio::test]
async fn queues_declared_with_another_group_size_or_none_are_used_without_a_conflict() {
    let mut app = spawn_app_with(|c| c.amqp.quorum_group_size = 1).await;
    app.wait_ready(&app.address, 200).await;
    // APPIUM's queue as a release before QUORUM_GROUP_SIZE declared it
    let queue = app.config.amqp.queue_name("APPIUM");
    let (_connection, channel) = broker_channel().await;
    channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    let mut arguments = FieldTable::default();
    arguments.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    arguments.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(app.config.amqp.dead_letter_name().into()),
    );
    arguments.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(i64::from(app.config.amqp.delivery_limit)),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.as_str().into(), durable, arguments)
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            app.config.amqp.exchange.as_str().into(),
            "APPIUM".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    app.restart_with(|c| c.amqp.quorum_group_size = 3).await;
    wait_on_node(&app, SHARED_NODE).await;
    let (_, text) = app.get("/health/ready").await;
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body["data"]["topologyConflicts"],
        serde_json::json!([]),
        "{text}"
    );
    let accepted = rerun_pairs(&app, 2).await;
    assert_eq!(delivered(&app, AMQP_URL, &accepted).await, accepted);
}

#[tokio::test]
async fn when_its_broker_stops_the_service_moves_to_the_next_address_and_delivers_there() {
    let Some(broker) = tokio::task::spawn_blocking(PrivateBroker::start)
        .await
        .unwrap()
    else {
        return;
    };
    let private_url = broker.amqp_url();
    let private_node = format!("127.0.0.1:{}", broker.port);
    let app = spawn_app_with(|c| c.amqp.url = format!("{private_url},{AMQP_URL}")).await;
    wait_on_node(&app, &private_node).await;
    let broker = std::sync::Arc::new(broker);
    let node = broker.clone();
    let queues = tokio::task::spawn_blocking(move || node.queue_arguments())
        .await
        .unwrap();
    let exchange = &app.config.amqp.exchange;
    for queue in [
        format!("{exchange}.APPIUM"),
        format!("{exchange}.results"),
        format!("{exchange}.dead-letter"),
    ] {
        let line = queues
            .lines()
            .find(|l| l.starts_with(&format!("{queue}\t")))
            .unwrap_or_else(|| panic!("no queue {queue} in\n{queues}"));
        assert!(
            line.contains("x-quorum-initial-group-size") && line.contains('3'),
            "{line}"
        );
    }
    let before = rerun_pairs(&app, 2).await;
    assert_eq!(
        delivered(&app, &private_url, &before).await,
        before,
        "delivered through the first node"
    );

    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
    let after = rerun_pairs(&app, 3).await;
    wait_on_node(&app, SHARED_NODE).await;
    assert_eq!(
        delivered(&app, AMQP_URL, &after).await,
        after,
        "delivered through the second node once the first stopped"
    );
}
