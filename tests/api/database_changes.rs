//! The database changes under the running service: a column type changed by
//! a migration (prepared statements of pooled connections go stale), a
//! failover that leaves it read-only, connections killed by an operator.
//! Every change is made to the test's own database only.

use crate::helpers::{code, message, message_ids, received_ids, spawn_app, TestApp, ADMIN_DB_URL};
use diesel::connection::SimpleConnection;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn rerun_of(scenario_id: i64) -> Value {
    json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": scenario_id})
}

fn dry_run_of(scenario_id: i64) -> Value {
    let mut body = rerun_of(scenario_id);
    body["dryRun"] = json!(true);
    body
}

/// Runs `sql` on the shared server's `postgres` database (for statements
/// about the test database that its own sessions may not run, such as
/// turning its read-only default off again).
async fn admin_sql(sql: String) {
    tokio::task::spawn_blocking(move || {
        plan_queue::db::connect(ADMIN_DB_URL)
            .unwrap()
            .batch_execute(&sql)
            .unwrap();
    })
    .await
    .unwrap()
}

/// Ends every session on the test database but the caller's: what an
/// operator, a pooler or a failover does to the service's connections.
async fn terminate_connections(app: &TestApp) {
    app.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
          WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .await;
}

/// Sends the same rerun from `count` clients at once, so that several pooled
/// connections run (and cache) the rerun's statements.
async fn concurrently(app: &TestApp, count: usize, body: &Value) -> Vec<(u16, Value)> {
    futures_util::future::join_all((0..count).map(|_| app.rerun(body))).await
}

#[tokio::test]
async fn a_column_type_changed_while_serving_costs_no_request() {
    let app = spawn_app().await;
    for (status, body) in concurrently(&app, 6, &dry_run_of(111)).await {
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = app.rerun(&rerun_of(113)).await;
    assert_eq!(status, 200, "{body}");
    app.wait_until_pending(0).await;

    // the next version's migration, during a rolling deploy
    app.sql("ALTER TABLE scenarios ALTER COLUMN name TYPE varchar(500)")
        .await;

    for (status, body) in concurrently(&app, 6, &dry_run_of(111)).await {
        assert_eq!(status, 200, "a dry run after the type change: {body}");
    }
    let (status, body) = app.rerun(&rerun_of(113)).await;
    assert_eq!(status, 200, "a rerun after the type change: {body}");
    let (status, body) = app.rerun(&rerun_of(112)).await;
    assert_eq!(status, 200, "the one after: {body}");
    app.wait_until_pending(0).await; // the relay published them
    assert_eq!(app.get("/health/ready").await.0, 200);
}

#[tokio::test]
async fn a_read_only_database_is_503_and_not_ready_until_writable_again() {
    let app = spawn_app().await;
    let (status, body) = app.rerun(&rerun_of(113)).await;
    assert_eq!(status, 200, "{body}");
    app.wait_until_pending(0).await;
    app.wait_ready(&app.address, 200).await;

    // a failover onto a read-only node: every session is read-only, and
    // the service's connections were cut
    app.sql(&format!(
        "ALTER DATABASE \"{}\" SET default_transaction_read_only = on",
        app.db_name
    ))
    .await;
    terminate_connections(&app).await;
    let before = app.counts().await;
    for attempt in 0..3 {
        let token = app.token(13, &["PLAN_RUN"]);
        let response = app
            .post_raw("/queue/rerun")
            .bearer_auth(&token)
            .json(&rerun_of(113))
            .send()
            .await
            .unwrap();
        let retry_after = response.headers().contains_key("retry-after");
        let (status, body) = crate::helpers::read(response).await;
        assert_eq!(
            (status, code(&body), message(&body)),
            (503, 1011, "Service unavailable: database"),
            "rerun {attempt} while read-only"
        );
        assert!(retry_after, "rerun {attempt}: no Retry-After");
    }
    assert_eq!(app.counts().await, before, "nothing written");
    // the relay polls every 200 ms: let its claims fail on read-only sessions
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, text) = app.get("/health/ready").await;
    assert_eq!(status, 503, "ready while writes fail: {text}");
    let ready: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(ready["result"]["code"], 1011);
    assert_eq!(ready["data"]["writable"], false, "{ready}");
    assert!(message(&ready).contains("read-only"), "{ready}");

    // the primary is back: sessions opened from now on may write
    admin_sql(format!(
        "ALTER DATABASE \"{}\" RESET default_transaction_read_only",
        app.db_name
    ))
    .await;
    let started = Instant::now();
    let (status, text) = app.get("/health/ready").await;
    assert_eq!(status, 200, "the first probe once writable: {text}");
    let (status, body) = app.rerun(&rerun_of(112)).await;
    assert_eq!(status, 200, "the first rerun once writable: {body}");
    // the relay's connections were read-only too: it publishes again
    app.wait_until_pending(0).await;
    let published = received_ids(&app.consume("APPIUM", 4, Duration::from_secs(10)).await);
    assert!(message_ids(&body).is_subset(&published), "{published:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[tokio::test]
async fn killed_connections_cost_no_request() {
    let app = spawn_app().await;
    for (status, body) in concurrently(&app, 4, &dry_run_of(111)).await {
        assert_eq!(status, 200, "{body}");
    }
    terminate_connections(&app).await;
    let (status, body) = app.rerun(&rerun_of(113)).await;
    assert_eq!(status, 200, "the first rerun after the kill: {body}");
    app.wait_until_pending(0).await;
    assert_eq!(app.get("/health/ready").await.0, 200);
}
