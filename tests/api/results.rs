//! Results from runners (contract, section 9) and the `execution.finished`
//! event (section 10): results published to `<exchange>.results` with lapin
//! change the pairs of a rerun made over HTTP; bad results end in
//! `<exchange>.dead-letter` and never stop the consumer.

use crate::helpers::{log_lines_with, spawn_app, spawn_app_with, TestApp, AMQP_URL};
use crate::proxy::Mode;
use diesel::prelude::*;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// A pair of a rerun, as the rerun answered it.
#[derive(Clone, Debug)]
struct Pair {
    execution_id: i64,
    scenario_id: i64,
    environment_id: i64,
    attempt: i64,
    message_id: String,
}

/// Reruns `pairs` of plan 614 as user 13 on APPIUM; the queued pairs.
async fn rerun(app: &TestApp, pairs: &[(i64, i64)]) -> Vec<Pair> {
    let named: Vec<Value> = pairs
        .iter()
        .map(|(s, e)| json!({"scenarioId": s, "environmentId": e}))
        .collect();
    let (status, body) = app
        .rerun(
            &json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
                       "scenarioEnvironmentPairs": named}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let execution_id = body["data"]["executionId"].as_i64().unwrap();
    body["data"]["queued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| Pair {
            execution_id,
            scenario_id: q["scenarioId"].as_i64().unwrap(),
            environment_id: q["environmentId"].as_i64().unwrap(),
            attempt: q["attempt"].as_i64().unwrap(),
            message_id: q["messageId"].as_str().unwrap().to_owned(),
        })
        .collect()
}

/// A result body for `pair`.
fn result(pair: &Pair, status: &str, at: &str) -> Value {
    json!({"messageId": pair.message_id, "executionId": pair.execution_id,
           "scenarioId": pair.scenario_id, "environmentId": pair.environment_id,
           "attempt": pair.attempt, "status": status, "at": at})
}

/// Publishes raw result bodies to `<exchange>.results` of the broker at
/// `amqp_url`, as a runner does (persistent, confirmed); each gets the AMQP
/// `message_id` it is paired with.
async fn publish_to(amqp_url: &str, app: &TestApp, bodies: &[(String, Vec<u8>)]) {
    try_publish_to(amqp_url, app, bodies)
        .await
        .expect("results published and confirmed");
}

async fn try_publish_to(
    amqp_url: &str,
    app: &TestApp,
    bodies: &[(String, Vec<u8>)],
) -> lapin::Result<()> {
    try_publish_with_headers(amqp_url, app, bodies, FieldTable::default()).await
}

