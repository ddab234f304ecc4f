//! Every pair ends (contract, sections 14–17): `expiresAt` in the run and
//! rerun messages, queue and run deadlines enforced by the sweep (a plan's
//! own `runTimeoutSecs` from a fixture), cancels, dead-lettered run messages,
//! late results; two instances on one database ending each pair once, and a
//! SIGKILL while deadlines pass: the pairs still end, once, after the restart.

use crate::helpers::{broker_channel, code, message, spawn_app_with, TestApp};
use crate::results::{publish, wait_consumer, wait_metric};
use chrono::{DateTime, SubsecRound, Utc};
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

/// `expiresAt` of a published message minus its `requestedAt`.
fn time_to_expiry(body: &Value) -> chrono::Duration {
    let expires = body["expiresAt"].as_str().expect("expiresAt");
    assert!(expires.ends_with('Z') && expires.len() == 20, "{expires}");
    at(&body["expiresAt"]) - at(&body["requestedAt"])
}

#[tokio::test]
async fn every_run_and_rerun_message_expires_its_queue_timeout_after_its_request() {
    let app = spawn_app_with(|c| c.deadlines.queue_timeout_secs = 600).await;
    let data = run(&app, 614).await;
    let id = data["executionId"].as_i64().unwrap();
    let runs = app.consume("APPIUM", 12, Duration::from_secs(10)).await;
    assert_eq!(runs.len(), 12);
    let requested = at(&execution(&app, id).await["requestedAt"]).trunc_subsecs(0);
    for m in &runs {
        assert_eq!(m.kind.as_deref(), Some("scenario.run"));
        assert_eq!(at(&m.body["requestedAt"]), requested, "{}", m.body);
        assert_eq!(time_to_expiry(&m.body), chrono::Duration::seconds(600));
    }

    let (status, body) = app
        .rerun(
            &json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
            "scenarioEnvironmentPairs": [{"scenarioId": 111, "environmentId": 222}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let reruns = app.consume("APPIUM", 1, Duration::from_secs(10)).await;
    assert_eq!(reruns.len(), 1);
    assert_eq!(reruns[0].kind.as_deref(), Some("scenario.rerun"));
    assert_eq!(reruns[0].body["attempt"], 2);
    assert_eq!(
        time_to_expiry(&reruns[0].body),
        chrono::Duration::seconds(600)
    );
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
    assert_each_finished_once(&app, &ids).await;
    for id in ids {
        let ended = app
            .count_sql(&format!(
                "SELECT count(*) AS n FROM execution_pairs \
                  WHERE execution_id = {id} AND reason = 'QUEUE_TIMEOUT'"
            ))
            .await;
        assert_eq!(ended, 12);
    }
}

/// `plan-queue serve` as a child process whose deadlines are 5 s, swept
/// every 100 ms (the in-process app's are the longest allowed, so only
/// the child ends pairs).
async fn spawn_sweeper(app: &TestApp) -> std::process::Child {
    app.spawn_binary(&[
        ("QUEUE_TIMEOUT_SECS", "5".to_owned()),
        ("RUN_TIMEOUT_SECS", "5".to_owned()),
        ("DEADLINE_SWEEP_MS", "100".to_owned()),
    ])
    .await
    .0
}

#[tokio::test]
async fn pairs_whose_deadlines_pass_while_plan_queue_is_killed_end_once_after_the_restart() {
    let app = spawn_app_with(|c| {
        c.deadlines.queue_timeout_secs = 2_592_000;
        c.deadlines.run_timeout_secs = 604_800;
    })
    .await;
    wait_consumer(&app).await;
    let mut first = Child(spawn_sweeper(&app).await);
    // eight runs 700 ms apart, the first pair of each reported RUNNING:
    // their queue and run deadlines pass over some 6 seconds
    let mut ids = Vec::new();
    for _ in 0..8 {
        let data = run(&app, 614).await;
        let id = data["executionId"].as_i64().unwrap();
        publish(
            &app,
            &[result(id, &data["queued"][0], "RUNNING", Utc::now())],
        )
        .await;
        ids.push(id);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let last_deadline = Instant::now() + Duration::from_secs(5);
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let ended = format!(
        "SELECT count(*) AS n FROM execution_pairs \
          WHERE execution_id IN ({list}) AND reason IS NOT NULL"
    );
    // SIGKILL once the first pairs have ended, the others still in flight
    let started = Instant::now();
    while app.count_sql(&ended).await == 0 {
        assert!(started.elapsed() < Duration::from_secs(20), "nothing ended");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let before = app.count_sql(&ended).await;
    assert!(
        before > 0 && before < 96,
        "killed in the middle: {before} of 96 ended"
    );
    app.sql(&format!(
        "CREATE TABLE ended_before_restart AS SELECT * FROM execution_pairs \
          WHERE execution_id IN ({list}) AND reason IS NOT NULL"
    ))
    .await;

    // every deadline passes while nothing sweeps with 5 s deadlines
    tokio::time::sleep_until((last_deadline + Duration::from_secs(1)).into()).await;
    assert_eq!(
        app.count_sql(&ended).await,
        before,
        "nothing ends while it is down"
    );

    let _second = Child(spawn_sweeper(&app).await);
    let restarted = Utc::now();
    for id in &ids {
        let done = wait_finished(&app, *id, Duration::from_secs(20)).await;
        assert_eq!(done["pairs"][0]["reason"], "RUN_TIMEOUT", "{done}");
        assert!(
            done["pairs"].as_array().unwrap()[1..]
                .iter()
                .all(|p| p["status"] == "ABORTED" && p["reason"] == "QUEUE_TIMEOUT"),
            "{done}"
        );
    }
    assert_eq!(app.count_sql(&ended).await, 96);
    let changed = app
        .count_sql(
            "SELECT count(*) AS n FROM ended_before_restart b \
               JOIN execution_pairs p USING (execution_id, scenario_id, environment_id) \
              WHERE (p.status, p.reason, p.finished_at) IS DISTINCT FROM \
                    (b.status, b.reason, b.finished_at)",
        )
        .await;
    assert_eq!(changed, 0, "a pair ended before the kill was ended again");
    let late = app
        .count_sql(&format!(
            "SELECT count(*) AS n FROM execution_pairs p \
              WHERE p.execution_id IN ({list}) \
                AND NOT EXISTS (SELECT 1 FROM ended_before_restart b \
                                 WHERE (b.execution_id, b.scenario_id, b.environment_id) \
                                     = (p.execution_id, p.scenario_id, p.environment_id)) \
                AND NOT (p.finished_at >= '{}'::timestamptz - interval '1 second' \
                         AND p.finished_at < '{}'::timestamptz + interval '10 seconds')",
            restarted.to_rfc3339(),
            restarted.to_rfc3339()
        ))
        .await;
    assert_eq!(late, 0, "the others end within 10 s of the restart");
    assert_each_finished_once(&app, &ids).await;
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

/// A child process (a runner, a `plan-queue serve`), killed when the test
/// ends (also when it fails).
struct Child(std::process::Child);

impl Drop for Child {
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

/// A file each start of a runner's command appends its message id to.
struct Started(std::path::PathBuf);

impl Started {
    fn new() -> Self {
        Started(std::env::temp_dir().join(format!("pq-started-{}", uuid::Uuid::new_v4())))
    }

    /// The shell command that records a start.
    fn command(&self) -> String {
        format!("echo \"$PQ_MESSAGE_ID\" >> {}", self.0.display())
    }

    /// The message ids whose command started, in order.
    fn take(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        text.lines().map(str::to_owned).collect()
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Waits until the APPIUM queue has a consumer and no ready message, then
/// a second more (for what the consumer holds); asserts that the runner
/// reported nothing (no result arrived for an ended pair).
async fn wait_consumed(app: &TestApp) {
    let queue = app.config.amqp.queue_name("APPIUM");
    let started = Instant::now();
    loop {
        let (_connection, channel) = broker_channel().await;
        let declared = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        if declared.message_count() == 0 && declared.consumer_count() > 0 {
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
        "the runner reported a pair that had ended: {metrics}"
    );
}

/// Each of `ids` has one `execution.finished` event and no open pair.
async fn assert_each_finished_once(app: &TestApp, ids: &[i64]) {
    for id in ids {
        let events = app
            .count_sql(&format!(
                "SELECT count(*) AS n FROM dispatches \
                  WHERE message_type = 'execution.finished' AND execution_id = {id}"
            ))
            .await;
        assert_eq!(events, 1, "execution {id}: one execution.finished");
        let open = app
            .count_sql(&format!(
                "SELECT open_pairs::bigint AS n FROM executions WHERE id = {id}"
            ))
            .await;
        assert_eq!(open, 0, "execution {id}: each pair closed once");
    }
}

#[tokio::test]
async fn a_cancel_kills_the_running_command_and_the_runner_never_starts_the_queued_pairs() {
    let app = spawn_app_with(|_| {}).await;
    wait_consumer(&app).await;
    let marker = unique_sleep();
    let started = Started::new();
    let _runner = Child(crate::runner::start_runner(
        &app,
        &format!("{}; {marker}; echo done", started.command()),
    ));
    let data = run(&app, 614).await;
    let id = data["executionId"].as_i64().unwrap();
    wait_first_running(&app, id).await;
    assert!(!processes_with(&marker).is_empty(), "the command runs");

    let (status, body) = cancel(&app, &format!("/executions/{id}/cancel"), 13).await;
    assert_eq!(status, 200, "{body}");
    wait_gone(&marker, Duration::from_secs(10)).await;
    // the eleven queued messages are taken and acknowledged without running
    wait_consumed(&app).await;
    assert_eq!(
        started.take(),
        [data["queued"][0]["messageId"].as_str().unwrap()],
        "only the first pair's command ever started"
    );
}

#[tokio::test]
async fn a_sigkilled_runner_leaves_no_command_behind() {
    let app = spawn_app_with(|_| {}).await;
    wait_consumer(&app).await;
    let marker = unique_sleep();
    let mut runner = Child(crate::runner::start_runner(&app, &format!("exec {marker}")));
    let id = run(&app, 615).await["executionId"].as_i64().unwrap();
    wait_first_running(&app, id).await;
    assert!(!processes_with(&marker).is_empty(), "the command runs");
    runner.0.kill().unwrap();
    runner.0.wait().unwrap();
    wait_gone(&marker, Duration::from_secs(5)).await;
}

/// Exchanges a test's runner declared on the shared broker, deleted when the
/// test ends (also when it fails), as `TestApp` deletes its own.
struct DeclaredExchanges(Vec<String>);

impl Drop for DeclaredExchanges {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.0);
        // a thread of its own: Drop runs inside the test's runtime
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (_connection, channel) = broker_channel().await;
                for name in &names {
                    let _ = channel
                        .exchange_delete(name.as_str().into(), Default::default())
                        .await;
                }
            });
        })
        .join();
    }
}

#[tokio::test]
async fn a_runner_without_its_queue_says_what_to_check_and_stops_on_sigterm_while_it_waits() {
    let app = spawn_app_with(|_| {}).await;
    let c = &app.config;
    let exchange = format!("{}-not-deployed", c.amqp.exchange);
    // the runner declares its results and events exchanges before it looks
    // for its queue
    let _declared = DeclaredExchanges(vec![
        format!("{exchange}.results"),
        format!("{exchange}.events"),
    ]);
    let mut runner = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_plan-queue"))
            .args(["runner", "--framework-type", "APPIUM"])
            .env("AMQP_URL", crate::helpers::AMQP_URL)
            .env("AMQP_EXCHANGE", &exchange)
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

/// `plan-queue seed --file` of plan 615 with `runTimeoutSecs` given as
/// `value` (JSON), on the test's database: the process's output.
async fn seed_plan_615(app: &TestApp, value: &str) -> std::process::Output {
    let path = std::env::temp_dir().join(format!("pq-fixture-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        format!(
            r#"{{"plans": [{{"id": 615, "projectId": 7, "name": "Nightly regression (never run)",
                           "runTimeoutSecs": {value}, "scenarioIds": [111], "environmentIds": [222]}}]}}"#
        ),
    )
    .unwrap();
    let url = app.db_url.clone();
    let output = tokio::task::spawn_blocking(move || {
        let output = crate::helpers::plan_queue(
            &["seed", "--file", path.to_str().unwrap()],
            &[("DATABASE_URL", &url)],
        );
        std::fs::remove_file(&path).unwrap();
        output
    })
    .await
    .unwrap();
    output
}

