//! The outbox stays bounded (issue 12): published rows are deleted after
//! `OUTBOX_RETENTION_SECS`, and new reruns are refused with 503 code 1011
//! while the unpublished backlog is past `OUTBOX_MAX_PENDING`.

use crate::helpers::{code, message, read, spawn_app, spawn_app_with, valid_rerun, DEAD_AMQP_URL};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn published_rows_past_the_retention_are_deleted_and_nothing_else() {
    let app = spawn_app().await;
    for scenario_id in [111, 112] {
        let (status, body) = app
            .rerun(
                &json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
                           "scenarioId": scenario_id}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // the app's own relay may hold some rows under its lease while this pass
    // runs: wait until both passes have published everything
    app.dispatch_all_pending().await;
    app.wait_until_pending(0).await;
    let total = app.count_sql("SELECT count(*) AS n FROM dispatches").await;
    assert_eq!(total, 4);
    // two rows published two hours ago, one row old but never published
    // (and not due, so the app's relay leaves it)
    app.sql(
        "UPDATE dispatches SET published_at = now() - interval '2 hours' \
          WHERE id IN (SELECT id FROM dispatches ORDER BY id LIMIT 2); \
         UPDATE dispatches SET published_at = NULL, created_at = now() - interval '3 hours', \
                next_attempt_at = now() + interval '1 hour' \
          WHERE id = (SELECT max(id) FROM dispatches)",
    )
    .await;
    let pool = plan_queue::db::build_relay_pool(
        &app.db_url,
        1,
        Duration::from_secs(5),
        Duration::from_secs(60),
    );
    let deleted = tokio::task::spawn_blocking(move || {
        plan_queue::relay::upkeep::delete_all_due(&pool, Duration::from_secs(3600))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(
        app.count_sql("SELECT count(*) AS n FROM dispatches").await,
        2,
        "the recent and the unpublished rows stay"
    );
    assert_eq!(app.pending().await, 1);
}

#[tokio::test]
async fn reruns_past_the_outbox_bound_are_503_naming_the_outbox_and_write_nothing() {
    let app = spawn_app_with(|c| {
        c.amqp.url = DEAD_AMQP_URL.to_owned();
        c.relay.max_pending = 3;
    })
    .await;
    let rerun = json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111});
    for _ in 0..2 {
        let (status, body) = app.rerun(&rerun).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(app.pending().await, 4, "the broker is down: all pending");
    // the gate counts the backlog every second
    let token = app.token(13, &["PLAN_RUN"]);
    let started = Instant::now();
    let (status, headers, body) = loop {
        let before = app.counts().await;
        let response = app
            .post_raw("/queue/rerun")
            .bearer_auth(&token)
            .json(&rerun)
            .send()
            .await
            .unwrap();
        let headers = response.headers().clone();
        let (status, body) = read(response).await;
        if status == 503 {
            assert_eq!(app.counts().await, before, "a refused rerun wrote rows");
            break (status, headers, body);
        }
        assert_eq!(status, 200, "{body}");
        assert!(started.elapsed() < Duration::from_secs(10), "never refused");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, 503);
    assert_eq!(code(&body), 1011);
    assert_eq!(message(&body), "Service unavailable: outbox");
    assert!(headers.contains_key("retry-after"));
    let (status, body) = app.rerun(&valid_rerun(true)).await;
    assert_eq!(
        status, 200,
        "a dry run writes nothing and is still answered: {body}"
    );
}