/// [`try_publish_to`], every message carrying the AMQP `headers`.
async fn try_publish_with_headers(
    amqp_url: &str,
    app: &TestApp,
    bodies: &[(String, Vec<u8>)],
    headers: FieldTable,
) -> lapin::Result<()> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let exchange = app.config.amqp.results_name();
    for (id, body) in bodies {
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_type("scenario.result".into())
            .with_message_id(id.as_str().into())
            .with_headers(headers.clone());
        channel
            .basic_publish(
                exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await?
            .await?;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

pub(crate) async fn publish(app: &TestApp, results: &[Value]) {
    let bodies: Vec<(String, Vec<u8>)> = results
        .iter()
        .map(|r| (uuid::Uuid::new_v4().to_string(), r.to_string().into_bytes()))
        .collect();
    publish_to(AMQP_URL, app, &bodies).await;
}

/// Waits until `/metrics` has the sample `line` (a whole line: the `# HELP`
/// text may start like a sample).
pub(crate) async fn wait_metric(app: &TestApp, line: &str) {
    let started = Instant::now();
    while !app.metrics().await.lines().any(|l| l == line) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "metrics never showed {line}:\n{}",
            app.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) async fn wait_consumer(app: &TestApp) {
    wait_metric(app, "plan_queue_results_consumer_connected 1").await;
}

/// A pair as stored.
#[derive(QueryableByName, Debug, PartialEq)]
struct Stored {
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    started_at: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    finished_at: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    duration_ms: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    report_url: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    detail: Option<String>,
}

const UTC_TEXT: &str = "YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"";

async fn stored(app: &TestApp, pair: &Pair) -> Stored {
    let (url, id) = (app.db_url.clone(), pair.message_id.clone());
    tokio::task::spawn_blocking(move || {
        let mut conn = plan_queue::db::connect(&url).unwrap();
        diesel::sql_query(format!(
            "SELECT status, to_char(started_at AT TIME ZONE 'UTC', '{UTC_TEXT}') AS started_at, \
                    to_char(finished_at AT TIME ZONE 'UTC', '{UTC_TEXT}') AS finished_at, \
                    duration_ms, report_url, detail \
               FROM execution_pairs WHERE message_id = '{id}'"
        ))
        .get_result(&mut conn)
        .unwrap()
    })
    .await
    .unwrap()
}

async fn wait_status(app: &TestApp, pair: &Pair, status: &str) -> Stored {
    let started = Instant::now();
    loop {
        let now = stored(app, pair).await;
        if now.status == status {
            return now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "pair never became {status}: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `(open_pairs, started_at, finished_at)` of an execution.
async fn execution(app: &TestApp, id: i64) -> (i64, String, String) {
    let open = app
        .count_sql(&format!(
            "SELECT open_pairs::bigint AS n FROM executions WHERE id = {id}"
        ))
        .await;
    let epoch = |column: &str| {
        format!(
            "SELECT coalesce((extract(epoch FROM {column}) * 1000)::bigint, -1) AS n \
               FROM executions WHERE id = {id}"
        )
    };
    let started = app.count_sql(&epoch("started_at")).await;
    let finished = app.count_sql(&epoch("finished_at")).await;
    let text = |ms: i64| {
        if ms < 0 {
            "null".to_owned()
        } else {
            chrono::DateTime::from_timestamp_millis(ms)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        }
    };
    (open, text(started), text(finished))
}

/// Takes every message from the dead-letter queue within `within`:
/// `(AMQP message_id, body)`.
async fn dead_letters(app: &TestApp, count: usize, within: Duration) -> Vec<(String, Vec<u8>)> {
    let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = app.config.amqp.dead_letter_name();
    let deadline = Instant::now() + within;
    let mut taken = Vec::new();
    while taken.len() < count && Instant::now() < deadline {
        match channel
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            Some(message) => {
                let delivery = message.delivery;
                delivery.ack(BasicAckOptions::default()).await.unwrap();
                let id = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .unwrap()
                    .to_string();
                taken.push((id, delivery.data));
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let _ = connection.close(200, "done".into()).await;
    taken
}

fn result_schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string("docs/result.schema.json").unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).expect("a JSON Schema")
}

fn event_schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string("docs/event.schema.json").unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).expect("a JSON Schema")
}

#[tokio::test]
async fn a_running_then_a_failed_result_fill_the_pair_and_finish_the_execution() {
    let app = spawn_app().await;
    wait_consumer(&app).await;
    let pairs = rerun(&app, &[(111, 222)]).await;
    let pair = &pairs[0];
    let mut failed = result(pair, "FAILED", "2026-11-30T09:03:10Z");
    failed["durationMs"] = json!(41250);
    failed["reportUrl"] = json!("https://reports.example/5012/111/222");
    failed["detail"] = json!("Expected basket total 42.00 but was 0.00");
    let running = result(pair, "RUNNING", "2026-11-30T09:02:00Z");
    publish(&app, std::slice::from_ref(&running)).await;
    let now = wait_status(&app, pair, "RUNNING").await;
    assert_eq!(now.started_at.as_deref(), Some("2026-11-30T09:02:00.000Z"));
    assert_eq!(
        execution(&app, pair.execution_id).await,
        (1, "2026-11-30T09:02:00.000Z".to_owned(), "null".to_owned()),
        "started, not finished"
    );

    publish(&app, std::slice::from_ref(&failed)).await;
    let now = wait_status(&app, pair, "FAILED").await;
    assert_eq!(
        now,
        Stored {
            status: "FAILED".into(),
            started_at: Some("2026-11-30T09:02:00.000Z".into()),
            finished_at: Some("2026-11-30T09:03:10.000Z".into()),
            duration_ms: Some(41250),
            report_url: Some("https://reports.example/5012/111/222".into()),
            detail: Some("Expected basket total 42.00 but was 0.00".into()),
        }
    );
    assert_eq!(
        execution(&app, pair.execution_id).await,
        (
            0,
            "2026-11-30T09:02:00.000Z".to_owned(),
            "2026-11-30T09:03:10.000Z".to_owned()
        )
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("plan_queue_results_applied_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("plan_queue_result_lag_seconds_count 2"),
        "{metrics}"
    );
    let schema = result_schema();
    assert!(schema.is_valid(&running) && schema.is_valid(&failed));
}

#[tokio::test]
async fn the_first_terminal_result_wins_and_later_or_duplicate_results_change_nothing() {
    let app = spawn_app().await;
    wait_consumer(&app).await;
    let pairs = rerun(&app, &[(111, 222)]).await;
    let pair = &pairs[0];
    let mut passed = result(pair, "PASSED", "2026-11-30T09:03:10.250Z");
    passed["durationMs"] = json!(10_250);
    publish(&app, std::slice::from_ref(&passed)).await;
    let first = wait_status(&app, pair, "PASSED").await;
    assert_eq!(
        first.started_at.as_deref(),
        Some("2026-11-30T09:03:00.000Z"),
        "no RUNNING came: the start is at minus durationMs"
    );

    // out of order, a duplicate, and another terminal status, in one batch
    publish(
        &app,
        &[
            result(pair, "RUNNING", "2026-11-30T09:01:00Z"),
            passed.clone(),
            result(pair, "FAILED", "2026-11-30T09:04:00Z"),
        ],
    )
    .await;
    wait_metric(&app, "plan_queue_results_ignored_total 3").await;
    assert_eq!(stored(&app, pair).await, first, "nothing changed");
    let events = app
        .count_sql("SELECT count(*) AS n FROM dispatches WHERE message_type = 'execution.finished'")
        .await;
    assert_eq!(events, 1, "the execution finished once");
    assert!(app
        .metrics()
        .await
        .contains("plan_queue_results_applied_total 1"));
}

#[tokio::test]
async fn bad_results_are_dead_lettered_with_their_reason_and_the_next_good_one_applies() {
    let app = spawn_app().await;
    wait_consumer(&app).await;
    app.wait_ready(&app.address, 200).await; // the dead-letter queue is declared
    let pairs = rerun(&app, &[(111, 222), (112, 223)]).await;
    let (pair, other) = (&pairs[0], &pairs[1]);
    let mut wrong_execution = result(pair, "PASSED", "2026-11-30T09:00:00Z");
    wrong_execution["executionId"] = json!(4980);
    let mut crossed = result(pair, "PASSED", "2026-11-30T09:00:00Z");
    crossed["scenarioId"] = json!(other.scenario_id);
    crossed["environmentId"] = json!(other.environment_id);
    let mut unknown = result(pair, "PASSED", "2026-11-30T09:00:00Z");
    unknown["messageId"] = json!(uuid::Uuid::new_v4().to_string());
    let mut wrong_type = result(pair, "PASSED", "2026-11-30T09:00:00Z");
    wrong_type["attempt"] = json!("2");
    let mut bad_url = result(pair, "FAILED", "2026-11-30T09:00:00Z");
    bad_url["reportUrl"] = json!("javascript:alert(1)");
    let mut negative = result(pair, "FAILED", "2026-11-30T09:00:00Z");
    negative["durationMs"] = json!(-5);
    let mut huge = result(pair, "FAILED", "2026-11-30T09:00:00Z");
    huge["detail"] = json!("x".repeat(1024 * 1024));
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not-json", b"PASSED, honestly".to_vec(), "not JSON"),
        ("one-mebibyte", huge.to_string().into_bytes(), "larger than"),
        (
            "wrong-type",
            wrong_type.to_string().into_bytes(),
            "field attempt",
        ),
        (
            "queued-status",
            result(pair, "QUEUED", "2026-11-30T09:00:00Z")
                .to_string()
                .into_bytes(),
            "unknown status",
        ),
        ("bad-url", bad_url.to_string().into_bytes(), "reportUrl"),
        (
            "negative-duration",
            negative.to_string().into_bytes(),
            "durationMs",
        ),
        (
            "wrong-execution",
            wrong_execution.to_string().into_bytes(),
            "names no pair",
        ),
        (
            "crossed-pair",
            crossed.to_string().into_bytes(),
            "names no pair",
        ),
        (
            "unknown-message",
            unknown.to_string().into_bytes(),
            "names no pair",
        ),
    ];
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let mut bodies: Vec<(String, Vec<u8>)> = bad
        .iter()
        .map(|(name, body, _)| (format!("{name}-{tag}"), body.clone()))
        .collect();
    let good = result(pair, "PASSED", "2026-11-30T09:05:00Z");
    bodies.push((format!("good-{tag}"), good.to_string().into_bytes()));
    publish_to(AMQP_URL, &app, &bodies).await;

    wait_status(&app, pair, "PASSED").await;
    let parked = dead_letters(&app, bad.len(), Duration::from_secs(20)).await;
    let parked_ids: HashSet<String> = parked.iter().map(|(id, _)| id.clone()).collect();
    let expected: HashSet<String> = bad
        .iter()
        .map(|(name, _, _)| format!("{name}-{tag}"))
        .collect();
    assert_eq!(
        parked_ids, expected,
        "every bad result is dead-lettered, the good one is not"
    );
    for (name, _, reason) in &bad {
        let lines = log_lines_with(&format!("message_id={name}-{tag}"));
        assert!(
            lines
                .iter()
                .any(|l| l.contains("rejected") && l.contains(reason)),
            "{name}: {lines:?}"
        );
    }
    assert_eq!(
        stored(&app, other).await.status,
        "QUEUED",
        "the crossed result changed nothing"
    );
    let metrics = app.metrics().await;
    for line in [
        r#"plan_queue_results_rejected_total{reason="no_pair"} 3"#,
        r#"plan_queue_results_rejected_total{reason="not_json"} 1"#,
        r#"plan_queue_results_rejected_total{reason="too_large"} 1"#,
        r#"plan_queue_results_rejected_total{reason="invalid"} 4"#,
        "plan_queue_results_applied_total 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    let schema = result_schema();
    assert!(schema.is_valid(&good));
    for invalid in [&wrong_type, &bad_url, &negative] {
        assert!(!schema.is_valid(invalid), "{invalid}");
    }
}

#[tokio::test]
async fn a_result_that_arrives_before_its_dispatch_is_marked_published_applies() {
    let app = spawn_app().await;
    wait_consumer(&app).await;
    let pairs = rerun(&app, &[(113, 223)]).await;
    app.wait_until_pending(0).await;
    // as if the relay's "published" mark had not committed yet
    app.sql("UPDATE dispatches SET published_at = NULL, locked_until = now() + interval '1 hour'")
        .await;
    publish(&app, &[result(&pairs[0], "ERROR", "2026-11-30T09:00:00Z")]).await;
    wait_status(&app, &pairs[0], "ERROR").await;
}

#[tokio::test]
async fn results_that_arrive_while_the_database_is_unreachable_are_all_applied_when_it_returns() {
    let (app, proxy) = crate::proxy::spawn_app_behind_database_proxy().await;
    wait_consumer(&app).await;
    let pairs = rerun(&app, &[(111, 222), (111, 223), (112, 222), (112, 223)]).await;
    assert_eq!(pairs.len(), 4);

    proxy.set(Mode::Refuse);
    let results: Vec<Value> = pairs
        .iter()
        .map(|p| result(p, "PASSED", "2026-11-30T09:00:00Z"))
        .collect();
    publish(&app, &results).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for pair in &pairs {
        assert_eq!(stored(&app, pair).await.status, "QUEUED");
    }
    assert!(
        dead_letters(&app, 1, Duration::from_millis(300))
            .await
            .is_empty(),
        "nothing dead-lettered while the database is away"
    );

    proxy.set(Mode::Forward);
    for pair in &pairs {
        wait_status(&app, pair, "PASSED").await;
    }
    assert_eq!(execution(&app, pairs[0].execution_id).await.0, 0);
    assert!(dead_letters(&app, 1, Duration::from_millis(300))
        .await
        .is_empty());
}

#[tokio::test]
async fn after_a_broker_restart_the_consumer_reconnects_and_applies_results() {
    let Some(broker) = crate::broker::start_private_broker().await else {
        return;
    };
    let app = spawn_app_with(|c| c.amqp.url = broker.amqp_url()).await;
    wait_consumer(&app).await;
    let pairs = rerun(&app, &[(111, 222), (112, 223)]).await;
    let url = broker.amqp_url();
    let body = |p: &Pair, s: &str| {
        (
            uuid::Uuid::new_v4().to_string(),
            result(p, s, "2026-11-30T09:00:00Z")
                .to_string()
                .into_bytes(),
        )
    };
    publish_to(&url, &app, &[body(&pairs[0], "PASSED")]).await;
    wait_status(&app, &pairs[0], "PASSED").await;

    let broker = crate::broker::restart_private_broker(broker).await;
    // a runner retries until the broker is back and the exchange declared again
    let started = Instant::now();
    while let Err(e) = try_publish_to(&url, &app, &[body(&pairs[1], "FAILED")]).await {
        assert!(started.elapsed() < Duration::from_secs(30), "{e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_status(&app, &pairs[1], "FAILED").await;
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_execution_finished_event_carries_the_counts_and_the_flaky_pairs() {
    let app = spawn_app().await;
    wait_consumer(&app).await;
    // a queue of the test's own on the events exchange
    let (connection, channel) = crate::helpers::broker_channel().await;
    let events = app.config.amqp.events_name();
    // as plan-queue declares it (its relay may not have yet)
    channel
        .exchange_declare(
            events.as_str().into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let queue = channel
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
    channel
        .queue_bind(
            queue.name().clone(),
            events.as_str().into(),
            "execution.finished.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    // in the source run 4980: 111/222 FAILED, 112/223 ERROR, 113/223 FAILED
    let pairs = rerun(&app, &[(111, 222), (112, 223), (113, 223)]).await;
    let execution_id = pairs[0].execution_id;
    let mut skipped = result(&pairs[2], "SKIPPED", "2026-11-30T09:07:00Z");
    skipped["durationMs"] = json!(1000);
    publish(
        &app,
        &[
            result(&pairs[0], "RUNNING", "2026-11-30T09:01:00Z"),
            result(&pairs[0], "PASSED", "2026-11-30T09:02:00Z"),
            result(&pairs[1], "FAILED", "2026-11-30T09:05:00Z"),
        ],
    )
    .await;
    wait_status(&app, &pairs[1], "FAILED").await;
    publish(&app, &[skipped.clone(), skipped]).await;

    let started = Instant::now();
    let delivery = loop {
        if let Some(message) = channel
            .basic_get(queue.name().clone(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            break message.delivery;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let event: Value = serde_json::from_slice(&delivery.data).unwrap();
    assert_eq!(delivery.routing_key.as_str(), "execution.finished.APPIUM");
    let p = &delivery.properties;
    assert_eq!(p.kind().as_ref().unwrap().as_str(), "execution.finished");
    assert_eq!(
        p.message_id().as_ref().unwrap().as_str(),
        event["eventId"].as_str().unwrap()
    );
    assert_eq!(*p.delivery_mode(), Some(2));
    let requested_at = event["requestedAt"].clone();
    let event_id = event["eventId"].clone();
    assert_eq!(
        event,
        json!({"eventId": event_id, "executionId": execution_id, "planId": 614, "kind": "RERUN",
               "sourceExecutionId": 4980, "trigger": "USER", "retryOf": null, "retryExecutionId": null,
               "frameworkType": "APPIUM", "requestedBy": 13,
               "requestedAt": requested_at, "startedAt": "2026-11-30T09:01:00Z",
               "finishedAt": "2026-11-30T09:07:00Z",
               "counts": {"PASSED": 1, "FAILED": 1, "ERROR": 0, "SKIPPED": 1, "ABORTED": 0},
               "flaky": [{"scenarioId": 111, "environmentId": 222}]})
    );
    let validator = event_schema();
    let errors: Vec<String> = validator
        .iter_errors(&event)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let mut broken = event.clone();
    broken["counts"].as_object_mut().unwrap().remove("ABORTED");
    assert!(!validator.is_valid(&broken), "the schema is not vacuous");

    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = channel
        .basic_get(queue.name().clone(), BasicGetOptions { no_ack: true })
        .await
        .unwrap();
    assert!(again.is_none(), "one event per finished execution");
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("plan_queue_executions_finished_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("plan_queue_flaky_pairs_found_total 1"),
        "{metrics}"
    );
    let _ = connection.close(200, "done".into()).await;
}

#[test]
fn asyncapi_names_the_results_and_events_exchanges_and_their_examples_satisfy_the_schemas() {
    let text = std::fs::read_to_string("docs/asyncapi.yaml").unwrap();
    let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
    let config = plan_queue::config::Config::from_lookup(|_| None).unwrap();
    let results = &doc["channels"]["results"]["bindings"]["amqp"]["exchange"];
    assert_eq!(results["name"], config.amqp.results_name().as_str());
    assert_eq!(results["type"], "fanout");
    let events = &doc["channels"]["events"]["bindings"]["amqp"]["exchange"];
    assert_eq!(events["name"], config.amqp.events_name().as_str());
    assert_eq!(events["type"], "topic");
    for (message, schema, validator) in [
        ("scenarioResult", "./result.schema.json", result_schema()),
        ("executionFinished", "./event.schema.json", event_schema()),
    ] {
        let message = &doc["components"]["messages"][message];
        assert_eq!(message["payload"]["schema"]["$ref"], schema);
        let example = &message["examples"][0]["payload"];
        assert!(validator.is_valid(example), "{example}");
    }
    assert_eq!(
        doc["components"]["messages"]["executionFinished"]["bindings"]["amqp"]["messageType"],
        plan_queue::db::models::MESSAGE_EXECUTION_FINISHED
    );
}

/// A runner's output may hold U+0000, which JSON allows and PostgreSQL text
/// cannot store: the result applies with U+FFFD in its place, it is not
/// dead-lettered (which would leave the pair RUNNING for good and the plan
/// "already running").
#[tokio::test]
async fn a_result_whose_detail_holds_a_nul_applies_with_a_replacement_character() {
    let app = spawn_app().await;
    wait_consumer(&app).await;
    let pairs = rerun(&app, &[(111, 222)]).await;
    let pair = &pairs[0];
    let mut passed = result(pair, "PASSED", "2026-11-30T09:03:10Z");
    passed["detail"] = json!("before\u{0}after");
    publish(&app, std::slice::from_ref(&passed)).await;
    let now = wait_status(&app, pair, "PASSED").await;
    assert_eq!(now.detail.as_deref(), Some("before\u{FFFD}after"));
    assert_eq!(execution(&app, pair.execution_id).await.0, 0, "finished");
}

#[tokio::test]
async fn plan_queue_events_prints_the_execution_finished_event_of_a_rerun() {
    use std::io::{BufRead, BufReader, Read};
    let app = spawn_app().await;
    wait_consumer(&app).await;
    // the events exchange as plan-queue declares it (its relay may not have yet)
    let (_connection, channel) = crate::helpers::broker_channel().await;
    channel
        .exchange_declare(
            app.config.amqp.events_name().as_str().into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut watcher = std::process::Command::new(env!("CARGO_BIN_EXE_plan-queue"))
        .args([
            "events",
            "--count",
            "1",
            "--routing-key",
            "execution.finished.#",
        ])
        .env("AMQP_URL", &app.config.amqp.url)
        .env("AMQP_EXCHANGE", &app.config.amqp.exchange)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("plan-queue events starts");
    // it says so once its queue is bound
    let mut stderr = BufReader::new(watcher.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("watching"), "{line}");

    let pairs = rerun(&app, &[(111, 222)]).await;
    publish(&app, &[result(&pairs[0], "PASSED", "2026-11-30T09:02:00Z")]).await;
    wait_status(&app, &pairs[0], "PASSED").await;

    let started = Instant::now();
    while watcher.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "plan-queue events printed no event"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(watcher.wait().unwrap().success());
    let mut printed = String::new();
    watcher
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    let (routing_key, body) = printed.trim_end().split_once(' ').expect("key and body");
    assert_eq!(routing_key, "execution.finished.APPIUM");
    let event: Value = serde_json::from_str(body).unwrap();
    assert_eq!(event["executionId"], json!(pairs[0].execution_id));
    assert_eq!(event["counts"]["PASSED"], json!(1));
}

/// A result whose AMQP headers need a frame of 20 KB (RabbitMQ accepts
/// frames up to its default 128 KiB, and a message's properties and headers
/// travel in one frame): the results consumer takes it like any other and
/// applies it, and a result published after it applies too (the consumer's
/// connection proposes the broker's default frame size, not the relay's
/// 16 KiB: an attacker's finding, whose message was refused by lapin,
/// redelivered until dead-lettered and never applied).
#[tokio::test]
async fn a_result_with_20_kb_of_headers_applies_like_any_other() {
    use lapin::types::{AMQPValue, ShortString};
    let app = spawn_app().await;
    wait_consumer(&app).await;
    let pairs = rerun(&app, &[(111, 222), (112, 222)]).await;
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from("big"),
        AMQPValue::LongString("A".repeat(20_000).into()),
    );
    let body = result(&pairs[0], "RUNNING", "2026-11-30T09:02:00Z").to_string();
    let id = uuid::Uuid::new_v4().to_string();
    try_publish_with_headers(AMQP_URL, &app, &[(id, body.into_bytes())], headers)
        .await
        .expect("published and confirmed");
    wait_status(&app, &pairs[0], "RUNNING").await;
    publish(
        &app,
        &[result(&pairs[1], "RUNNING", "2026-11-30T09:02:00Z")],
    )
    .await;
    wait_status(&app, &pairs[1], "RUNNING").await;
}
