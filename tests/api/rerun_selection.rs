//! The rerun additions of section 8: `statuses`, `onInFlight` with
//! `data.skipped`, `MAX_ATTEMPTS`, and their errors in order. Pair statuses
//! that runners would report are set with SQL.

use crate::helpers::{code, message, queued, spawn_app, spawn_app_with, TestApp};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

fn by_status(statuses: &[&str]) -> Value {
    json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "statuses": statuses})
}

fn pairs(list: &[(i64, i64)], on_in_flight: &str) -> Value {
    let list: Vec<Value> = list
        .iter()
        .map(|(s, e)| json!({"scenarioId": s, "environmentId": e}))
        .collect();
    json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
           "scenarioEnvironmentPairs": list, "onInFlight": on_in_flight})
}

/// Reruns one pair of plan 614 and returns the rerun's execution id.
async fn rerun_pair(app: &TestApp, scenario_id: i64, environment_id: i64) -> i64 {
    let (status, body) = app
        .rerun(&crate::helpers::pair_body(scenario_id, environment_id))
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["executionId"].as_i64().unwrap()
}

/// Sets the status of every pair of `execution_id`, as a runner's result would.
async fn set_status(app: &TestApp, execution_id: i64, status: &str) {
    app.sql(&format!(
        "UPDATE execution_pairs SET status = '{status}' WHERE execution_id = {execution_id}"
    ))
    .await;
}

#[tokio::test]
async fn a_rerun_valid_under_section_1_answers_as_before_with_an_empty_skipped_list() {
    let app = spawn_app().await;
    let (status, body) = app.rerun(&crate::helpers::pair_body(111, 222)).await;
    assert_eq!(status, 200, "{body}");
    let data = body["data"].as_object().unwrap();
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "executionId",
            "frameworkType",
            "planId",
            "queued",
            "skipped",
            "sourceExecutionId"
        ]
    );
    assert_eq!(body["data"]["skipped"], json!([]));
}

