//! Automatic retries (contract, section 18) and flakiness over time
//! (section 19): the retry queued by whatever finished an execution, its
//! budget, ABORTED pairs and cancels, results applied twice or at once, and
//! the figures of `GET /plans/{planId}/flakiness` over a hand-built history.

use crate::ends::{cancel, execution, read_as_member, result, schema, wait_finished, EventTap};
use crate::helpers::{code, spawn_app_with, TestApp};
use crate::results::{publish, wait_consumer};
use chrono::Utc;
use serde_json::{json, Value};
use std::time::Duration;

const WITHIN: Duration = Duration::from_secs(20);

/// Runs scenario 113 of plan 614 on `environments` as user 13 with
/// `retryFailed`; the run's id and queued pairs.
async fn run_113(app: &TestApp, environments: &[i64], retry_failed: i64) -> (i64, Vec<Value>) {
    let token = app.token(13, &["PLAN_RUN"]);
    let (status, body) = app
        .post(
            "/queue/run",
            Some(&token),
            &json!({"planId": 614, "userId": 13, "scenarioIds": [113],
                    "environmentIds": environments, "force": true,
                    "retryFailed": retry_failed}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    (
        data["executionId"].as_i64().unwrap(),
        data["queued"].as_array().unwrap().clone(),
    )
}

/// Publishes, for each pair of execution `id` (as `GET /executions/{id}`
/// lists them), the status `statuses` gives its environment.
pub(crate) async fn report(app: &TestApp, id: i64, statuses: &[(i64, &str)]) {
    let pairs = execution(app, id).await["pairs"]
        .as_array()
        .unwrap()
        .clone();
    let results: Vec<Value> = pairs
        .iter()
        .filter_map(|p| {
            let status = statuses
                .iter()
                .find(|(e, _)| p["environmentId"] == *e)
                .map(|(_, s)| *s)?;
            Some(result(id, p, status, Utc::now()))
        })
        .collect();
    publish(app, &results).await;
}

/// Waits until execution `id` is finished; the automatic rerun it caused
/// (the plan's newest execution when it is a retry of `id`), if any.
pub(crate) async fn retry_of(app: &TestApp, id: i64) -> Option<Value> {
    let finished = wait_finished(app, id, WITHIN).await;
    assert_eq!(finished["status"], "FINISHED");
    let newest =
        read_as_member(app, "/plans/614/executions?limit=1").await["executions"][0].clone();
    (newest["retryOf"] == id).then_some(newest)
}

/// Retries of `id` stored (0 or 1; the database refuses a second).
async fn retries_stored(app: &TestApp, id: i64) -> i64 {
    app.count_sql(&format!(
        "SELECT count(*) AS n FROM executions WHERE retry_of = {id}"
    ))
    .await
}

#[tokio::test]
async fn a_pair_failing_twice_then_passing_is_retried_twice_without_a_person_and_ends_passed_and_flaky(
) {
    let app = spawn_app_with(|_| {}).await;
    wait_consumer(&app).await;
    let events = EventTap::bind(&app, "execution.finished.#").await;
    let (first, _) = run_113(&app, &[223], 2).await;
    let run = execution(&app, first).await;
    assert_eq!(
        (&run["trigger"], &run["retryOf"]),
        (&json!("USER"), &Value::Null)
    );

    report(&app, first, &[(223, "FAILED")]).await;
    let second = retry_of(&app, first).await.expect("a first retry");
    assert_eq!(second["kind"], "RERUN");
    assert_eq!(second["trigger"], "RETRY");
    assert_eq!(second["requestedBy"], 13);
    assert_eq!(second["sourceExecutionId"], first);
    let second = second["executionId"].as_i64().unwrap();
    let retried = execution(&app, second).await;
    assert_eq!(retried["retryOf"], first);
    assert_eq!(retried["pairs"].as_array().unwrap().len(), 1);
    assert_eq!(retried["pairs"][0]["attempt"], 2);

    report(&app, second, &[(223, "FAILED")]).await;
    let third = retry_of(&app, second).await.expect("a second retry");
    let third = third["executionId"].as_i64().unwrap();
    assert_eq!(execution(&app, third).await["pairs"][0]["attempt"], 3);

    report(&app, third, &[(223, "PASSED")]).await;
    assert!(
        retry_of(&app, third).await.is_none(),
        "nothing left to retry"
    );
    let results = read_as_member(&app, "/plans/614/results").await;
    assert_eq!(results["sourceExecutionId"], first);
    let pair = &results["pairs"][0];
    assert_eq!(
        (&pair["status"], &pair["attempt"]),
        (&json!("PASSED"), &json!(3))
    );
    assert_eq!(pair["flaky"], true);

    app.dispatch_all_pending().await;
    let seen = events.take(Duration::from_secs(2)).await;
    let finished: Vec<(Value, Value, Value, Value)> = seen
        .iter()
        .map(|(_, e)| {
            assert!(schema("docs/event.schema.json").is_valid(e), "{e}");
            (
                e["executionId"].clone(),
                e["trigger"].clone(),
                e["retryOf"].clone(),
                e["retryExecutionId"].clone(),
            )
        })
        .collect();
    assert_eq!(
        finished,
        [
            (json!(first), json!("USER"), Value::Null, json!(second)),
            (json!(second), json!("RETRY"), json!(first), json!(third)),
            (json!(third), json!("RETRY"), json!(second), Value::Null),
        ]
    );
    assert_eq!(
        seen[2].1["flaky"],
        json!([{"scenarioId": 113, "environmentId": 223}])
    );
}

#[tokio::test]
async fn a_pair_that_always_fails_stops_after_the_budget_and_a_replayed_request_queues_nothing_more(
) {
    let app = spawn_app_with(|_| {}).await;
    wait_consumer(&app).await;
    let token = app.token(13, &["PLAN_RUN"]);
    let body = json!({"planId": 614, "userId": 13, "scenarioIds": [113],
                      "environmentIds": [223], "force": true, "retryFailed": 1});
    let send = || {
        app.client
            .post(format!("{}/queue/run", app.address))
            .bearer_auth(&token)
            .header("Idempotency-Key", "retry-budget-1")
            .json(&body)
            .send()
    };
    let (status, answer) = crate::helpers::read(send().await.unwrap()).await;
    assert_eq!(status, 200, "{answer}");
    let first = answer["data"]["executionId"].as_i64().unwrap();

    report(&app, first, &[(223, "FAILED")]).await;
    let retry = retry_of(&app, first).await.expect("one retry");
    let retry = retry["executionId"].as_i64().unwrap();
    report(&app, retry, &[(223, "FAILED")]).await;
    assert!(retry_of(&app, retry).await.is_none(), "the budget is spent");
    assert_eq!(retries_stored(&app, retry).await, 0);

    let executions = app.count_sql("SELECT count(*) AS n FROM executions").await;
    let (status, replayed) = crate::helpers::read(send().await.unwrap()).await;
    assert_eq!(
        (status, &replayed),
        (200, &answer),
        "the replay answers the same"
    );
    assert_eq!(
        app.count_sql("SELECT count(*) AS n FROM executions").await,
        executions,
        "a replay queues no run and no retry"
    );
    assert_eq!(retries_stored(&app, first).await, 1);
}

#[tokio::test]
async fn aborted_pairs_are_never_retried_whether_a_runner_or_a_deadline_ended_them() {
    let app = spawn_app_with(|c| {
        c.deadlines.run_timeout_secs = 5;
        c.deadlines.sweep_interval = Duration::from_millis(200);
    })
    .await;
    wait_consumer(&app).await;
    let (first, _) = run_113(&app, &[222, 223, 224], 2).await;
    report(
        &app,
        first,
        &[(222, "ABORTED"), (223, "FAILED"), (224, "RUNNING")],
    )
    .await;
    // 224 hangs: the run deadline ends it ABORTED and finishes the execution
    let retry = retry_of(&app, first).await.expect("a retry of the failure");
    let ended = execution(&app, first).await;
    assert_eq!(ended["pairs"][2]["reason"], "RUN_TIMEOUT");
    let retry = execution(&app, retry["executionId"].as_i64().unwrap()).await;
    let pairs: Vec<(&Value, &Value)> = retry["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (&p["environmentId"], &p["attempt"]))
        .collect();
    assert_eq!(pairs, [(&json!(223), &json!(2))], "only the FAILED pair");
}

#[tokio::test]
async fn a_cancel_stops_retries_of_the_execution_and_of_the_plan() {
    let app = spawn_app_with(|_| {}).await;
    wait_consumer(&app).await;
    // a cancel that finishes an execution with a FAILED pair: no retry
    let (first, _) = run_113(&app, &[223, 224], 3).await;
    report(&app, first, &[(223, "FAILED")]).await;
    let (status, body) = cancel(&app, &format!("/executions/{first}/cancel"), 13).await;
    assert_eq!(status, 200, "{body}");
    assert!(retry_of(&app, first).await.is_none());
    assert_eq!(retries_stored(&app, first).await, 0);

    // a chain of retries stopped by a cancel of the plan
    let (second, _) = run_113(&app, &[223], 3).await;
    report(&app, second, &[(223, "ERROR")]).await;
    let retry = retry_of(&app, second).await.expect("a retry");
    let retry = retry["executionId"].as_i64().unwrap();
    let (status, body) = cancel(&app, "/plans/614/cancel", 13).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["cancelled"][0]["executionId"], retry);
    let ended = wait_finished(&app, retry, WITHIN).await;
    assert_eq!(ended["pairs"][0]["reason"], "CANCELLED");
    assert_eq!(retries_stored(&app, retry).await, 0, "the chain stops");
    let (status, body) = cancel(&app, "/plans/614/cancel", 13).await;
    assert_eq!((status, code(&body)), (409, 1020), "{body}");
}

#[tokio::test]
async fn results_applied_twice_or_by_two_consumers_at_once_queue_one_retry() {
    let app = spawn_app_with(|_| {}).await;
    wait_consumer(&app).await;
    // broker redelivery: the same result three times, twice in one batch
    let (first, queued) = run_113(&app, &[223], 2).await;
    let failed = result(first, &queued[0], "FAILED", Utc::now());
    publish(&app, &[failed.clone(), failed.clone()]).await;
    publish(&app, &[failed]).await;
    assert!(retry_of(&app, first).await.is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(retries_stored(&app, first).await, 1);

    // two consumers applying the same finishing result at the same moment
    let (second, queued) = run_113(&app, &[224], 2).await;
    let body = result(second, &queued[0], "FAILED", Utc::now()).to_string();
    let message = plan_queue::results::message::RunnerResult::parse(body.as_bytes()).unwrap();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let applied: Vec<_> = (0..2)
        .map(|_| {
            let (url, barrier, message) = (app.db_url.clone(), barrier.clone(), message.clone());
            let exchange = app.config.amqp.exchange.clone();
            std::thread::spawn(move || {
                let mut conn = plan_queue::db::connect(&url).unwrap();
                barrier.wait();
                plan_queue::results::apply::apply_batch(
                    &mut conn,
                    &[message],
                    &exchange,
                    plan_queue::results::apply::Retries::Queue {
                        max_attempts: 50,
                        queue_timeout_secs: 86400,
                    },
                )
                .unwrap()
                .finished
                .len()
            })
        })
        .collect();
    let finished: usize = applied.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(finished, 1, "one of the two finished the execution");
    assert_eq!(retries_stored(&app, second).await, 1);
    assert!(retry_of(&app, second).await.is_some());
}

/// One full run of scenario 113 on 223 and 224 with one retry, the first
/// attempts reported as `first`, the retry's as `then`.
pub(crate) async fn history_run(app: &TestApp, first: &[(i64, &str)], then: &[(i64, &str)]) {
    let (id, _) = run_113(app, &[223, 224], 1).await;
    report(app, id, first).await;
    if let Some(retry) = retry_of(app, id).await {
        let retry = retry["executionId"].as_i64().unwrap();
        report(app, retry, then).await;
        wait_finished(app, retry, WITHIN).await;
    }
}

fn flakiness_pairs(data: &Value) -> Vec<(i64, i64, i64, i64, i64, f64)> {
    data["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["scenarioId"].as_i64().unwrap(),
                p["environmentId"].as_i64().unwrap(),
                p["runs"].as_i64().unwrap(),
                p["failedFirst"].as_i64().unwrap(),
                p["flaky"].as_i64().unwrap(),
                p["flakeRate"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn flakiness_over_the_last_runs_gives_section_19s_figures_and_tells_a_suspect_environment() {
    let app = spawn_app_with(|_| {}).await;
    wait_consumer(&app).await;
    // the fixture's two runs of plan 614 (4970, 4980), then three more
    history_run(
        &app,
        &[(223, "FAILED"), (224, "PASSED")],
        &[(223, "PASSED")],
    )
    .await;
    history_run(
        &app,
        &[(223, "FAILED"), (224, "PASSED")],
        &[(223, "PASSED")],
    )
    .await;
    history_run(
        &app,
        &[(223, "ERROR"), (224, "FAILED")],
        &[(223, "PASSED"), (224, "PASSED")],
    )
    .await;

    let last_three = read_as_member(&app, "/plans/614/flakiness?runs=3").await;
    assert_eq!(last_three["planId"], 614);
    assert_eq!(last_three["runs"], 3);
    assert_eq!(
        flakiness_pairs(&last_three),
        [(113, 223, 3, 3, 3, 1.0), (113, 224, 3, 1, 1, 0.3333)]
    );
    assert_eq!(
        last_three["environments"],
        json!([
            {"environmentId": 223, "pairRuns": 3, "failedFirst": 3, "flaky": 3,
             "flakeRate": 1.0, "suspect": true},
            {"environmentId": 224, "pairRuns": 3, "failedFirst": 1, "flaky": 1,
             "flakeRate": 0.3333, "suspect": false}
        ])
    );
    assert_eq!(
        last_three["scenarios"],
        json!([{"scenarioId": 113, "pairRuns": 6, "failedFirst": 4, "flaky": 4,
                "flakeRate": 0.6667}])
    );

    let all = read_as_member(&app, "/plans/614/flakiness").await;
    assert_eq!(all["runs"], 5, "the default looks at up to 20 runs");
    assert_eq!(
        flakiness_pairs(&all),
        [
            (111, 222, 2, 1, 0, 0.0),
            (111, 223, 1, 0, 0, 0.0),
            (112, 222, 1, 0, 0, 0.0),
            (112, 223, 1, 1, 0, 0.0),
            (113, 223, 4, 4, 3, 0.75),
            (113, 224, 4, 1, 1, 0.25),
            (114, 222, 1, 1, 0, 0.0),
        ]
    );
    assert_eq!(
        all["environments"],
        json!([
            {"environmentId": 222, "pairRuns": 4, "failedFirst": 2, "flaky": 0,
             "flakeRate": 0.0, "suspect": false},
            {"environmentId": 223, "pairRuns": 6, "failedFirst": 5, "flaky": 3,
             "flakeRate": 0.5, "suspect": true},
            {"environmentId": 224, "pairRuns": 4, "failedFirst": 1, "flaky": 1,
             "flakeRate": 0.25, "suspect": false}
        ])
    );
    assert_eq!(
        all["scenarios"],
        json!([
            {"scenarioId": 111, "pairRuns": 3, "failedFirst": 1, "flaky": 0, "flakeRate": 0.0},
            {"scenarioId": 112, "pairRuns": 2, "failedFirst": 1, "flaky": 0, "flakeRate": 0.0},
            {"scenarioId": 113, "pairRuns": 8, "failedFirst": 5, "flaky": 4, "flakeRate": 0.5},
            {"scenarioId": 114, "pairRuns": 1, "failedFirst": 1, "flaky": 0, "flakeRate": 0.0}
        ])
    );

    let last = read_as_member(&app, "/plans/614/flakiness?runs=1").await;
    assert_eq!(
        last["environments"][0]["suspect"], false,
        "one flaky run is too few"
    );

    let never = read_as_member(&app, "/plans/615/flakiness").await;
    assert_eq!(
        never,
        json!({"planId": 615, "runs": 0, "pairs": [], "environments": [], "scenarios": []})
    );
    for (user, path, status, expected) in [
        (13, "/plans/614/flakiness?runs=0", 400, 1001),
        (13, "/plans/614/flakiness?runs=101", 400, 1001),
        (13, "/plans/614/flakiness?runs=x", 400, 1001),
        (13, "/plans/999999/flakiness", 404, 1000),
        (55, "/plans/614/flakiness", 404, 1000),
        (13, "/plans/0/flakiness", 404, 1001),
    ] {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .bearer_auth(app.token(user, &["PLAN_READ"]))
            .send()
            .await
            .unwrap();
        let (got, body) = crate::helpers::read(response).await;
        assert_eq!((got, code(&body)), (status, expected), "{path}: {body}");
    }
}
