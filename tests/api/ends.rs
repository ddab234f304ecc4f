//! Every pair ends (contract, sections 14–17): queue and run deadlines
//! enforced by the sweep, cancels, dead-lettered run messages, late results;
//! and two instances on one database ending each pair once.

use crate::helpers::{broker_channel, code, message, spawn_app_with, TestApp};
use crate::results::{publish, wait_consumer, wait_metric};
use chrono::{DateTime, Utc};
use lapin::options::{BasicGetOptions, BasicNackOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::Connection;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A queue of the test's own on `<exchange>.events`, bound with `pattern`.
pub(crate) struct EventTap {
    _connection: Connection,
    channel: lapin::Channel,
    queue: String,
}

impl EventTap {
    pub(crate) async fn bind(app: &TestApp, pattern: &str) -> Self {
        let (connection, channel) = broker_channel().await;
        // as plan-queue declares it (its relay may not have yet)
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
                app.config.amqp.events_name().as_str().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        EventTap {
            _connection: connection,
            channel,
            queue: queue.name().to_string(),
        }
    }

    /// The events that arrive within `within`: `(routing key, body)`.
    pub(crate) async fn take(&self, within: Duration) -> Vec<(String, Value)> {
        let deadline = Instant::now() + within;
        let mut events = Vec::new();
        while Instant::now() < deadline {
            match self
                .channel
                .basic_get(self.queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                Some(m) => events.push((
                    m.delivery.routing_key.to_string(),
                    serde_json::from_slice(&m.delivery.data).unwrap(),
                )),
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        events
    }
}

/// Runs plan `plan_id` on APPIUM as user 13 (with `force`); the answer's data.
async fn run(app: &TestApp, plan_id: i64) -> Value {
    let token = app.token(13, &["PLAN_RUN"]);
    let (status, body) = app
        .post(
            "/queue/run",
            Some(&token),
            &json!({"planId": plan_id, "userId": 13, "frameworkType": "APPIUM", "force": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// `GET path` as user 13 with `PLAN_READ`: the answer's data (200).
pub(crate) async fn read_as_member(app: &TestApp, path: &str) -> Value {
    let token = app.token(13, &["PLAN_READ"]);
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let (status, body) = crate::helpers::read(response).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// `GET /executions/{id}`: the execution.
pub(crate) async fn execution(app: &TestApp, id: i64) -> Value {
    read_as_member(app, &format!("/executions/{id}")).await
}

/// Waits (up to `within`) until the execution is `FINISHED`; returns it.
pub(crate) async fn wait_finished(app: &TestApp, id: i64, within: Duration) -> Value {
    let started = Instant::now();
    loop {
        let now = execution(app, id).await;
        if now["status"] == "FINISHED" {
            return now;
        }
        assert!(
            started.elapsed() < within,
            "execution {id} never finished: {now}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn at(value: &Value) -> DateTime<Utc> {
    value.as_str().unwrap().parse().unwrap()
}

/// A result body for the pair `q` (an item of a run's `queued`) of `execution_id`.
pub(crate) fn result(execution_id: i64, q: &Value, status: &str, at: DateTime<Utc>) -> Value {
    json!({"messageId": q["messageId"], "executionId": execution_id,
           "scenarioId": q["scenarioId"], "environmentId": q["environmentId"],
           "attempt": q["attempt"], "status": status,
           "at": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)})
}

pub(crate) async fn cancel(app: &TestApp, path: &str, user: i64) -> (u16, Value) {
    let token = app.token(user, &["PLAN_RUN"]);
    app.post(path, Some(&token), &json!({})).await
}

pub(crate) fn schema(path: &str) -> jsonschema::Validator {
    let text = std::fs::read_to_string(path).unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).expect("a JSON Schema")
}

#[test]
fn asyncapi_names_the_new_events_and_the_watch_queue_and_their_examples_satisfy_the_schemas() {
    let text = std::fs::read_to_string("docs/asyncapi.yaml").unwrap();
    let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
    let config = plan_queue::config::Config::from_lookup(|_| None).unwrap();
    let watch = &doc["channels"]["deadLetterWatch"]["bindings"]["amqp"]["queue"];
    assert_eq!(watch["name"], config.amqp.dead_letter_watch_name().as_str());
    for (message, file, kind) in [
        (
            "executionCancelled",
            "execution-cancelled.schema.json",
            plan_queue::db::models::MESSAGE_EXECUTION_CANCELLED,
        ),
        (
            "resultRejected",
            "result-rejected.schema.json",
            plan_queue::db::models::MESSAGE_RESULT_REJECTED,
        ),
    ] {
        let message = &doc["components"]["messages"][message];
        assert_eq!(message["payload"]["schema"]["$ref"], format!("./{file}"));
        assert_eq!(message["bindings"]["amqp"]["messageType"], kind);
        let example = &message["examples"][0]["payload"];
        assert!(
            schema(&format!("docs/{file}")).is_valid(example),
            "{example}"
        );
    }
}

#[tokio::test]
async fn a_pair_whose_runner_never_comes_ends_at_its_queue_deadline_and_the_plan_runs_again() {
    let app = spawn_app_with(|c| {
        c.deadlines.queue_timeout_secs = 5;
        c.deadlines.sweep_interval = Duration::from_millis(200);
    })
    .await;
    let events = EventTap::bind(&app, "execution.finished.#").await;
    let data = run(&app, 614).await;
    let id = data["executionId"].as_i64().unwrap();
    app.dispatch_all_pending().await;

    let done = wait_finished(&app, id, Duration::from_secs(20)).await;
    let deadline = at(&done["requestedAt"]) + chrono::Duration::seconds(5);
    let pairs = done["pairs"].as_array().unwrap();
    assert_eq!(pairs.len(), 12);
    for pair in pairs {
        assert_eq!(
            (pair["status"].as_str(), pair["reason"].as_str()),
            (Some("ABORTED"), Some("QUEUE_TIMEOUT")),
            "{pair}"
        );
        let late = at(&pair["finishedAt"]) - deadline;
        assert!(
            late >= chrono::Duration::zero() && late < chrono::Duration::seconds(10),
            "ended {late} after its deadline"
        );
    }
    assert_eq!(done["counts"]["ABORTED"], 12);
    let finished = events.take(Duration::from_secs(3)).await;
    let ours: Vec<_> = finished
        .iter()
        .filter(|(_, e)| e["executionId"] == id)
        .collect();
    assert_eq!(ours.len(), 1, "{finished:?}");
    assert_eq!(ours[0].0, "execution.finished.APPIUM");
    assert_eq!(ours[0].1["counts"]["ABORTED"], 12);

    let token = app.token(13, &["PLAN_RUN"]);
    let (status, body) = app
        .post(
            "/queue/run",
            Some(&token),
            &json!({"planId": 614, "userId": 13}),
        )
        .await;
    assert_eq!(status, 200, "a new run is accepted without force: {body}");
    let results = app.get("/metrics").await.1;
    assert!(
        results
            .lines()
            .any(|l| l == "plan_queue_pairs_ended_total{reason=\"QUEUE_TIMEOUT\"} 12"),
        "{results}"
    );
}

#[tokio::test]
async fn a_running_pair_that_hangs_ends_at_its_run_deadline_and_its_later_result_is_late() {
    let app = spawn_app_with(|c| {
        c.deadlines.run_timeout_secs = 5;
        c.deadlines.sweep_interval = Duration::from_millis(200);
    })
    .await;
    wait_consumer(&app).await;
    let data = run(&app, 615).await;
    let id = data["executionId"].as_i64().unwrap();
    let pair = &data["queued"][0];
    publish(&app, &[result(id, pair, "RUNNING", Utc::now())]).await;

    let done = wait_finished(&app, id, Duration::from_secs(20)).await;
    let ended = &done["pairs"][0];
    assert_eq!(ended["status"], "ABORTED");
    assert_eq!(ended["reason"], "RUN_TIMEOUT");
    let late = at(&ended["finishedAt"]) - (at(&ended["startedAt"]) + chrono::Duration::seconds(5));
    assert!(late >= chrono::Duration::zero() && late < chrono::Duration::seconds(10));

    publish(&app, &[result(id, pair, "PASSED", Utc::now())]).await;
    wait_metric(&app, "plan_queue_results_late_total 1").await;
    let after = execution(&app, id).await;
    assert_eq!(after["pairs"][0], *ended, "the late PASSED changed nothing");
    let dead = app
        .count_sql(&format!(
            "SELECT count(*) AS n FROM dispatches WHERE message_type = 'result.rejected' \
              AND execution_id = {id}"
        ))
        .await;
    assert_eq!(dead, 0, "the late result was acknowledged, not rejected");
    let results = read_as_member(&app, "/plans/615/results").await;
    assert_eq!(results["pairs"][0]["reason"], "RUN_TIMEOUT");
}

#[tokio::test]
async fn a_run_message_rejected_past_the_delivery_limit_ends_its_pair_dead_lettered() {
    let app = spawn_app_with(|c| c.amqp.delivery_limit = 1).await;
    let data = run(&app, 615).await;
    let id = data["executionId"].as_i64().unwrap();
    app.dispatch_all_pending().await;
    // a runner that gives the message back until the broker dead-letters it
    let (_connection, channel) = broker_channel().await;
    let queue = app.config.amqp.queue_name("APPIUM");
    let started = Instant::now();
    let mut deliveries = 0;
    while execution(&app, id).await["status"] != "FINISHED" {
        if let Some(m) = channel
            .basic_get(queue.as_str().into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            deliveries += 1;
            m.delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(deliveries >= 2, "{deliveries}");
    let pair = &execution(&app, id).await["pairs"][0];
    assert_eq!(pair["status"], "ERROR");
    assert_eq!(pair["reason"], "DEAD_LETTERED");
    assert_eq!(pair["detail"], "delivery_limit");
    let kept = channel
        .basic_get(
            app.config.amqp.dead_letter_name().as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
        .expect("the operators' dead-letter queue still holds the message");
    let body: Value = serde_json::from_slice(&kept.delivery.data).unwrap();
    assert_eq!(body["messageId"], data["queued"][0]["messageId"]);
}

#[tokio::test]
async fn a_cancel_ends_queued_and_running_pairs_once_and_results_after_it_change_nothing() {
    let app = spawn_app_with(|_| {}).await;
    wait_consumer(&app).await;
    let events = EventTap::bind(&app, "execution.#").await;
    let data = run(&app, 614).await;
    let id = data["executionId"].as_i64().unwrap();
    app.dispatch_all_pending().await;
    let running = &data["queued"][0];
    publish(&app, &[result(id, running, "RUNNING", Utc::now())]).await;
    let started = Instant::now();
    while execution(&app, id).await["pairs"][0]["status"] != "RUNNING" {
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let path = format!("/executions/{id}/cancel");
    let (status, body) = cancel(&app, &path, 55).await;
    assert_eq!((status, code(&body)), (404, 1017), "a foreign user: {body}");
    assert_eq!(message(&body), format!("Execution {id} not found"));
    let (status, body) = cancel(&app, "/plans/614/cancel", 55).await;
    assert_eq!((status, code(&body)), (404, 1000), "{body}");

    let (status, body) = cancel(&app, &path, 13).await;
    assert_eq!(status, 200, "{body}");
    let cancelled = body["data"]["cancelled"].as_array().unwrap();
    assert_eq!(cancelled.len(), 12);
    assert_eq!(cancelled[0]["previousStatus"], "RUNNING");
    assert!(cancelled[1..]
        .iter()
        .all(|p| p["previousStatus"] == "QUEUED"));
    assert_eq!(
        body["data"]["executions"],
        json!([{"executionId": id, "status": "FINISHED"}])
    );
    let after = execution(&app, id).await;
    assert!(after["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["status"] == "ABORTED" && p["reason"] == "CANCELLED"));

    let (status, body) = cancel(&app, &path, 13).await;
    assert_eq!((status, code(&body)), (409, 1020), "{body}");
    assert_eq!(
        message(&body),
        format!("Execution {id} is already finished")
    );
    let (status, body) = cancel(&app, "/plans/614/cancel", 13).await;
    assert_eq!((status, code(&body)), (409, 1020), "{body}");
    assert_eq!(message(&body), "Plan 614 has nothing in flight");

    publish(&app, &[result(id, running, "PASSED", Utc::now())]).await;
    wait_metric(&app, "plan_queue_results_late_total 1").await;
    assert_eq!(
        execution(&app, id).await,
        after,
        "a result after the cancel"
    );

    app.dispatch_all_pending().await;
    let seen = events.take(Duration::from_secs(2)).await;
    let kinds: Vec<&str> = seen.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(
        kinds,
        ["execution.finished.APPIUM", "execution.cancelled.APPIUM"],
        "{seen:?}"
    );
    let event = &seen[1].1;
    assert!(
        schema("docs/execution-cancelled.schema.json").is_valid(event),
        "{event}"
    );
    assert_eq!(event["executionId"], id);
    assert_eq!(event["cancelledBy"], 13);
    assert_eq!(event["pairs"].as_array().unwrap().len(), 12);
    assert_eq!(event["pairs"][0]["messageId"], running["messageId"]);
}

#[tokio::test]
async fn a_plan_cancel_ends_every_execution_of_the_plan() {
    let app = spawn_app_with(|_| {}).await;
    let first = run(&app, 615).await["executionId"].as_i64().unwrap();
    let second = run(&app, 615).await["executionId"].as_i64().unwrap();
    let (status, body) = cancel(&app, "/plans/615/cancel", 13).await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<i64> = body["data"]["cancelled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["executionId"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [first, second]);
    let (status, body) = app
        .post_raw(&format!("/executions/{first}/cancel"))
        .bearer_auth(app.token(13, &["PLAN_READ"]))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 403, "PLAN_READ may not cancel");
    drop(body);
}

#[tokio::test]
async fn two_instances_on_one_database_end_each_deadline_pair_once() {
    let app = spawn_app_with(|c| {
        c.deadlines.queue_timeout_secs = 5;
        c.deadlines.sweep_interval = Duration::from_millis(100);
    })
    .await;
    let (mut other, _) = app
        .spawn_binary(&[
            ("QUEUE_TIMEOUT_SECS", "5".to_owned()),
            ("DEADLINE_SWEEP_MS", "100".to_owned()),
        ])
        .await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(run(&app, 614).await["executionId"].as_i64().unwrap());
    }
    for id in &ids {
        wait_finished(&app, *id, Duration::from_secs(30)).await;
    }
    let _ = other.kill();
    let _ = other.wait();
    for id in ids {
        let events = app
            .count_sql(&format!(
                "SELECT count(*) AS n FROM dispatches \
                  WHERE message_type = 'execution.finished' AND execution_id = {id}"
            ))
            .await;
        assert_eq!(events, 1, "execution {id}");
        let open = app
            .count_sql(&format!(
                "SELECT open_pairs::bigint AS n FROM executions WHERE id = {id}"
            ))
            .await;
        assert_eq!(open, 0);
        let ended = app
            .count_sql(&format!(
                "SELECT count(*) AS n FROM execution_pairs \
                  WHERE execution_id = {id} AND reason = 'QUEUE_TIMEOUT'"
            ))
            .await;
        assert_eq!(ended, 12);
    }
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> String {
    let found = std::process::Command::new("pgrep")
        .args(["-af", marker])
        .output()
        .expect("pgrep runs");
    String::from_utf8_lossy(&found.stdout)
        .lines()
        .filter(|l| !l.contains("pgrep") && !l.contains("plan-queue"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn wait_gone(marker: &str, within: Duration) {
    let started = Instant::now();
    loop {
        let left = processes_with(marker);
        if left.is_empty() {
            return;
        }
        assert!(started.elapsed() < within, "still running: {left}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A runner process, killed when the test ends (also when it fails).
struct Runner(std::process::Child);

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the first pair of execution `id` is `RUNNING`.
async fn wait_first_running(app: &TestApp, id: i64) {
    let started = Instant::now();
    while execution(app, id).await["pairs"][0]["status"] != "RUNNING" {
        assert!(started.elapsed() < Duration::from_secs(20), "never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A `sleep` no other process runs: its command line is the marker.
fn unique_sleep() -> String {
    format!("sleep 3000.{}", rand_digits())
}

fn rand_digits() -> u64 {
    u64::from(uuid::Uuid::new_v4().as_fields().0) % 1_000_000_000
}

#[tokio::test]
async fn a_cancel_kills_the_running_command_and_the_runner_never_starts_the_queued_pairs() {
    let app = spawn_app_with(|_| {}).await;
    wait_consumer(&app).await;
    let marker = unique_sleep();
    let _runner = Runner(crate::runner::start_runner(
        &app,
        &format!("{marker}; echo done"),
    ));
    let id = run(&app, 614).await["executionId"].as_i64().unwrap();
    wait_first_running(&app, id).await;
    assert!(!processes_with(&marker).is_empty(), "the command runs");

    let (status, body) = cancel(&app, &format!("/executions/{id}/cancel"), 13).await;
    assert_eq!(status, 200, "{body}");
    wait_gone(&marker, Duration::from_secs(10)).await;
    // the eleven queued messages are taken and acknowledged without running
    let started = Instant::now();
    loop {
        let (_connection, channel) = broker_channel().await;
        let queue = channel
            .queue_declare(
                app.config.amqp.queue_name("APPIUM").as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        if queue.message_count() == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "not consumed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics = app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "plan_queue_results_late_total 0"),
        "the runner reported a cancelled pair: {metrics}"
    );
}

#[tokio::test]
async fn a_sigkilled_runner_leaves_no_command_behind() {
    let app = spawn_app_with(|_| {}).await;
    wait_consumer(&app).await;
    let marker = unique_sleep();
    let mut runner = Runner(crate::runner::start_runner(&app, &format!("exec {marker}")));
    let id = run(&app, 615).await["executionId"].as_i64().unwrap();
    wait_first_running(&app, id).await;
    assert!(!processes_with(&marker).is_empty(), "the command runs");
    runner.0.kill().unwrap();
    runner.0.wait().unwrap();
    wait_gone(&marker, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_runner_without_its_queue_says_what_to_check_and_stops_on_sigterm_while_it_waits() {
    let app = spawn_app_with(|_| {}).await;
    let c = &app.config;
    let mut runner = Runner(
        std::process::Command::new(env!("CARGO_BIN_EXE_plan-queue"))
            .args(["runner", "--framework-type", "APPIUM"])
            .env("AMQP_URL", crate::helpers::AMQP_URL)
            .env("AMQP_EXCHANGE", format!("{}-not-deployed", c.amqp.exchange))
            .env("FRAMEWORK_TYPES", c.amqp.framework_types.join(","))
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start plan-queue runner"),
    );
    // past the first failures, into a back-off of seconds
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = libc::pid_t::try_from(runner.0.id()).unwrap();
    // SAFETY: signals the child this test started.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let started = Instant::now();
    let status = loop {
        if let Some(status) = runner.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the runner ignored SIGTERM during its back-off"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut runner.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(stderr.contains("AMQP_EXCHANGE"), "{stderr}");
    assert!(stderr.contains("plan-queue serve"), "{stderr}");
}

#[tokio::test]
async fn a_plans_own_run_timeout_wins_over_run_timeout_secs() {
    let app = spawn_app_with(|c| c.deadlines.sweep_interval = Duration::from_millis(200)).await;
    app.sql("UPDATE plans SET run_timeout_secs = 5 WHERE id = 615")
        .await;
    wait_consumer(&app).await;
    let data = run(&app, 615).await;
    let id = data["executionId"].as_i64().unwrap();
    publish(
        &app,
        &[result(id, &data["queued"][0], "RUNNING", Utc::now())],
    )
    .await;
    let done = wait_finished(&app, id, Duration::from_secs(20)).await;
    assert_eq!(
        done["pairs"][0]["reason"], "RUN_TIMEOUT",
        "RUN_TIMEOUT_SECS is 7200"
    );
}
