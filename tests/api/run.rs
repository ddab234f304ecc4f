//! `POST /queue/run` (contract, section 7): a full run of a plan, its
//! messages, its error table in order, and how it meets concurrent reruns.

use crate::helpers::{code, message, queued, read, spawn_app, spawn_app_with, TestApp};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// POSTs `body` to /queue/run as user 13 with PLAN_RUN.
async fn run(app: &TestApp, body: &Value) -> (u16, Value) {
    let token = app.token(13, &["PLAN_RUN"]);
    app.post("/queue/run", Some(&token), body).await
}

/// Plan 614's scenarios × environments, by scenario then environment.
fn all_pairs_of_614() -> Vec<(i64, i64, i64)> {
    let mut pairs = Vec::new();
    for s in [111, 112, 113, 114] {
        for e in [222, 223, 224] {
            pairs.push((s, e, 1));
        }
    }
    pairs
}

fn message_schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string("docs/message.schema.json").unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
}

#[tokio::test]
async fn a_run_queues_every_scenario_on_every_environment_at_attempt_1_as_scenario_run() {
    let app = spawn_app().await;
    let token = app.token(13, &["PLAN_RUN"]);
    let response = app
        .post_raw("/queue/run")
        .bearer_auth(&token)
        .header("x-request-id", "run-trace-7")
        .json(&json!({"planId": 614, "userId": 13}))
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!((status, code(&body)), (200, 0), "{body}");
    let data = &body["data"];
    let execution_id = data["executionId"].as_i64().unwrap();
    assert!(
        execution_id > 5100,
        "generated ids stay clear of the fixture's"
    );
    assert_eq!(
        data["sourceExecutionId"], execution_id,
        "a full run is its own source"
    );
    assert_eq!(data["planId"], 614);
    assert_eq!(data["frameworkType"], "APPIUM", "the plan's framework type");
    assert_eq!(queued(&body), all_pairs_of_614());
    assert!(data.get("skipped").is_none(), "section 1's data: {data}");

    let messages = app.consume("APPIUM", 12, WAIT).await;
    assert_eq!(messages.len(), 12);
    let sent: HashSet<&str> = data["queued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["messageId"].as_str().unwrap())
        .collect();
    let schema = message_schema();
    for m in &messages {
        assert_eq!(m.kind.as_deref(), Some("scenario.run"));
        assert_eq!(m.routing_key, "APPIUM");
        assert_eq!(m.delivery_mode, Some(2));
        assert_eq!(m.correlation_id.as_deref(), Some("run-trace-7"));
        assert!(sent.contains(m.message_id.as_deref().unwrap()));
        assert_eq!(m.body["attempt"], 1);
        assert_eq!(m.body["executionId"], execution_id);
        assert_eq!(m.body["sourceExecutionId"], execution_id);
        assert_eq!(m.body["userId"], 13);
        assert!(schema.is_valid(&m.body), "{}", m.body);
    }
    let apply = messages
        .iter()
        .find(|m| m.body["scenarioId"] == 114 && m.body["environmentId"] == 224)
        .expect("the pair that never ran before is queued too");
    assert_eq!(
        apply.body["scenario"],
        json!({"name": "Apply expired coupon"})
    );
    assert_eq!(
        apply.body["environment"],
        json!({"name": "Galaxy S23", "platform": "ANDROID", "version": "13"})
    );

    // the run is the plan's new source run: a rerun of a pair that was not
    // in the old one is its attempt 2
    app.sql(&format!(
        "UPDATE execution_pairs SET status = 'FAILED' WHERE execution_id = {execution_id}"
    ))
    .await;
    let (status, rerun) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 114, "environmentId": 224}))
        .await;
    assert_eq!(status, 200, "{rerun}");
    assert_eq!(rerun["data"]["sourceExecutionId"], execution_id);
    assert_eq!(queued(&rerun), vec![(114, 224, 2)]);
}

