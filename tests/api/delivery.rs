//! Delivery: accepted reruns reach RabbitMQ even when it was away.

use crate::helpers::{spawn_app_with, DEAD_AMQP_URL};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn reruns_accepted_while_the_broker_is_unreachable_are_published_after_a_restart() {
    let mut app = spawn_app_with(|c| c.amqp_url = DEAD_AMQP_URL.to_owned()).await;
    let (status, body) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 113}))
        .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.pending().await, 2, "nothing can be published yet");
    assert_eq!(
        app.get("/health/ready").await.0,
        503,
        "readiness reports the missing broker"
    );

    app.restart_with(|c| c.amqp_url = crate::helpers::AMQP_URL.to_owned())
        .await;
    let messages = app.consume("APPIUM", 2, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 2);
    let sent: Vec<&str> = body["data"]["queued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["messageId"].as_str().unwrap())
        .collect();
    for m in &messages {
        assert!(sent.contains(&m.message_id.as_deref().unwrap()));
    }
    assert_eq!(app.pending().await, 0);
}

#[tokio::test]
async fn an_unroutable_message_stays_pending_and_is_retried() {
    let app = spawn_app_with(|_| {}).await;
    // wait for the topology, then take the APPIUM queue away
    app.wait_ready().await;
    let connection = lapin::Connection::connect(crate::helpers::AMQP_URL, Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = app.config.queue_name("APPIUM");
    channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();

    let (status, _) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111, "environmentId": 222}))
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.pending().await,
        1,
        "a returned message is never marked published"
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"plan_queue_publishes_total{outcome="returned"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("plan_queue_dispatch_pending 1"),
        "{metrics}"
    );

    // the queue comes back: the retry delivers it
    plan_queue::amqp::declare_topology(&channel, &app.config)
        .await
        .unwrap();
    let messages = app.consume("APPIUM", 1, Duration::from_secs(15)).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(app.pending().await, 0);
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"plan_queue_publishes_total{outcome="confirmed"} 1"#),
        "{metrics}"
    );
}
