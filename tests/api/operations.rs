//! What operators rely on: probes, metrics, request tracing from the HTTP
//! call to the relay's log lines, and the smoke command.

use crate::helpers::{spawn_app, spawn_app_with, DEAD_AMQP_URL};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn envelope(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

#[tokio::test]
async fn liveness_and_health_answer_up() {
    let app = spawn_app_with(|c| c.amqp.url = DEAD_AMQP_URL.to_owned()).await;
    for path in ["/health", "/health/live"] {
        let (status, text) = app.get(path).await;
        assert_eq!(status, 200, "{path}: {text}");
        assert_eq!(envelope(&text)["data"]["status"], "UP", "{path}");
    }
}

#[tokio::test]
async fn readiness_answers_200_with_database_broker_and_an_empty_outbox() {
    let app = spawn_app().await;
    app.wait_ready(&app.address, 200).await;
    let (_, text) = app.get("/health/ready").await;
    let body = envelope(&text);
    assert_eq!(body["result"]["code"], 0);
    assert_eq!(body["data"]["database"], true);
    assert_eq!(body["data"]["broker"], true);
    assert_eq!(body["data"]["pending"], 0);
}

#[tokio::test]
async fn readiness_names_an_unreachable_database() {
    let mut app = spawn_app().await;
    app.restart_with(|c| {
        c.database.url = "postgres://postgres@127.0.0.1:1/nowhere".to_owned();
        c.database.checkout_timeout = Duration::from_millis(300);
    })
    .await;
    let (status, text) = app.get("/health/ready").await;
    assert_eq!(status, 503, "{text}");
    let body = envelope(&text);
    assert_eq!(body["result"]["code"], 1011);
    assert!(
        body["result"]["message"]
            .as_str()
            .unwrap()
            .contains("database"),
        "{body}"
    );
    assert_eq!(body["data"]["database"], false);
}

#[tokio::test]
async fn readiness_names_an_outbox_backlog_older_than_the_threshold() {
    let app = spawn_app_with(|c| {
        c.amqp.url = DEAD_AMQP_URL.to_owned();
        c.relay.pending_age_threshold = Duration::from_millis(100);
    })
    .await;
    let (status, body) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111}))
        .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, text) = app.get("/health/ready").await;
    assert_eq!(status, 503, "{text}");
    let message = envelope(&text)["result"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(message, "Service unavailable: broker, outbox backlog");
    assert!(envelope(&text)["data"]["oldestPendingMs"].as_i64().unwrap() >= 300);
}

#[tokio::test]
async fn metrics_count_requests_reruns_publishes_and_read_the_outbox() {
    let app = spawn_app().await;
    app.wait_ready(&app.address, 200).await;
    let (status, body) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 113}))
        .await;
    assert_eq!(status, 200, "{body}");
    let pairs = body["data"]["queued"].as_array().unwrap().len();
    let (_, dry) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111, "dryRun": true}))
        .await;
    assert_eq!(dry["result"]["code"], 0, "{dry}");
    assert_eq!(app.get("/no/such/path").await.0, 404);
    assert_eq!(
        app.consume("APPIUM", pairs, Duration::from_secs(10))
            .await
            .len(),
        pairs
    );

    app.wait_until_pending(0).await; // the relay marked what the queue holds
    let metrics = app.metrics().await;
    for expected in [
        r#"plan_queue_http_requests_total{method="POST",route="/queue/rerun",status="200"} 2"#
            .to_owned(),
        r#"plan_queue_http_requests_total{method="GET",route="unmatched",status="404"} 1"#
            .to_owned(),
        r#"plan_queue_http_request_duration_seconds_count{method="POST",route="/queue/rerun"} 2"#
            .to_owned(),
        // the dry run is not a rerun and queues nothing
        r#"plan_queue_reruns_accepted_total{framework_type="APPIUM"} 1"#.to_owned(),
        format!(r#"plan_queue_pairs_queued_total{{framework_type="APPIUM"}} {pairs}"#),
        format!(r#"plan_queue_publishes_total{{outcome="confirmed"}} {pairs}"#),
        "plan_queue_dispatch_pending 0".to_owned(),
        "plan_queue_dispatch_oldest_pending_age_seconds 0".to_owned(),
        "plan_queue_db_pool_connections_in_use 0".to_owned(),
        "plan_queue_db_pool_waiting 0".to_owned(),
        "plan_queue_broker_connected 1".to_owned(),
    ] {
        assert!(
            metrics.lines().any(|line| line == expected),
            "no line {expected:?} in\n{metrics}"
        );
    }
}

#[tokio::test]
async fn metrics_show_a_disconnected_broker_and_a_growing_outbox() {
    let app = spawn_app_with(|c| c.amqp.url = DEAD_AMQP_URL.to_owned()).await;
    let (status, _) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111, "environmentId": 222}))
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("plan_queue_broker_connected 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("plan_queue_dispatch_pending 1\n"),
        "{metrics}"
    );
    let age: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("plan_queue_dispatch_oldest_pending_age_seconds "))
        .expect("oldest age gauge")
        .parse()
        .unwrap();
    assert!(age >= 1.0, "{age}");
}