#[tokio::test]
async fn a_fixture_plans_run_timeout_is_stored_and_wins_over_run_timeout_secs() {
    let app = spawn_app_with(|c| c.deadlines.sweep_interval = Duration::from_millis(200)).await;
    let stored = "SELECT coalesce(run_timeout_secs, 0)::bigint AS n FROM plans WHERE id = 615";
    for (bad, said) in [
        ("4", "plan 615: runTimeoutSecs must be between 5 and 604800"),
        (
            "604801",
            "plan 615: runTimeoutSecs must be between 5 and 604800",
        ),
        (
            "\"60\"",
            "plan 615: plans[0].runTimeoutSecs: invalid type: string",
        ),
        (
            "60.5",
            "plan 615: plans[0].runTimeoutSecs: invalid type: floating point",
        ),
    ] {
        let output = seed_plan_615(&app, bad).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "runTimeoutSecs {bad} was accepted"
        );
        assert!(stderr.contains(said), "{bad}: {stderr}");
        assert_eq!(app.count_sql(stored).await, 0, "{bad} changed the plan");
    }

    let output = seed_plan_615(&app, "5").await;
    assert!(output.status.success(), "{output:?}");
    assert_eq!(app.count_sql(stored).await, 5);

    wait_consumer(&app).await;
    let own = run(&app, 615).await;
    let other = run(&app, 614).await;
    let (own_id, other_id) = (
        own["executionId"].as_i64().unwrap(),
        other["executionId"].as_i64().unwrap(),
    );
    publish(
        &app,
        &[
            result(own_id, &own["queued"][0], "RUNNING", Utc::now()),
            result(other_id, &other["queued"][0], "RUNNING", Utc::now()),
        ],
    )
    .await;
    let done = wait_finished(&app, own_id, Duration::from_secs(20)).await;
    let ended = &done["pairs"][0];
    assert_eq!(ended["reason"], "RUN_TIMEOUT", "RUN_TIMEOUT_SECS is 7200");
    let late = at(&ended["finishedAt"]) - (at(&ended["startedAt"]) + chrono::Duration::seconds(5));
    assert!(
        late >= chrono::Duration::zero() && late < chrono::Duration::seconds(10),
        "ended {late} after the plan's deadline"
    );
    let still = &execution(&app, other_id).await["pairs"][0];
    assert_eq!(
        still["status"], "RUNNING",
        "plan 614 has no runTimeoutSecs: RUN_TIMEOUT_SECS holds"
    );
}

