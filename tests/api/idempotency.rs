//! Idempotency-Key: a retried request never reruns twice.

use crate::helpers::{code, read, spawn_app, TestApp};
use serde_json::{json, Value};
use std::time::Duration;

fn body() -> Value {
    json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111, "environmentId": 222})
}

async fn send(app: &TestApp, key: &str, body: &Value) -> (u16, Value, bool) {
    let token = app.token(13, &["PLAN_RUN"]);
    let response = app
        .post_raw("/queue/rerun")
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let replayed = response.headers().contains_key("idempotent-replayed");
    let (status, body) = read(response).await;
    (status, body, replayed)
}

#[tokio::test]
async fn a_retry_with_the_same_key_replays_the_first_answer_and_publishes_nothing_new() {
    let app = spawn_app().await;
    let (status, first, replayed) = send(&app, "retry-1", &body()).await;
    assert_eq!((status, replayed), (200, false), "{first}");
    let (status, second, replayed) = send(&app, "retry-1", &body()).await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(first, second);
    assert_eq!(app.counts().await.1, 1);
    assert_eq!(
        app.consume("APPIUM", 2, Duration::from_secs(3)).await.len(),
        1
    );
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422_code_1012() {
    let app = spawn_app().await;
    assert_eq!(send(&app, "k", &body()).await.0, 200);
    let mut other = body();
    other["environmentId"] = json!(223);
    let (status, got, _) = send(&app, "k", &other).await;
    assert_eq!((status, code(&got)), (422, 1012));
    assert_eq!(
        got["result"]["message"],
        "Idempotency-Key reused with a different request"
    );
    assert_eq!(app.counts().await.1, 1);
}

#[tokio::test]
async fn a_malformed_key_is_1001() {
    let app = spawn_app().await;
    let long = "x".repeat(256);
    for key in [long.as_str(), "tab\there"] {
        let (status, got, _) = send(&app, key, &body()).await;
        assert_eq!((status, code(&got)), (400, 1001), "{key:?}");
    }
    assert_eq!(app.counts().await.1, 0);
}

/// Two keys on one request are 1001, not the first one silently (a retry
/// that sends only the second would otherwise rerun again).
#[tokio::test]
async fn two_keys_on_one_request_are_1001_and_change_nothing() {
    let app = spawn_app().await;
    let before = app.counts().await;
    let response = app
        .post_raw("/queue/rerun")
        .bearer_auth(app.token(13, &["PLAN_RUN"]))
        .header("idempotency-key", "first")
        .header("idempotency-key", "second")
        .json(&body())
        .send()
        .await
        .unwrap();
    let (status, got) = read(response).await;
    assert_eq!((status, code(&got)), (400, 1001), "{got}");
    assert_eq!(
        got["result"]["message"],
        "Invalid request: Idempotency-Key must be sent once"
    );
    assert_eq!(app.counts().await, before);
}

#[tokio::test]
async fn keys_are_scoped_to_the_token_subject() {
    let app = spawn_app().await;
    assert_eq!(send(&app, "shared", &body()).await.0, 200);
    let admin = app.token(2, &["PLAN_RUN", "QUEUE_ADMIN"]);
    let response = app
        .post_raw("/queue/rerun")
        .bearer_auth(admin)
        .header("idempotency-key", "shared")
        .json(&body())
        .send()
        .await
        .unwrap();
    assert!(!response.headers().contains_key("idempotent-replayed"));
    let (status, got) = read(response).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(
        got["data"]["queued"][0]["attempt"], 3,
        "a new rerun, not a replay"
    );
}

#[tokio::test]
async fn fifty_parallel_requests_with_one_key_make_exactly_one_rerun() {
    let app = spawn_app().await;
    let b = body();
    let answers = futures_util::future::join_all((0..50).map(|_| send(&app, "burst", &b))).await;
    let mut execution_ids = std::collections::HashSet::new();
    for (status, got, _) in &answers {
        match status {
            200 => {
                execution_ids.insert(got["data"]["executionId"].as_i64().unwrap());
            }
            409 => assert_eq!(code(got), 1013),
            other => panic!("unexpected {other}: {got}"),
        }
    }
    assert_eq!(execution_ids.len(), 1, "every 200 names the same rerun");
    assert_eq!(app.counts().await.1, 1);
    assert_eq!(
        app.consume("APPIUM", 2, Duration::from_secs(3)).await.len(),
        1
    );
}

#[tokio::test]
async fn an_expired_key_starts_a_new_rerun_and_is_cleaned_up() {
    let app = spawn_app().await;
    assert_eq!(send(&app, "old", &body()).await.0, 200);
    // the key's first use lies beyond the retention (24 h by default)
    app.sql("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .await;
    let (status, again, replayed) = send(&app, "old", &body()).await;
    assert_eq!((status, replayed), (200, false));
    assert_eq!(again["data"]["queued"][0]["attempt"], 3, "a new rerun");

    app.sql("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .await;
    let db = plan_queue::db::Db::new(
        plan_queue::db::build_pool(
            &app.db_url,
            1,
            Duration::from_secs(2),
            Duration::from_secs(1800),
        ),
        Duration::from_secs(2),
    );
    let deleted = plan_queue::idempotency::delete_expired(&db, Duration::from_secs(86_400))
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let left = app
        .count_sql("SELECT count(*) AS n FROM idempotency_keys")
        .await;
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_dry_run_with_a_key_stores_nothing() {
    let app = spawn_app().await;
    let mut dry = body();
    dry["dryRun"] = json!(true);
    assert_eq!(send(&app, "dry", &dry).await.0, 200);
    assert_eq!(
        app.count_sql("SELECT count(*) AS n FROM idempotency_keys")
            .await,
        0
    );
    let (status, real, replayed) = send(&app, "dry", &body()).await;
    assert_eq!((status, replayed), (200, false));
    assert!(real["data"]["executionId"].is_i64());
    // the key now names a real rerun: a dry run of it is another request
    let (status, got, _) = send(&app, "dry", &dry).await;
    assert_eq!((status, code(&got)), (422, 1012), "{got}");
}