#[tokio::test]
async fn statuses_select_every_pair_whose_latest_attempt_has_one_of_them() {
    let app = spawn_app().await;
    // 4980: 111/222 FAILED, 111/223 PASSED, 112/222 PASSED, 112/223 ERROR,
    // 113/223 FAILED, 113/224 ABORTED
    let (status, body) = app.rerun(&by_status(&["FAILED"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(queued(&body), vec![(111, 222, 2), (113, 223, 2)]);
    assert_eq!(body["data"]["skipped"], json!([]));
    let first = body["data"]["executionId"].as_i64().unwrap();
    let messages = app.consume("APPIUM", 2, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 2);
    assert!(messages
        .iter()
        .all(|m| m.kind.as_deref() == Some("scenario.rerun")));

    // queued pairs are in flight, not FAILED any more
    let (status, none) = app.rerun(&by_status(&["FAILED"])).await;
    assert_eq!((status, code(&none)), (400, 1016));
    assert_eq!(
        message(&none),
        "No pair of the last executed results of plan 614 has status FAILED"
    );
    // the reruns report: 111/222 passed (flaky), 113/223 failed again
    app.sql(&format!(
        "UPDATE execution_pairs SET status = CASE scenario_id WHEN 111 THEN 'PASSED' ELSE 'FAILED' END \
          WHERE execution_id = {first}"
    ))
    .await;
    let (status, body) = app.rerun(&by_status(&["FAILED", "ERROR"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(queued(&body), vec![(112, 223, 2), (113, 223, 3)]);
    let (_, body) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "statuses": ["PASSED", "ABORTED"], "dryRun": true}))
        .await;
    assert_eq!(
        queued(&body),
        vec![(111, 222, 3), (111, 223, 2), (112, 222, 2), (113, 224, 2)],
        "the current status is the latest attempt's"
    );
}

#[tokio::test]
async fn statuses_that_select_nothing_are_1016_listing_them_as_asked() {
    let app = spawn_app().await;
    let before = app.counts().await;
    let (status, body) = app.rerun(&by_status(&["SKIPPED"])).await;
    assert_eq!((status, code(&body)), (400, 1016));
    assert_eq!(
        message(&body),
        "No pair of the last executed results of plan 614 has status SKIPPED"
    );
    // plan 700 runs on SELENIUM, not configured here; without its type
    // APPIUM is no 1023 (contract, section 20)
    app.sql("UPDATE plans SET framework_type = NULL WHERE id = 700")
        .await;
    let token = app.token(55, &["PLAN_RUN"]);
    let (status, body) = app
        .post("/queue/rerun", Some(&token), &json!({"planId": 700, "userId": 55, "frameworkType": "APPIUM", "statuses": ["ERROR", "ABORTED"]}))
        .await;
    assert_eq!((status, code(&body)), (400, 1016));
    assert_eq!(
        message(&body),
        "No pair of the last executed results of plan 700 has status ERROR,ABORTED"
    );
    assert_eq!(app.counts().await, before);
}

#[tokio::test]
async fn bad_statuses_are_1001_before_any_other_check() {
    let app = spawn_app().await;
    let before = app.counts().await;
    for (body, text) in [
        (json!({"statuses": []}), "Invalid request: statuses: at least one status is required"),
        (json!({"statuses": ["QUEUED"]}), "Invalid request: statuses[0]: QUEUED is in flight, not a result; select by FAILED, ERROR, ABORTED, SKIPPED, PASSED (and see onInFlight)"),
        (json!({"statuses": ["FAILED", "BROKEN"]}), "Invalid request: statuses[1]: unknown status \"BROKEN\", expected one of FAILED, ERROR, ABORTED, SKIPPED, PASSED"),
        (json!({"statuses": ["FAILED"], "scenarioId": 111}), "Invalid request: statuses cannot be combined with scenarioEnvironmentPairs or the top-level scenarioId/environmentId"),
        (json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "statuses": ["FAILED"], "scenarioEnvironmentPairs": [{"scenarioId": 111}]}),
         "Invalid request: statuses cannot be combined with scenarioEnvironmentPairs or the top-level scenarioId/environmentId"),
        (json!({"statuses": "FAILED"}), "Invalid request: statuses: invalid type: string \"FAILED\", expected a sequence"),
        (json!({"onInFlight": "wait"}), "Invalid request: onInFlight: unknown variant `wait`, expected one of `queue`, `skip`, `refuse`"),
    ] {
        let (status, got) = app.rerun(&body).await;
        assert_eq!((status, code(&got)), (400, 1001), "{body}");
        // serde adds where in the body it stopped
        assert!(message(&got).starts_with(text), "{body}: {got}");
    }
    // with statuses no pair is mandatory, the other 1006 still are
    let (_, got) = app
        .rerun(&json!({"planId": 614, "statuses": ["FAILED"]}))
        .await;
    assert_eq!(message(&got), "userId is mandatory");
    assert_eq!(app.counts().await, before);
}

#[tokio::test]
async fn on_in_flight_queues_skips_or_refuses_a_named_pair_still_queued_or_running() {
    let app = spawn_app().await;
    let holder = rerun_pair(&app, 111, 222).await;
    let named = [(111, 222), (111, 223)];

    let (status, body) = app.rerun(&pairs(&named, "skip")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(queued(&body), vec![(111, 223, 2)]);
    assert_eq!(
        body["data"]["skipped"],
        json!([{"scenarioId": 111, "environmentId": 222, "executionId": holder, "attempt": 2, "status": "QUEUED"}])
    );

    let before = app.counts().await;
    let (status, body) = app.rerun(&pairs(&named, "refuse")).await;
    assert_eq!((status, code(&body)), (409, 1014));
    assert_eq!(
        message(&body),
        format!(
            "Scenario 111 on environment 222 is already queued or running (execution {holder})"
        )
    );
    // every named pair is in flight now: skip leaves nothing, so 1014 too
    let (status, body) = app.rerun(&pairs(&named, "skip")).await;
    assert_eq!((status, code(&body)), (409, 1014));
    assert_eq!(
        message(&body),
        format!(
            "Scenario 111 on environment 222 is already queued or running (execution {holder})"
        )
    );
    assert_eq!(app.counts().await, before, "refusals write nothing");

    // RUNNING is in flight as well, and skipped with its status
    set_status(&app, holder, "RUNNING").await;
    let (status, body) = app.rerun(&pairs(&[(111, 222), (112, 223)], "skip")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(queued(&body), vec![(112, 223, 2)]);
    assert_eq!(body["data"]["skipped"][0]["status"], "RUNNING");

    // the default queues it again, as in section 1
    let (status, body) = app.rerun(&pairs(&[(111, 222)], "queue")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(queued(&body), vec![(111, 222, 3)]);
    let (_, body) = app.rerun(&crate::helpers::pair_body(111, 222)).await;
    assert_eq!(queued(&body), vec![(111, 222, 4)]);
}

#[tokio::test]
async fn a_pair_whose_latest_attempt_is_terminal_is_not_in_flight() {
    let app = spawn_app().await;
    let second = rerun_pair(&app, 113, 224).await;
    let third = rerun_pair(&app, 113, 224).await;
    set_status(&app, third, "PASSED").await;
    let (status, body) = app.rerun(&pairs(&[(113, 224)], "refuse")).await;
    assert_eq!(
        status, 200,
        "attempt 2 ({second}) still QUEUED does not count: {body}"
    );
    assert_eq!(queued(&body), vec![(113, 224, 4)]);
}

#[tokio::test]
async fn the_new_errors_come_after_1005_in_the_order_1016_1014_1015() {
    let app = spawn_app_with(|c| c.limits.max_attempts = 3).await;
    rerun_pair(&app, 111, 222).await;
    rerun_pair(&app, 111, 222).await; // attempt 3: at the limit, in flight
    let before = app.counts().await;
    // 1005 first
    let (_, body) = app.rerun(&pairs(&[(111, 222), (114, 222)], "refuse")).await;
    assert_eq!(code(&body), 1005, "{body}");
    // 1014 before 1015
    let (status, body) = app.rerun(&pairs(&[(111, 222)], "refuse")).await;
    assert_eq!((status, code(&body)), (409, 1014), "{body}");
    // 1015
    let (status, body) = app.rerun(&pairs(&[(112, 222), (111, 222)], "queue")).await;
    assert_eq!((status, code(&body)), (400, 1015), "{body}");
    assert_eq!(
        message(&body),
        "Scenario 111 on environment 222 reached the limit of 3 attempts"
    );
    let (_, body) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111, "environmentId": 222, "dryRun": true}))
        .await;
    assert_eq!(code(&body), 1015, "a dry run too");
    assert_eq!(app.counts().await, before, "refusals write nothing");
    // a skipped pair is not queued, so its limit does not count
    let (status, body) = app.rerun(&pairs(&[(112, 222), (111, 222)], "skip")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(queued(&body), vec![(112, 222, 2)]);
    // by statuses: the limit applies to the selected pairs
    let (_, body) = app.rerun(&crate::helpers::pair_body(113, 223)).await;
    let execution = body["data"]["executionId"].as_i64().unwrap();
    set_status(&app, execution, "FAILED").await;
    app.sql("UPDATE execution_pairs SET status = 'FAILED' WHERE scenario_id = 111 AND environment_id = 222 AND attempt = 3").await;
    let (status, body) = app.rerun(&by_status(&["FAILED"])).await;
    assert_eq!((status, code(&body)), (400, 1015), "{body}");
}

#[tokio::test]
async fn the_default_max_attempts_is_50() {
    let app = spawn_app().await;
    app.sql(
        "INSERT INTO executions (id, plan_id, kind, source_execution_id, requested_by) \
           SELECT g, 614, 'RERUN', 4980, 13 FROM generate_series(8001, 8049) g; \
         INSERT INTO execution_pairs (execution_id, scenario_id, environment_id, status, attempt) \
           SELECT g, 112, 222, 'FAILED', g - 7999 FROM generate_series(8001, 8049) g;",
    )
    .await;
    let (status, body) = app.rerun(&crate::helpers::pair_body(112, 222)).await;
    assert_eq!((status, code(&body)), (400, 1015), "{body}");
    assert_eq!(
        message(&body),
        "Scenario 112 on environment 222 reached the limit of 50 attempts"
    );
    let (status, body) = app.rerun(&crate::helpers::pair_body(112, 223)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn twenty_concurrent_failed_reruns_with_skip_queue_each_failed_pair_exactly_once() {
    let app = spawn_app().await;
    let body = json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
                      "statuses": ["FAILED"], "onInFlight": "skip"});
    let answers = futures_util::future::join_all((0..20).map(|_| app.rerun(&body))).await;
    let mut times: HashMap<(i64, i64), usize> = HashMap::new();
    for (status, answer) in &answers {
        match status {
            200 => {
                for (s, e, attempt) in queued(answer) {
                    assert_eq!(attempt, 2);
                    *times.entry((s, e)).or_default() += 1;
                }
            }
            400 => assert_eq!(code(answer), 1016, "{answer}"),
            _ => panic!("{status}: {answer}"),
        }
    }
    assert_eq!(times, HashMap::from([((111, 222), 1), ((113, 223), 1)]));
    assert_eq!(app.counts().await.1, 2, "two dispatch rows in all");
    let messages = app.consume("APPIUM", 3, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), 2);
}
