//! Broker faults that are not outages: flow control (a memory alarm blocks
//! publishing connections) and a configuration conflict in part of the
//! topology (one queue declared with other arguments). Issue 13, parts 2 and 3.

use crate::broker::PrivateBroker;
use crate::helpers::{
    broker_channel, log_lines_with, message_ids, pair_body, received_ids, spawn_app,
    spawn_app_with, take_from, TestApp, DEMO_PAIRS,
};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::ExchangeKind;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Readiness now: status and the `result.message`.
async fn readiness(app: &TestApp) -> (u16, String) {
    let (status, text) = app.get("/health/ready").await;
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    let message = body["result"]["message"].as_str().unwrap_or("").to_owned();
    (status, message)
}

/// Waits up to 20 s until readiness answers `status` with a message
/// containing every one of `parts`.
async fn wait_readiness(app: &TestApp, status: u16, parts: &[&str]) -> String {
    let started = Instant::now();
    loop {
        let (got, message) = readiness(app).await;
        if got == status && parts.iter().all(|p| message.contains(p)) {
            return message;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "readiness stayed {got} {message:?}, expected {status} naming {parts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A private node (shared with its blocking helpers), or `None` where
/// RabbitMQ is not installed.
async fn private_broker() -> Option<Arc<PrivateBroker>> {
    tokio::task::spawn_blocking(PrivateBroker::start)
        .await
        .unwrap()
        .map(Arc::new)
}

async fn set_memory_watermark(broker: &Arc<PrivateBroker>, fraction: &'static str) {
    let broker = broker.clone();
    tokio::task::spawn_blocking(move || broker.set_memory_watermark(fraction))
        .await
        .unwrap()
}

async fn connections(broker: &Arc<PrivateBroker>, name: &'static str) -> usize {
    let broker = broker.clone();
    tokio::task::spawn_blocking(move || broker.connections(name))
        .await
        .unwrap()
}

async fn stop(broker: Arc<PrivateBroker>) {
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap()
}

const BATCH: i64 = 5;
const RERUNS: usize = 10;
const ALARM: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_memory_alarm_holds_the_relay_on_one_connection_and_delivers_each_message_after_it() {
    let Some(broker) = private_broker().await else {
        return;
    };
    let app = spawn_app_with(|c| {
        c.amqp.url = broker.amqp_url();
        c.amqp.publish_timeout = Duration::from_secs(1);
        c.relay.batch_size = BATCH;
    })
    .await;
    app.wait_ready(&app.address, 200).await;

    set_memory_watermark(&broker, "0.000001").await;
    let alarm = Instant::now();
    let mut accepted = HashSet::new();
    for i in 0..RERUNS {
        let (s, e) = DEMO_PAIRS[i % DEMO_PAIRS.len()];
        let (status, body) = app.rerun(&pair_body(s, e)).await;
        assert_eq!(status, 200, "reruns are accepted during the alarm: {body}");
        accepted.extend(message_ids(&body));
    }
    assert_eq!(accepted.len(), RERUNS);

    let mut most_connections = 0;
    let (mut blocked_readiness, mut blocked_metric) = (false, false);
    while alarm.elapsed() < ALARM {
        let connections = connections(&broker, "plan-queue relay").await;
        most_connections = most_connections.max(connections);
        let (status, message) = readiness(&app).await;
        blocked_readiness |= status == 503 && message.contains("broker blocked");
        blocked_metric |= app
            .metrics()
            .await
            .lines()
            .any(|l| l == "plan_queue_broker_blocked 1");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    set_memory_watermark(&broker, "0.4").await;

    app.wait_until_pending(0).await;
    let queue = app.config.amqp.queue_name("APPIUM");
    let delivered = take_from(
        &broker.amqp_url(),
        &queue,
        usize::MAX,
        Duration::from_secs(3),
    )
    .await;
    println!(
        "during a {ALARM:?} alarm: at most {most_connections} connection(s); \
         {} deliveries for {RERUNS} messages",
        delivered.len()
    );
    assert_eq!(received_ids(&delivered), accepted, "every message arrived");
    assert!(
        delivered.len() <= RERUNS + BATCH as usize,
        "{} deliveries for {RERUNS} messages: more duplicates than the batch in flight",
        delivered.len()
    );
    assert_eq!(
        most_connections, 1,
        "the relay's connections during the alarm"
    );
    assert!(blocked_readiness, "readiness never said `broker blocked`");
    assert!(blocked_metric, "plan_queue_broker_blocked never was 1");
    app.wait_ready(&app.address, 200).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.lines().any(|l| l == "plan_queue_broker_blocked 0"),
        "{metrics}"
    );
    stop(broker).await;
}

fn junit_rerun() -> Value {
    json!({"planId": 614, "userId": 13, "frameworkType": "JUNIT", "scenarioId": 112, "environmentId": 222})
}

#[tokio::test]
async fn a_queue_declared_with_other_arguments_holds_back_only_its_own_routing_key() {
    let mut app = spawn_app().await;
    app.wait_ready(&app.address, 200).await;
    let (_connection, channel) = broker_channel().await;
    let junit = app.config.amqp.queue_name("JUNIT");
    channel
        .queue_delete(junit.as_str().into(), Default::default())
        .await
        .unwrap();
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(junit.as_str().into(), durable, FieldTable::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            junit.as_str().into(),
            app.config.amqp.exchange.as_str().into(),
            "JUNIT".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    app.restart_with(|_| {}).await;
    // plan 614 runs on APPIUM; a JUNIT rerun of it is 1023 (contract, section 20)
    app.sql("UPDATE plans SET framework_type = NULL WHERE id = 614")
        .await;

    let (status, appium) = app.rerun(&pair_body(111, 222)).await;
    assert_eq!(status, 200, "{appium}");
    let (status, held) = app.rerun(&junit_rerun()).await;
    assert_eq!(status, 200, "{held}");
    let delivered = app.consume("APPIUM", 1, Duration::from_secs(10)).await;
    assert_eq!(
        received_ids(&delivered),
        message_ids(&appium),
        "the other framework types flow"
    );

    let message = wait_readiness(&app, 503, &[&junit, "x-dead-letter-exchange"]).await;
    assert!(
        !message.contains("broker,"),
        "not reported as an outage: {message}"
    );
    assert_conflict_metric(&app, "queue", &junit, Some("x-dead-letter-exchange")).await;
    assert!(
        log_lines_with(&junit)
            .iter()
            .any(|l| l.contains("x-dead-letter-exchange") && l.contains("held back")),
        "a log line names the queue, the argument and what is held back"
    );
    assert_eq!(app.pending().await, 1, "the JUNIT row waits");
    let misrouted = app.consume("JUNIT", 1, Duration::from_millis(500)).await;
    assert!(
        misrouted.is_empty(),
        "nothing went to the conflicting queue"
    );

    // the operator removes the conflicting queue; the relay declares it anew
    channel
        .queue_delete(junit.as_str().into(), Default::default())
        .await
        .unwrap();
    let fixed = Instant::now();
    let delivered = app.consume("JUNIT", 1, Duration::from_secs(10)).await;
    assert_eq!(received_ids(&delivered), message_ids(&held), "nothing lost");
    println!(
        "the held-back row arrived {:?} after the fix",
        fixed.elapsed()
    );
    app.wait_until_pending(0).await;
    wait_readiness(&app, 200, &[]).await;
    let metrics = app.metrics().await;
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("plan_queue_topology_conflicts{") && !l.ends_with(" 0")),
        "the conflict is gone: {metrics}"
    );
}

/// Publishes `results` (JSON bodies) to `<exchange>.results`, as a runner
/// does (persistent, confirmed).
async fn publish_results(app: &TestApp, results: &[Value]) {
    let (connection, channel) = broker_channel().await;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let exchange = app.config.amqp.results_name();
    for result in results {
        let properties = lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(uuid::Uuid::new_v4().to_string().into());
        channel
            .basic_publish(
                exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                result.to_string().as_bytes(),
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let _ = connection.close(200, "done".into()).await;
}

/// Waits until `/metrics` has the whole sample line `line`.
async fn wait_metric(app: &TestApp, line: &str) {
    let started = Instant::now();
    while !app.metrics().await.lines().any(|l| l == line) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "metrics never showed {line}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_events_exchange_of_another_type_holds_back_only_the_finished_events() {
    let mut app = spawn_app().await;
    app.wait_ready(&app.address, 200).await;
    let (_connection, channel) = broker_channel().await;
    let events = app.config.amqp.events_name();
    redeclare_exchange(&channel, &events, ExchangeKind::Fanout).await;
    let tap = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let bind = |exchange: &str, key: &str| {
        channel.queue_bind(
            tap.name().clone(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
    };
    bind(&events, "").await.unwrap();
    app.restart_with(|_| {}).await;
    wait_readiness(
        &app,
        503,
        &[&format!("exchange {events} conflicts on type")],
    )
    .await;

    let (status, body) = app.rerun(&pair_body(111, 222)).await;
    assert_eq!(status, 200, "{body}");
    let delivered = app.consume("APPIUM", 1, Duration::from_secs(10)).await;
    assert_eq!(
        received_ids(&delivered),
        message_ids(&body),
        "runs still flow"
    );
    let queued = &body["data"]["queued"][0];
    let pair = json!({"messageId": queued["messageId"], "executionId": body["data"]["executionId"],
                      "scenarioId": 111, "environmentId": 222, "attempt": queued["attempt"]});
    let mut running = pair.clone();
    running["status"] = json!("RUNNING");
    running["at"] = json!("2026-11-30T09:01:00Z");
    let mut passed = pair;
    passed["status"] = json!("PASSED");
    passed["at"] = json!("2026-11-30T09:02:00Z");
    publish_results(&app, &[running, passed]).await;
    wait_metric(&app, "plan_queue_executions_finished_total 1").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.pending().await, 1, "the finished event waits");
    let misrouted = channel
        .basic_get(tap.name().clone(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert!(
        misrouted.is_none(),
        "nothing went to the conflicting exchange"
    );
    assert_conflict_metric(&app, "exchange", &events, Some("type")).await;

    // the operator declares the exchange as the contract says
    redeclare_exchange(&channel, &events, ExchangeKind::Topic).await;
    bind(&events, "execution.finished.#").await.unwrap();
    let started = Instant::now();
    let event = loop {
        if let Some(message) = channel
            .basic_get(tap.name().clone(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            break message.delivery;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the event never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(event.routing_key.as_str(), "execution.finished.APPIUM");
    app.wait_until_pending(0).await;
    wait_readiness(&app, 200, &[]).await;
}

#[tokio::test]
async fn a_results_queue_declared_with_other_arguments_is_reported_and_still_consumed() {
    let mut app = spawn_app().await;
    app.wait_ready(&app.address, 200).await;
    let (_connection, channel) = broker_channel().await;
    let results = app.config.amqp.results_name();
    channel
        .queue_delete(results.as_str().into(), Default::default())
        .await
        .unwrap();
    // a classic queue, as an earlier deployment left it: bound to the results exchange
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    declare_bound(&channel, &results, durable, &results).await;
    app.restart_with(|_| {}).await;

    wait_readiness(&app, 503, &[&format!("queue {results} conflicts on")]).await;
    assert_conflict_metric(&app, "queue", &results, None).await;
    wait_metric(&app, "plan_queue_results_consumer_connected 1").await;
    let (status, body) = app.rerun(&pair_body(111, 222)).await;
    assert_eq!(status, 200, "{body}");
    let queued = &body["data"]["queued"][0];
    publish_results(
        &app,
        &[
            json!({"messageId": queued["messageId"], "executionId": body["data"]["executionId"],
               "scenarioId": 111, "environmentId": 222, "attempt": queued["attempt"],
               "status": "PASSED", "at": "2026-11-30T09:02:00Z"}),
        ],
    )
    .await;
    wait_metric(&app, "plan_queue_results_applied_total 1").await;
}

/// Declares `queue` without arguments and binds it to the fanout `exchange`.
async fn declare_bound(
    channel: &lapin::Channel,
    queue: &str,
    options: QueueDeclareOptions,
    exchange: &str,
) {
    channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// Declares `<exchange>.results` and a queue of the test's bound to it on
/// the broker at `amqp_url`; returns the queue.
async fn tap_results(amqp_url: &str, exchange: &str) -> String {
    let connection = lapin::Connection::connect(amqp_url, Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let results = format!("{exchange}.results");
    let tap = format!("{exchange}.results-tap");
    let durable = lapin::options::ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            results.as_str().into(),
            lapin::ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await
        .unwrap();
    declare_bound(&channel, &tap, Default::default(), &results).await;
    let _ = connection.close(200, "tapped".into()).await;
    tap
}

#[tokio::test]
async fn a_runner_blocked_by_a_memory_alarm_reports_its_result_after_it_on_one_connection() {
    let Some(broker) = private_broker().await else {
        return;
    };
    let app = spawn_app_with(|c| c.amqp.url = broker.amqp_url()).await;
    let tap = tap_results(&broker.amqp_url(), &app.config.amqp.exchange).await;
    let (status, body) = app.rerun(&pair_body(111, 222)).await;
    assert_eq!(status, 200, "{body}");
    app.wait_until_pending(0).await; // in the APPIUM queue

    set_memory_watermark(&broker, "0.000001").await;
    let c = &app.config;
    let mut runner = std::process::Command::new(env!("CARGO_BIN_EXE_plan-queue"))
        .args(["runner", "--framework-type", "appium", "--command", "true"])
        .env("AMQP_URL", broker.amqp_url())
        .env("AMQP_EXCHANGE", &c.amqp.exchange)
        .env("FRAMEWORK_TYPES", c.amqp.framework_types.join(","))
        .env("PUBLISH_TIMEOUT_MS", "1000")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start plan-queue runner");
    let alarm = Instant::now();
    let mut most_connections = 0;
    while alarm.elapsed() < Duration::from_secs(8) {
        let connections = connections(&broker, "plan-queue runner").await;
        most_connections = most_connections.max(connections);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    set_memory_watermark(&broker, "0.4").await;

    let results = take_from(&broker.amqp_url(), &tap, 3, Duration::from_secs(10)).await;
    let _ = runner.kill();
    let _ = runner.wait();
    let statuses: Vec<&str> = results
        .iter()
        .map(|r| r.body["status"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        statuses,
        ["RUNNING", "PASSED"],
        "the pair is reported once it unblocks"
    );
    assert_eq!(
        most_connections, 1,
        "the runner's connections during the alarm"
    );
    let queue = app.config.amqp.queue_name("APPIUM");
    let left = take_from(&broker.amqp_url(), &queue, 1, Duration::from_millis(500)).await;
    assert!(left.is_empty(), "the run message was acknowledged");
    stop(broker).await;
}

/// Deletes exchange `name` and declares it again, durable, of `kind`: what an
/// operator does to change an exchange's type under the service.
async fn redeclare_exchange(channel: &lapin::Channel, name: &str, kind: ExchangeKind) {
    channel
        .exchange_delete(name.into(), Default::default())
        .await
        .unwrap();
    channel
        .exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
}

/// `/metrics` shows one topology conflict of `kind` (`queue`, `exchange`) on
/// `name`, on `argument` when given.
async fn assert_conflict_metric(app: &TestApp, kind: &str, name: &str, argument: Option<&str>) {
    let metrics = app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("plan_queue_topology_conflicts{")
                && l.contains(&format!(r#"kind="{kind}""#))
                && l.contains(&format!(r#"name="{name}""#))
                && argument.is_none_or(|a| l.contains(&format!(r#"argument="{a}""#)))
                && l.ends_with(" 1")),
        "{metrics}"
    );
}