#[tokio::test]
async fn a_request_id_is_followed_from_the_request_log_line_to_the_relay() {
    let app = spawn_app().await;
    let request_id = format!("trace-{}", uuid::Uuid::new_v4());
    let response = app
        .post_raw("/queue/rerun")
        .bearer_auth(app.token(13, &["PLAN_RUN"]))
        .header("X-Request-Id", &request_id)
        .json(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111, "environmentId": 222}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], request_id.as_str());
    let messages = app.consume("APPIUM", 1, Duration::from_secs(10)).await;
    assert_eq!(
        messages[0].correlation_id.as_deref(),
        Some(request_id.as_str())
    );
    let message_id = messages[0].message_id.clone().unwrap();

    let tag = format!("request_id={request_id}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while crate::helpers::log_lines_with(&tag).len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = crate::helpers::log_lines_with(&tag);
    let request_line = lines
        .iter()
        .find(|l| l.contains(": POST /queue/rerun 200 "))
        .unwrap_or_else(|| panic!("no request line in {lines:?}"));
    assert!(request_line.contains("user=13 plan=614"), "{request_line}");
    assert!(request_line.contains("ms "), "latency: {request_line}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(": relay: published message") && l.contains(&message_id)),
        "no relay line for {message_id} in {lines:?}"
    );
}

/// Runs the `plan-queue` binary with `args` off the executor: exit success
/// and stdout.
async fn run_plan_queue(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = crate::helpers::plan_queue(&args, &[]);
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn smoke_passes_against_a_healthy_server_and_queues_nothing() {
    let app = spawn_app().await;
    app.wait_ready(&app.address, 200).await;
    let before = app.counts().await;
    let token = app.token(13, &["PLAN_RUN"]);
    let (ok, out) = run_plan_queue(vec![
        "smoke".into(),
        "--url".into(),
        app.address.clone(),
        "--token".into(),
        token,
    ])
    .await;
    assert!(ok, "{out}");
    for check in ["readiness", "openapi", "dry-run", "unknown-plan"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("PASS {check}: "))),
            "no PASS line for {check}: {out}"
        );
    }
    assert_eq!(app.counts().await, before, "the smoke test wrote nothing");
    assert!(app
        .drain("APPIUM", Duration::from_millis(500))
        .await
        .is_empty());
}

#[tokio::test]
async fn smoke_fails_with_exit_1_and_says_which_check_failed() {
    let app = spawn_app_with(|c| c.amqp.url = DEAD_AMQP_URL.to_owned()).await;
    let (ok, out) = run_plan_queue(vec![
        "smoke".into(),
        "--url".into(),
        app.address.clone(),
        "--token".into(),
        "not-a-jwt".into(),
    ])
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL readiness: "), "{out}");
    assert!(out.contains("PASS openapi: "), "{out}");
    assert!(
        out.contains("FAIL dry-run: ") && out.contains("401"),
        "{out}"
    );
    assert!(out.contains("FAIL unknown-plan: "), "{out}");
}

#[tokio::test]
async fn made_up_methods_share_one_metrics_label() {
    let app = spawn_app().await;
    for method in ["FOOBAR", "QWERTYUIOP", "ZZZ"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = app
            .client
            .request(method, format!("{}/health", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405);
    }
    let metrics = app.metrics().await;
    assert!(
        !metrics.contains("FOOBAR") && !metrics.contains("ZZZ"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"plan_queue_http_requests_total{method="OTHER",route="/health",status="405"} 3"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_sigterm_stop_after_the_broker_connected_logs_nothing_at_error() {
    let app = spawn_app().await;
    let port = crate::helpers::free_port();
    let c = &app.config;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_plan-queue"))
        .arg("serve")
        .env("DATABASE_URL", &c.database.url)
        .env("AMQP_URL", &c.amqp.url)
        .env("BIND_ADDR", format!("127.0.0.1:{port}"))
        .env("JWT_SECRET", crate::helpers::JWT_SECRET)
        .env("AMQP_EXCHANGE", &c.amqp.exchange)
        .env("FRAMEWORK_TYPES", c.amqp.framework_types.join(","))
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("plan-queue serve starts");
    // ready: database and broker connected (the relay's and the results
    // consumer's channels are open, which is when the stop used to log)
    app.wait_ready(&format!("http://127.0.0.1:{port}"), 200)
        .await;
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let output = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut log = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
        (status, log)
    })
    .await
    .unwrap();
    let (status, log) = output;
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("relay stopped"), "{log}");
    let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "a clean stop logged: {errors:#?}");
}
