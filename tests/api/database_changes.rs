//! The database changes under the running service: a column type changed by
//! a migration (prepared statements of pooled connections go stale), a
//! failover that leaves it read-only, connections killed by an operator.
//! Every change is made to the test's own database only.

use crate::helpers::{spawn_app, TestApp};
use serde_json::{json, Value};

fn rerun_of(scenario_id: i64) -> Value {
    json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": scenario_id})
}

fn dry_run_of(scenario_id: i64) -> Value {
    let mut body = rerun_of(scenario_id);
    body["dryRun"] = json!(true);
    body
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