#[tokio::test]
async fn a_runner_that_comes_after_expires_at_acknowledges_the_message_without_running_it() {
    let app = spawn_app_with(|c| {
        c.deadlines.queue_timeout_secs = 5;
        c.deadlines.sweep_interval = Duration::from_millis(200);
    })
    .await;
    wait_consumer(&app).await;
    let id = run(&app, 615).await["executionId"].as_i64().unwrap();
    app.dispatch_all_pending().await;
    let done = wait_finished(&app, id, Duration::from_secs(20)).await;
    assert_eq!(done["pairs"][0]["reason"], "QUEUE_TIMEOUT");

    let started = Started::new();
    let _runner = Child(crate::runner::start_runner(&app, &started.command()));
    wait_consumed(&app).await;
    assert!(started.take().is_empty(), "the runner ran an expired pair");
}

#[tokio::test]
async fn a_runner_stopped_while_its_command_runs_reports_nothing_and_the_pair_runs_again() {
    let app = spawn_app_with(|_| {}).await;
    wait_consumer(&app).await;
    let id = run(&app, 614).await["executionId"].as_i64().unwrap();
    let marker = unique_sleep();
    let mut runner = Child(crate::runner::start_runner(&app, &format!("exec {marker}")));
    wait_first_running(&app, id).await;
    // SAFETY: signals the child this test started.
    unsafe {
        libc::kill(runner.0.id() as libc::pid_t, libc::SIGTERM);
    }
    let started = Instant::now();
    while runner.0.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the runner ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_gone(&marker, Duration::from_secs(5)).await;
    // a stop is not a verdict: the killed command's pair stays RUNNING (its
    // message goes back to the queue), none turned FAILED
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pairs = execution(&app, id).await["pairs"].clone();
    let statuses: Vec<&str> = pairs
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses[0], "RUNNING", "{pairs}");
    assert!(
        statuses.iter().all(|s| *s == "RUNNING" || *s == "QUEUED"),
        "a stopped runner decided a result: {statuses:?}"
    );
    // the next runner gets the message again and its verdict counts
    let _next = Child(crate::runner::start_runner(&app, "true"));
    let finished = wait_finished(&app, id, Duration::from_secs(30)).await;
    assert_eq!(finished["counts"]["PASSED"], 12, "{finished}");
}