#[tokio::test]
async fn subsets_and_a_given_framework_type_narrow_the_run() {
    let app = spawn_app().await;
    // plan 614 runs on APPIUM; another type is 1023 (contract, section 20)
    app.sql("UPDATE plans SET framework_type = NULL WHERE id = 614")
        .await;
    let (status, body) = run(
        &app,
        &json!({"planId": 614, "userId": 13, "frameworkType": " junit ",
                "scenarioIds": [113, 111], "environmentIds": [223]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["frameworkType"], "JUNIT");
    assert_eq!(queued(&body), vec![(111, 223, 1), (113, 223, 1)]);
    let messages = app.consume("JUNIT", 2, WAIT).await;
    assert_eq!(messages.len(), 2);
    assert!(messages.iter().all(|m| m.routing_key == "JUNIT"));
}

#[tokio::test]
async fn a_plan_that_never_ran_runs_and_then_has_results_to_rerun() {
    let app = spawn_app().await;
    let rerun_body =
        json!({"planId": 615, "userId": 13, "frameworkType": "GAUGE", "scenarioId": 111});
    assert_eq!(code(&app.rerun(&rerun_body).await.1), 1004);
    let (status, body) = run(
        &app,
        &json!({"planId": 615, "userId": 13, "frameworkType": "gauge"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(queued(&body), vec![(111, 222, 1)]);
    let execution_id = body["data"]["executionId"].as_i64().unwrap();
    let (status, rerun) = app.rerun(&rerun_body).await;
    assert_eq!(status, 200, "{rerun}");
    assert_eq!(rerun["data"]["sourceExecutionId"], execution_id);
    assert_eq!(queued(&rerun), vec![(111, 222, 2)]);
}

#[tokio::test]
async fn a_dry_run_answers_the_pairs_and_writes_and_publishes_nothing() {
    let app = spawn_app().await;
    let before = app.counts().await;
    let (status, body) = run(&app, &json!({"planId": 614, "userId": 13, "dryRun": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["executionId"], Value::Null);
    assert_eq!(body["data"]["sourceExecutionId"], Value::Null);
    assert_eq!(queued(&body), all_pairs_of_614());
    let message_ids: Vec<&Value> = body["data"]["queued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| &q["messageId"])
        .collect();
    assert!(message_ids.iter().all(|m| m.is_null()), "{body}");
    app.assert_nothing_written_or_published(before).await;
}

#[tokio::test]
async fn a_second_run_while_the_first_is_in_flight_is_409_code_1014_unless_forced() {
    let app = spawn_app().await;
    let (status, first) = run(&app, &json!({"planId": 614, "userId": 13})).await;
    assert_eq!(status, 200, "{first}");
    let first_id = first["data"]["executionId"].as_i64().unwrap();
    let before = app.counts().await;
    let (status, refused) = run(&app, &json!({"planId": 614, "userId": 13})).await;
    assert_eq!((status, code(&refused)), (409, 1014));
    assert_eq!(
        message(&refused),
        format!("Plan 614 is already running (execution {first_id})")
    );
    assert_eq!(app.counts().await, before, "nothing written");
    // a dry run is refused alike
    let (status, _) = run(&app, &json!({"planId": 614, "userId": 13, "dryRun": true})).await;
    assert_eq!(status, 409);
    let (status, forced) = run(&app, &json!({"planId": 614, "userId": 13, "force": true})).await;
    assert_eq!(status, 200, "{forced}");
    assert_ne!(forced["data"]["executionId"], first_id);
    assert_eq!(app.consume("APPIUM", 25, WAIT).await.len(), 24);
}

#[tokio::test]
async fn a_rerun_in_flight_of_the_source_run_holds_the_plan_until_its_pairs_finish() {
    let app = spawn_app().await;
    let (status, rerun) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 113}))
        .await;
    assert_eq!(status, 200, "{rerun}");
    let rerun_id = rerun["data"]["executionId"].as_i64().unwrap();
    let (status, refused) = run(&app, &json!({"planId": 614, "userId": 13})).await;
    assert_eq!((status, code(&refused)), (409, 1014), "{refused}");
    assert_eq!(
        message(&refused),
        format!("Plan 614 is already running (execution {rerun_id})")
    );
    // RUNNING is in flight too
    app.sql(&format!(
        "UPDATE execution_pairs SET status = 'RUNNING' WHERE execution_id = {rerun_id}"
    ))
    .await;
    assert_eq!(
        run(&app, &json!({"planId": 614, "userId": 13})).await.0,
        409
    );
    // an earlier attempt still QUEUED does not count once a later one is terminal
    app.sql(&format!(
        "UPDATE execution_pairs SET status = 'PASSED' WHERE execution_id = {rerun_id}"
    ))
    .await;
    let (status, body) = run(&app, &json!({"planId": 614, "userId": 13})).await;
    assert_eq!(status, 200, "{body}");
}

/// One refused request: its body, token, and the answer it must get.
struct Refusal {
    what: &'static str,
    body: Value,
    token: Option<String>,
    status: u16,
    code: i64,
    message: String,
}

/// Sends each refusal and checks its answer; then that nothing was written
/// or published.
async fn assert_refusals(app: &TestApp, path: &str, refusals: Vec<Refusal>) {
    let before = app.counts().await;
    for r in refusals {
        let (status, body) = app.post(path, r.token.as_deref(), &r.body).await;
        assert_eq!(
            (status, code(&body)),
            (r.status, r.code),
            "{}: {body}",
            r.what
        );
        if r.code == 1001 {
            // serde adds where in the body it stopped
            assert!(message(&body).starts_with(&r.message), "{}: {body}", r.what);
        } else {
            assert_eq!(message(&body), r.message, "{}", r.what);
        }
        assert_eq!(body["data"], Value::Null, "{}", r.what);
    }
    app.assert_nothing_written_or_published(before).await;
}

#[tokio::test]
async fn every_error_of_section_7_answers_in_the_contract_order_and_writes_nothing() {
    let app = spawn_app().await;
    let user = |id: i64| Some(app.token(id, &["PLAN_RUN"]));
    let admin = Some(app.token(99, &["PLAN_RUN", "QUEUE_ADMIN"]));
    let r = |what, body: Value, token: Option<String>, status, code, message: &str| Refusal {
        what,
        body,
        token,
        status,
        code,
        message: message.to_owned(),
    };
    let refusals = vec![
        r("no token", json!({"rerunAll": true}), None, 401, 1009,
          "Full authentication is required to access this resource"),
        r("1001 before 1006", json!({"userId": 13, "scenarioEnvironmentPairs": []}), user(13), 400, 1001,
          "Invalid request: scenarioEnvironmentPairs: unknown field `scenarioEnvironmentPairs`, expected one of `planId`, `userId`, `frameworkType`, `scenarioIds`, `environmentIds`, `force`, `dryRun`"),
        r("a subset id of 0", json!({"planId": 614, "userId": 13, "scenarioIds": [0]}), user(13), 400, 1001,
          "Invalid request: scenarioIds[0]: invalid value: integer `0`, expected an integer id from 1 to 9223372036854775807"),
        r("an id named twice", json!({"planId": 614, "userId": 13, "environmentIds": [222, 222]}), user(13), 400, 1001,
          "Invalid request: environmentIds: 222 is named twice"),
        r("null force", json!({"planId": 614, "userId": 13, "force": null}), user(13), 400, 1001,
          "Invalid request: force: invalid type: null, expected a boolean"),
        r("1006 planId before 1003", json!({"userId": 13, "frameworkType": "cypress"}), user(13), 400, 1006,
          "planId is mandatory"),
        r("1006 userId", json!({"planId": 614}), user(13), 400, 1006, "userId is mandatory"),
        r("1003 before 1010", json!({"planId": 614, "userId": 21, "frameworkType": "cypress"}), user(13), 400, 1003,
          "frameworkType CYPRESS is not supported"),
        r("1010 no PLAN_RUN before 1000", json!({"planId": 999, "userId": 13}), Some(app.token(13, &["PLAN_READ"])), 403, 1010,
          "Access denied: the token lacks the PLAN_RUN authority"),
        r("1010 another user", json!({"planId": 999, "userId": 21}), user(13), 403, 1010,
          "Access denied: the token's subject may not rerun as user 21 without QUEUE_ADMIN"),
        r("1000 before 1002", json!({"planId": 999, "userId": 34}), admin.clone(), 400, 1000, "Plan not found!"),
        r("1002 inactive", json!({"planId": 614, "userId": 34}), admin.clone(), 400, 1002, "User not found!"),
        r("1002 unknown", json!({"planId": 614, "userId": 777}), admin.clone(), 400, 1002, "User not found!"),
        r("1010 membership", json!({"planId": 614, "userId": 55, "scenarioIds": [999]}), user(55), 403, 1010,
          "Access denied: user 55 is not a member of the project of plan 614"),
        r("1006 no framework type anywhere, before 1019", json!({"planId": 615, "userId": 13, "scenarioIds": [999]}), user(13), 400, 1006,
          "frameworkType is mandatory"),
        r("1003 the plan's type is not configured", json!({"planId": 700, "userId": 55}), user(55), 400, 1003,
          "frameworkType SELENIUM is not supported"),
        r("1019 scenario before environment", json!({"planId": 614, "userId": 13, "scenarioIds": [111, 201], "environmentIds": [999]}), user(13), 400, 1019,
          "Scenario 201 is not in plan 614"),
        r("1019 environment", json!({"planId": 614, "userId": 13, "environmentIds": [222, 301]}), user(13), 400, 1019,
          "Environment 301 is not in plan 614"),
        r("1019 before 1018", json!({"planId": 614, "userId": 13, "scenarioIds": [], "environmentIds": [301]}), user(13), 400, 1019,
          "Environment 301 is not in plan 614"),
        r("1018 no scenario", json!({"planId": 614, "userId": 13, "scenarioIds": []}), user(13), 400, 1018,
          "Plan 614 has nothing to run"),
        r("1018 no environment", json!({"planId": 615, "userId": 13, "frameworkType": "JUNIT", "environmentIds": []}), user(13), 400, 1018,
          "Plan 615 has nothing to run"),
    ];
    assert_refusals(&app, "/queue/run", refusals).await;
    // 413 comes with the body, before parsing
    let big = json!({"planId": 614, "userId": 13, "frameworkType": "x".repeat(70_000)});
    let (status, body) = run(&app, &big).await;
    assert_eq!((status, code(&body)), (413, 1001));
    // a plan without environments has nothing to run either
    app.sql("DELETE FROM plan_environments WHERE plan_id = 615")
        .await;
    let (status, body) = run(
        &app,
        &json!({"planId": 615, "userId": 13, "frameworkType": "JUNIT"}),
    )
    .await;
    assert_eq!(
        (status, code(&body), message(&body)),
        (400, 1018, "Plan 615 has nothing to run")
    );
}

#[tokio::test]
async fn more_pairs_than_max_pairs_is_1008_and_comes_before_1014() {
    let app = spawn_app_with(|c| c.limits.max_pairs = 5).await;
    let (status, body) = run(&app, &json!({"planId": 614, "userId": 13})).await;
    assert_eq!((status, code(&body)), (400, 1008));
    assert_eq!(
        message(&body),
        "Too many scenarioEnvironmentPairs: 12 (limit 5)"
    );
    let (status, first) = run(
        &app,
        &json!({"planId": 614, "userId": 13, "scenarioIds": [111]}),
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(
        code(&run(&app, &json!({"planId": 614, "userId": 13})).await.1),
        1008,
        "1008 before the in-flight guard"
    );
    assert_eq!(
        code(
            &run(
                &app,
                &json!({"planId": 614, "userId": 13, "scenarioIds": [112]})
            )
            .await
            .1
        ),
        1014
    );
}

#[tokio::test]
async fn an_idempotency_key_replays_a_run_and_keeps_runs_and_reruns_apart() {
    let app = spawn_app().await;
    let token = app.token(13, &["PLAN_RUN"]);
    let send = |path: &'static str, body: Value| {
        let request = app
            .post_raw(path)
            .bearer_auth(&token)
            .header("idempotency-key", "nightly-614")
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let replayed = response.headers().contains_key("idempotent-replayed");
            let (status, body) = read(response).await;
            (status, body, replayed)
        }
    };
    let body = json!({"planId": 614, "userId": 13, "scenarioIds": [111]});
    let (status, first, replayed) = send("/queue/run", body.clone()).await;
    assert_eq!((status, replayed), (200, false), "{first}");
    let (status, again, replayed) = send("/queue/run", body.clone()).await;
    assert_eq!((status, replayed), (200, true));
    assert_eq!(again, first);
    let mut other = body.clone();
    other["force"] = json!(true);
    assert_eq!(code(&send("/queue/run", other).await.1), 1012);
    let rerun = json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111});
    assert_eq!(code(&send("/queue/rerun", rerun).await.1), 1012);
    assert_eq!(app.counts().await.1, 3, "one run of 3 pairs, nothing else");
}

#[tokio::test]
async fn committed_runs_are_counted_in_the_metrics() {
    let app = spawn_app().await;
    assert_eq!(
        run(
            &app,
            &json!({"planId": 614, "userId": 13, "scenarioIds": [112]})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        run(
            &app,
            &json!({"planId": 614, "userId": 13, "dryRun": true, "force": true})
        )
        .await
        .0,
        200
    );
    let text = app.metrics().await;
    assert!(
        text.contains(r#"plan_queue_runs_accepted_total{framework_type="APPIUM"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"plan_queue_pairs_queued_total{framework_type="APPIUM"} 3"#),
        "{text}"
    );
}

#[tokio::test]
async fn concurrent_runs_of_a_plan_that_never_ran_queue_it_once() {
    let app = spawn_app().await;
    let body = json!({"planId": 615, "userId": 13, "frameworkType": "GAUGE"});
    let answers = futures_util::future::join_all((0..8).map(|_| run(&app, &body))).await;
    let accepted = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(accepted, 1, "{answers:?}");
    assert!(answers
        .iter()
        .filter(|(s, _)| *s != 200)
        .all(|(s, b)| *s == 409 && code(b) == 1014));
}

#[tokio::test]
async fn reruns_racing_a_run_are_never_made_from_the_superseded_source_run() {
    let app = spawn_app().await;
    let rerun_body = json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111, "environmentId": 222});
    let run_body = json!({"planId": 614, "userId": 13});
    for _ in 0..3 {
        let reruns = (0..12).map(|_| app.rerun(&rerun_body));
        let the_run = run(&app, &run_body);
        let (run_answer, rerun_answers) =
            tokio::join!(the_run, futures_util::future::join_all(reruns));
        for (status, body) in &rerun_answers {
            assert_eq!(*status, 200, "{body}");
        }
        let (status, body) = run_answer;
        if status == 200 {
            // the run saw no rerun in flight, so every rerun came after it
            let run_id = body["data"]["executionId"].as_i64().unwrap();
            for (_, rerun) in &rerun_answers {
                assert_eq!(rerun["data"]["sourceExecutionId"], run_id, "{rerun}");
            }
            let mut attempts: Vec<i64> =
                rerun_answers.iter().map(|(_, b)| queued(b)[0].2).collect();
            attempts.sort();
            assert_eq!(attempts, (2..14).collect::<Vec<i64>>());
        } else {
            assert_eq!((status, code(&body)), (409, 1014), "{body}");
        }
        // let the next round start from finished pairs
        app.sql("UPDATE execution_pairs SET status = 'PASSED' WHERE status = 'QUEUED'")
            .await;
    }
}

#[test]
fn the_asyncapi_scenario_run_message_is_the_message_schema_with_its_example() {
    let text = std::fs::read_to_string("docs/asyncapi.yaml").unwrap();
    let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
    let message = &doc["components"]["messages"]["scenarioRun"];
    assert_eq!(
        message["payload"]["schema"]["$ref"],
        "./message.schema.json"
    );
    assert_eq!(
        message["bindings"]["amqp"]["messageType"],
        plan_queue::db::models::MESSAGE_RUN
    );
    let example = &message["examples"][0]["payload"];
    assert_eq!(example["attempt"], 1);
    assert_eq!(example["sourceExecutionId"], example["executionId"]);
    assert!(message_schema().is_valid(example), "{example}");
}

#[tokio::test]
async fn the_fixture_gives_plans_a_framework_type_and_results_their_duration_report_and_detail() {
    let app = spawn_app().await;
    assert_eq!(
        app.count_sql("SELECT count(*) AS n FROM plans WHERE framework_type IS NOT NULL")
            .await,
        2,
        "plans 614 (APPIUM) and 700 (SELENIUM)"
    );
    let path = std::env::temp_dir().join(format!("fixture-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        r#"{"plans": [{"id": 615, "projectId": 7, "name": "Nightly", "frameworkType": " gauge ",
                       "scenarioIds": [111], "environmentIds": [222]}],
            "executions": [{"id": 6000, "planId": 615, "userId": 13, "startedAt": "2026-11-29T10:00:00Z",
                            "results": [{"scenarioId": 111, "environmentId": 222, "status": "FAILED",
                                         "durationMs": 41250, "reportUrl": "https://reports.example/6000",
                                         "detail": "Expected 42.00"}]}]}"#,
    )
    .unwrap();
    let url = app.db_url.clone();
    tokio::task::spawn_blocking(move || {
        let fixture = plan_queue::seed::Fixture::from_file(&path).unwrap();
        let mut conn = plan_queue::db::connect(&url).unwrap();
        fixture.upsert(&mut conn).unwrap();
        std::fs::remove_file(&path).unwrap();
    })
    .await
    .unwrap();
    assert_eq!(
        app.count_sql(
            "SELECT count(*) AS n FROM execution_pairs WHERE execution_id = 6000 AND duration_ms = 41250 \
               AND report_url = 'https://reports.example/6000' AND detail = 'Expected 42.00'"
        )
        .await,
        1
    );
    // the plan's framework type, normalised, is the run's
    let (status, body) = run(&app, &json!({"planId": 615, "userId": 13, "dryRun": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["frameworkType"], "GAUGE");
}
