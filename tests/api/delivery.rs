//! Delivery: accepted reruns reach RabbitMQ even when it was away.

use crate::helpers::{spawn_app_with, DEAD_AMQP_URL};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn reruns_accepted_while_the_broker_is_unreachable_are_published_after_a_restart() {
    let mut app = spawn_app_with(|c| c.amqp.url = DEAD_AMQP_URL.to_owned()).await;
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

    app.restart_with(|c| c.amqp.url = crate::helpers::AMQP_URL.to_owned())
        .await;
    let messages = app.consume("APPIUM", 2, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(
        crate::helpers::received_ids(&messages),
        crate::helpers::message_ids(&body)
    );
    assert_eq!(app.pending_within(Duration::from_secs(5)).await, 0);
}

#[tokio::test]
async fn a_message_runners_keep_rejecting_is_parked_in_the_dead_letter_queue() {
    use lapin::options::{BasicGetOptions, BasicNackOptions};
    let app = spawn_app_with(|c| c.amqp.delivery_limit = 1).await;
    app.wait_ready(&app.address, 200).await; // the queues exist
    let (status, body) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111, "environmentId": 222}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_connection, channel) = crate::helpers::broker_channel().await;
    let queue = app.config.amqp.queue_name("APPIUM");
    // a runner that fails on the message and hands it back, again and again
    let started = std::time::Instant::now();
    let mut rejections = 0;
    let mut parked = Vec::new();
    while started.elapsed() < Duration::from_secs(15) && parked.is_empty() {
        match channel
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
        {
            Ok(Some(message)) => {
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                };
                message.delivery.nack(requeue).await.unwrap();
                rejections += 1;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        parked = crate::helpers::take(
            &app.config.amqp.dead_letter_name(),
            1,
            Duration::from_millis(100),
        )
        .await;
    }
    assert!(
        rejections >= 2,
        "the runner saw the message more than once ({rejections})"
    );
    assert_eq!(parked.len(), 1, "parked, not dropped");
    assert_eq!(
        parked[0].message_id.as_deref(),
        body["data"]["queued"][0]["messageId"].as_str()
    );
    assert!(
        app.drain("APPIUM", Duration::from_millis(300))
            .await
            .is_empty(),
        "and no longer looping"
    );
}

#[tokio::test]
async fn readiness_fails_on_an_old_backlog_while_reruns_are_still_accepted() {
    let app = spawn_app_with(|c| {
        c.amqp.url = DEAD_AMQP_URL.to_owned();
        c.relay.pending_age_threshold = Duration::from_millis(100);
    })
    .await;
    let (status, _) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111}))
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = app
        .client
        .get(format!("{}/health/ready", app.address))
        .send()
        .await
        .unwrap();
    assert!(response.headers().contains_key("retry-after"));
    let (status, body) = crate::helpers::read(response).await;
    assert_eq!(status, 503);
    assert_eq!(body["result"]["code"], 1011);
    assert_eq!(
        body["result"]["message"],
        "Service unavailable: broker, outbox backlog"
    );
    assert_eq!(body["data"]["pending"], 2);
    assert!(body["data"]["oldestPendingMs"].as_i64().unwrap() >= 100);
    let (status, _) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 112}))
        .await;
    assert_eq!(status, 200, "reruns are accepted while not ready");
}
