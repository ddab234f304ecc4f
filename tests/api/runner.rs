//! `plan-queue runner` (contract, section 12), run as a process against the
//! test's own exchange: it reports RUNNING and the command's verdict of each
//! pair to `<exchange>.results`, acknowledges after the confirm, and skips a
//! message id it has already reported.

use crate::helpers::{broker_channel, spawn_app, take, Received, TestApp, AMQP_URL};
use lapin::options::{
    BasicPublishOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use serde_json::{json, Value};
use std::time::Duration;

/// A queue of the test's bound to `<exchange>.results`, removed on drop.
struct ResultsTap {
    exchange: String,
    queue: String,
}

impl ResultsTap {
    async fn bind(app: &TestApp) -> Self {
        let exchange = format!("{}.results", app.config.amqp.exchange);
        let queue = format!("{}.results-tap", app.config.amqp.exchange);
        let (_connection, channel) = broker_channel().await;
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        ResultsTap { exchange, queue }
    }
}

impl Drop for ResultsTap {
    fn drop(&mut self) {
        let (exchange, queue) = (self.exchange.clone(), self.queue.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (_connection, channel) = broker_channel().await;
                let _ = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
                let _ = channel
                    .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            });
        })
        .join();
    }
}

/// Starts `plan-queue runner` for APPIUM on the app's exchange.
pub(crate) fn start_runner(app: &TestApp, command: &str) -> std::process::Child {
    let c = &app.config;
    std::process::Command::new(env!("CARGO_BIN_EXE_plan-queue"))
        .args(["runner", "--framework-type", "appium", "--command", command])
        .env("AMQP_URL", AMQP_URL)
        .env("AMQP_EXCHANGE", &c.amqp.exchange)
        .env("FRAMEWORK_TYPES", c.amqp.framework_types.join(","))
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start plan-queue runner")
}

fn results_of(received: &[Received], message_id: &str) -> Vec<String> {
    received
        .iter()
        .filter(|r| r.body["messageId"] == message_id)
        .map(|r| r.body["status"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test]
async fn the_runner_reports_running_then_the_commands_verdict_and_acknowledges() {
    let app = spawn_app().await;
    let tap = ResultsTap::bind(&app).await;
    let (status, body) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111}))
        .await;
    assert_eq!(status, 200, "{body}");
    let queued: Vec<Value> = body["data"]["queued"].as_array().unwrap().clone();
    assert_eq!(queued.len(), 2, "111 ran on 222 and 223");
    let mut runner = start_runner(
        &app,
        r#"echo "ran $PQ_SCENARIO_ID on $PQ_ENVIRONMENT_NAME"; test "$PQ_ENVIRONMENT_ID" = 222"#,
    );
    let received = take(&tap.queue, 4, Duration::from_secs(30)).await;
    let _ = runner.kill();
    let _ = runner.wait();
    assert_eq!(received.len(), 4, "{received:?}");
    for result in &received {
        assert_eq!(result.kind.as_deref(), Some("scenario.result"));
        assert_eq!(result.delivery_mode, Some(2));
        assert_eq!(result.content_type.as_deref(), Some("application/json"));
        assert!(result.message_id.is_some(), "a message id of its own");
        assert_eq!(result.body["executionId"], body["data"]["executionId"]);
        assert_eq!(result.body["attempt"], 2);
    }
    for pair in &queued {
        let id = pair["messageId"].as_str().unwrap();
        let verdict = if pair["environmentId"] == 222 {
            "PASSED"
        } else {
            "FAILED"
        };
        assert_eq!(results_of(&received, id), vec!["RUNNING", verdict], "{id}");
        let terminal = received
            .iter()
            .find(|r| r.body["messageId"] == id && r.body["status"] == verdict)
            .unwrap();
        assert!(terminal.body["durationMs"].is_u64());
        assert!(terminal.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("ran 111 on "));
    }
    assert!(
        app.drain("APPIUM", Duration::from_millis(500))
            .await
            .is_empty(),
        "every run message was acknowledged"
    );
}

#[tokio::test]
async fn the_runner_skips_a_message_id_it_already_reported() {
    let app = spawn_app().await;
    let tap = ResultsTap::bind(&app).await;
    let (status, first) = app
        .rerun(
            &json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
                       "scenarioEnvironmentPairs": [{"scenarioId": 111, "environmentId": 222}]}),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    let mut runner = start_runner(&app, "true");
    let reported = take(&tap.queue, 2, Duration::from_secs(30)).await;
    assert_eq!(reported.len(), 2, "{reported:?}");
    // the same message again (an at-least-once redelivery), then a new one
    let duplicate = reported[0].body["messageId"].as_str().unwrap().to_owned();
    let dispatched: String = {
        let mut conn = plan_queue::db::connect(&app.db_url).unwrap();
        use diesel::prelude::*;
        plan_queue::db::schema::dispatches::table
            .select(plan_queue::db::schema::dispatches::body)
            .first(&mut conn)
            .unwrap()
    };
    let (_connection, channel) = broker_channel().await;
    channel
        .basic_publish(
            app.config.amqp.exchange.as_str().into(),
            "APPIUM".into(),
            BasicPublishOptions::default(),
            dispatched.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let (status, second) = app
        .rerun(
            &json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
                       "scenarioEnvironmentPairs": [{"scenarioId": 112, "environmentId": 223}]}),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    let fresh = second["data"]["queued"][0]["messageId"]
        .as_str()
        .unwrap()
        .to_owned();
    // one runner, one pair at a time: the duplicate came first, the new pair's
    // two results come after whatever it would have reported
    let after = take(&tap.queue, 2, Duration::from_secs(30)).await;
    let _ = runner.kill();
    let _ = runner.wait();
    assert_eq!(results_of(&after, &fresh), vec!["RUNNING", "PASSED"]);
    assert!(
        results_of(&after, &duplicate).is_empty(),
        "the duplicate was reported again: {after:?}"
    );
    assert!(app
        .drain("APPIUM", Duration::from_millis(500))
        .await
        .is_empty());
}