#[tokio::test]
async fn a_cancel_without_a_body_is_accepted_whatever_its_content_type() {
    let app = spawn_app_with(|_| {}).await;
    let id = run(&app, 614).await["executionId"].as_i64().unwrap();
    let token = app.token(13, &["PLAN_RUN"]);
    // what `curl -X POST -d ''` sends: no body, a form content type
    let response = app
        .client
        .post(format!("{}/executions/{id}/cancel", app.address))
        .bearer_auth(&token)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    let (status, body) = crate::helpers::read(response).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["cancelled"].as_array().unwrap().len(), 12);
    // a body that is there must still be JSON
    let response = app
        .client
        .post(format!("{}/plans/614/cancel", app.address))
        .bearer_auth(&token)
        .header("Content-Type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (status, body) = crate::helpers::read(response).await;
    assert_eq!((status, code(&body)), (415, 1001), "{body}");
}

#[tokio::test]
async fn a_runner_stopped_by_sigterm_logs_nothing_at_error() {
    use std::io::{BufRead, BufReader, Read};
    let app = spawn_app_with(|_| {}).await;
    wait_consumer(&app).await;
    // the run queue exists (the relay declares it as it connects), so the
    // runner's first session does not end on NOT_FOUND
    let queue = app.config.amqp.queue_name("APPIUM");
    let started = Instant::now();
    loop {
        let (_connection, channel) = broker_channel().await;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let found = channel
            .queue_declare(queue.as_str().into(), passive, FieldTable::default())
            .await;
        if found.is_ok() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no {queue}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let c = &app.config;
    let mut runner = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_plan-queue"))
            .args(["runner", "--framework-type", "APPIUM"])
            .env("AMQP_URL", crate::helpers::AMQP_URL)
            .env("AMQP_EXCHANGE", &c.amqp.exchange)
            .env("FRAMEWORK_TYPES", c.amqp.framework_types.join(","))
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start plan-queue runner"),
    );
    let mut stderr = BufReader::new(runner.0.stderr.take().unwrap());
    let mut log = String::new();
    // its session is up: publisher, cancel listener and consumer channels open
    while !log.contains("runner: consuming") {
        assert!(stderr.read_line(&mut log).unwrap() > 0, "{log}");
    }
    // SAFETY: signals the child this test started.
    unsafe {
        libc::kill(runner.0.id() as libc::pid_t, libc::SIGTERM);
    }
    stderr.read_to_string(&mut log).unwrap();
    assert!(log.contains("runner stopped"), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "a clean stop logged: {errors:#?}");
}
