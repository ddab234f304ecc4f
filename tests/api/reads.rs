//! Reading executions and results back (contract, sections 6 and 11), on the
//! demo fixture and after reruns. Results from runners are simulated in SQL
//! the way the results consumer applies them (section 9): the pair's status
//! and times, and the execution's first start, open pairs and last end.

use crate::helpers::{code, message, pair_body, read, spawn_app, TestApp, DEMO_PAIRS};
use serde_json::{json, Value};

impl TestApp {
    /// GETs `path` with an optional bearer token: status and JSON body.
    async fn get_as(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.client.get(format!("{}{path}", self.address));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.expect("request sent")).await
    }

    /// GETs `path` as user 13 (member of projects 7 and 8) with `PLAN_READ`.
    async fn read_as_13(&self, path: &str) -> (u16, Value) {
        let token = self.token(13, &["PLAN_READ"]);
        self.get_as(path, Some(&token)).await
    }

    /// Applies a runner's result to a pair as the results consumer does:
    /// `RUNNING` starts it, a terminal status ends it (first terminal wins),
    /// and the execution gets its first start, one open pair fewer and, at
    /// the last one, its end. `at` is RFC 3339.
    async fn report(&self, execution_id: i64, pair: (i64, i64), status: &str, at: &str) {
        let terminal = status != "RUNNING";
        self.sql(&format!(
            "WITH p AS (UPDATE execution_pairs \
                           SET status = '{status}', started_at = coalesce(started_at, '{at}'), \
                               finished_at = CASE WHEN {terminal} THEN '{at}'::timestamptz END, \
                               duration_ms = CASE WHEN {terminal} THEN 1500 END, \
                               report_url = CASE WHEN {terminal} THEN 'https://reports.example/{execution_id}' END, \
                               detail = CASE WHEN {terminal} THEN 'reported {status}' END \
                         WHERE execution_id = {execution_id} AND scenario_id = {s} \
                           AND environment_id = {e} AND status IN ('QUEUED', 'RUNNING') \
                     RETURNING 1) \
             UPDATE executions \
                SET started_at = coalesce(started_at, '{at}'), \
                    open_pairs = open_pairs - CASE WHEN {terminal} THEN 1 ELSE 0 END, \
                    finished_at = CASE WHEN {terminal} AND open_pairs = 1 THEN '{at}'::timestamptz END \
              WHERE id = {execution_id} AND EXISTS (SELECT 1 FROM p)",
            s = pair.0,
            e = pair.1
        ))
        .await;
    }

    /// Reruns `pairs` of plan 614 as user 13; the new execution's id.
    async fn rerun_pairs(&self, pairs: &[(i64, i64)]) -> i64 {
        let mut body = pair_body(0, 0);
        let object = body.as_object_mut().unwrap();
        object.remove("scenarioId");
        object.remove("environmentId");
        object.insert(
            "scenarioEnvironmentPairs".to_owned(),
            pairs
                .iter()
                .map(|(s, e)| json!({"scenarioId": s, "environmentId": e}))
                .collect(),
        );
        let (status, answer) = self.rerun(&body).await;
        assert_eq!(status, 200, "{answer}");
        answer["data"]["executionId"].as_i64().unwrap()
    }
}

/// The seven counts, all zero but those given.
fn counts(given: &[(&str, i64)]) -> Value {
    let mut all = json!({"QUEUED": 0, "RUNNING": 0, "PASSED": 0, "FAILED": 0, "ERROR": 0,
                         "SKIPPED": 0, "ABORTED": 0});
    for (status, n) in given {
        all[*status] = json!(n);
    }
    all
}

/// `(scenarioId, environmentId)` of each pair of an answer, in order.
fn pair_ids(pairs: &Value) -> Vec<(i64, i64)> {
    pairs
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["scenarioId"].as_i64().unwrap(),
                p["environmentId"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn find(pairs: &Value, pair: (i64, i64)) -> &Value {
    pairs
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["scenarioId"] == pair.0 && p["environmentId"] == pair.1)
        .unwrap_or_else(|| panic!("no pair {pair:?} in {pairs}"))
}

#[tokio::test]
async fn the_seeded_run_4980_reads_back_finished_with_its_six_pairs() {
    let app = spawn_app().await;
    let (status, body) = app.read_as_13("/executions/4980").await;
    assert_eq!((status, code(&body)), (200, 0), "{body}");
    let data = &body["data"];
    let mut header = data.clone();
    header.as_object_mut().unwrap().remove("pairs");
    assert_eq!(
        header,
        json!({"executionId": 4980, "planId": 614, "kind": "RUN", "sourceExecutionId": 4980,
               "frameworkType": null, "requestedBy": 13,
               "requestedAt": "2026-11-27T10:00:00Z", "startedAt": "2026-11-27T10:00:00Z",
               "finishedAt": "2026-11-27T10:12:00Z", "status": "FINISHED",
               // section 18: a fixture's run is a user's, no retry
               "trigger": "USER", "retryOf": null,
               "counts": counts(&[("PASSED", 2), ("FAILED", 2), ("ERROR", 1), ("ABORTED", 1)])})
    );
    assert_eq!(pair_ids(&data["pairs"]), DEMO_PAIRS);
    assert_eq!(
        data["pairs"][0],
        json!({"scenarioId": 111, "environmentId": 222, "attempt": 1, "status": "FAILED",
               "messageId": null, "publishedAt": null, "startedAt": null, "finishedAt": null,
               "durationMs": null, "reportUrl": null, "detail": null, "reason": null})
    );
}

#[tokio::test]
async fn a_rerun_reads_back_queued_then_running_then_finished() {
    let app = spawn_app().await;
    let rerun = app.rerun_pairs(&[(111, 222), (112, 223)]).await;
    let path = format!("/executions/{rerun}");

    let (status, body) = app.read_as_13(&path).await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(
        (
            &data["kind"],
            &data["sourceExecutionId"],
            &data["frameworkType"]
        ),
        (&json!("RERUN"), &json!(4980), &json!("APPIUM"))
    );
    assert_eq!(
        (&data["status"], &data["startedAt"]),
        (&json!("QUEUED"), &Value::Null)
    );
    assert_eq!(data["counts"], counts(&[("QUEUED", 2)]));
    assert_eq!(pair_ids(&data["pairs"]), [(111, 222), (112, 223)]);
    for pair in data["pairs"].as_array().unwrap() {
        assert_eq!(
            (&pair["attempt"], &pair["status"]),
            (&json!(2), &json!("QUEUED"))
        );
        assert!(pair["messageId"].is_string(), "{pair}");
    }
    // the relay publishes: each pair's message says when
    app.wait_until_pending(0).await;
    let (_, body) = app.read_as_13(&path).await;
    for pair in body["data"]["pairs"].as_array().unwrap() {
        assert!(pair["publishedAt"].is_string(), "{pair}");
    }

    app.report(rerun, (111, 222), "RUNNING", "2026-11-30T09:01:00Z")
        .await;
    let (_, body) = app.read_as_13(&path).await;
    let data = &body["data"];
    assert_eq!(data["status"], "RUNNING");
    assert_eq!(data["startedAt"], "2026-11-30T09:01:00Z");
    assert_eq!(data["finishedAt"], Value::Null);
    assert_eq!(data["counts"], counts(&[("QUEUED", 1), ("RUNNING", 1)]));

    app.report(rerun, (111, 222), "PASSED", "2026-11-30T09:02:00.250Z")
        .await;
    let (_, body) = app.read_as_13(&path).await;
    assert_eq!(
        body["data"]["status"], "RUNNING",
        "one pair is still queued"
    );

    app.report(rerun, (112, 223), "FAILED", "2026-11-30T09:03:00Z")
        .await;
    let (_, body) = app.read_as_13(&path).await;
    let data = &body["data"];
    assert_eq!(data["status"], "FINISHED");
    assert_eq!(data["finishedAt"], "2026-11-30T09:03:00Z");
    assert_eq!(data["counts"], counts(&[("PASSED", 1), ("FAILED", 1)]));
    let passed = find(&data["pairs"], (111, 222));
    assert_eq!(
        (
            &passed["startedAt"],
            &passed["finishedAt"],
            &passed["durationMs"],
            &passed["reportUrl"],
            &passed["detail"]
        ),
        (
            &json!("2026-11-30T09:01:00Z"),
            &json!("2026-11-30T09:02:00.250Z"),
            &json!(1500),
            &json!(format!("https://reports.example/{rerun}")),
            &json!("reported PASSED")
        )
    );
}

#[tokio::test]
async fn the_results_of_the_demo_plan_are_its_source_run_at_attempt_one() {
    let app = spawn_app().await;
    let (status, body) = app.read_as_13("/plans/614/results").await;
    assert_eq!((status, code(&body)), (200, 0), "{body}");
    let data = &body["data"];
    assert_eq!(
        (&data["planId"], &data["sourceExecutionId"]),
        (&json!(614), &json!(4980))
    );
    assert_eq!(
        data["counts"],
        counts(&[("PASSED", 2), ("FAILED", 2), ("ERROR", 1), ("ABORTED", 1)])
    );
    assert_eq!(pair_ids(&data["pairs"]), DEMO_PAIRS);
    assert_eq!(
        data["pairs"][3],
        json!({"scenarioId": 112, "environmentId": 223, "status": "ERROR", "attempt": 1,
               "executionId": 4980, "reason": null, "flaky": false,
               "attempts": [{"attempt": 1, "executionId": 4980, "status": "ERROR"}]})
    );
}

#[tokio::test]
async fn a_pair_that_failed_then_passed_on_a_rerun_is_flaky_and_its_latest_attempt_counts() {
    let app = spawn_app().await;
    let first = app.rerun_pairs(&[(111, 222), (112, 223)]).await;
    app.report(first, (111, 222), "PASSED", "2026-11-30T09:02:00Z")
        .await;
    app.report(first, (112, 223), "FAILED", "2026-11-30T09:03:00Z")
        .await;

    let (_, body) = app.read_as_13("/plans/614/results").await;
    let data = &body["data"];
    assert_eq!(data["sourceExecutionId"], 4980);
    assert_eq!(
        find(&data["pairs"], (111, 222)),
        &json!({"scenarioId": 111, "environmentId": 222, "status": "PASSED", "attempt": 2,
                "executionId": first, "reason": null, "flaky": true,
                "attempts": [{"attempt": 1, "executionId": 4980, "status": "FAILED"},
                             {"attempt": 2, "executionId": first, "status": "PASSED"}]})
    );
    let failed = find(&data["pairs"], (112, 223));
    assert_eq!(
        (&failed["status"], &failed["flaky"]),
        (&json!("FAILED"), &json!(false))
    );
    assert_eq!(
        data["counts"],
        counts(&[("PASSED", 3), ("FAILED", 2), ("ABORTED", 1)])
    );

    // a third attempt, queued: the latest attempt gives the status, flaky stays
    let second = app.rerun_pairs(&[(111, 222)]).await;
    let (_, body) = app.read_as_13("/plans/614/results").await;
    let pair = find(&body["data"]["pairs"], (111, 222));
    assert_eq!(
        (
            &pair["status"],
            &pair["attempt"],
            &pair["executionId"],
            &pair["flaky"]
        ),
        (&json!("QUEUED"), &json!(3), &json!(second), &json!(true))
    );
    assert_eq!(pair["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(
        body["data"]["counts"],
        counts(&[("QUEUED", 1), ("PASSED", 2), ("FAILED", 2), ("ABORTED", 1)])
    );
}

#[tokio::test]
async fn a_plans_executions_come_newest_first_with_counts_and_without_pairs() {
    let app = spawn_app().await;
    let rerun = app.rerun_pairs(&[(113, 224)]).await;
    let (status, body) = app.read_as_13("/plans/614/executions").await;
    assert_eq!((status, code(&body)), (200, 0), "{body}");
    let executions = body["data"]["executions"].as_array().unwrap();
    let ids: Vec<i64> = executions
        .iter()
        .map(|x| x["executionId"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [rerun, 4980, 4970]);
    assert_eq!(body["data"]["nextBefore"], Value::Null);
    assert_eq!(executions[0]["counts"], counts(&[("QUEUED", 1)]));
    assert_eq!(executions[0]["status"], "QUEUED");
    assert!(executions[0].get("pairs").is_none());
    let (_, one) = app.read_as_13("/executions/4970").await;
    let mut expected = one["data"].clone();
    expected.as_object_mut().unwrap().remove("pairs");
    assert_eq!(
        executions[2], expected,
        "an item is the execution without its pairs"
    );
}

#[tokio::test]
async fn pages_of_a_plans_executions_follow_the_cursor_across_equal_request_times() {
    let app = spawn_app().await;
    // 25 reruns requested at the same instant, after the two seeded runs
    app.sql(
        "INSERT INTO executions (id, plan_id, kind, source_execution_id, requested_by, \
                                 framework_type, requested_at) \
         SELECT g, 614, 'RERUN', 4980, 13, 'APPIUM', '2026-11-29T00:00:00Z' \
           FROM generate_series(9001, 9025) g",
    )
    .await;
    let mut expected: Vec<i64> = (9001..=9025).rev().collect();
    expected.extend([4980, 4970]);

    for limit in [10, 9, 1, 27, 100] {
        let mut seen = Vec::new();
        let mut before: Option<i64> = None;
        let mut pages = 0;
        loop {
            let query = match before {
                Some(b) => format!("?limit={limit}&before={b}"),
                None => format!("?limit={limit}"),
            };
            let (status, body) = app
                .read_as_13(&format!("/plans/614/executions{query}"))
                .await;
            assert_eq!(status, 200, "{body}");
            let page = body["data"]["executions"].as_array().unwrap();
            assert!(page.len() <= limit, "limit {limit}");
            seen.extend(page.iter().map(|x| x["executionId"].as_i64().unwrap()));
            pages += 1;
            match body["data"]["nextBefore"].as_i64() {
                Some(next) => {
                    assert_eq!(page.len(), limit, "only a full page has a next one");
                    assert_eq!(Some(&json!(next)), page.last().map(|x| &x["executionId"]));
                    before = Some(next);
                }
                None => break,
            }
        }
        assert_eq!(seen, expected, "limit {limit}");
        assert_eq!(pages, expected.len().div_ceil(limit), "limit {limit}");
    }
    let (_, body) = app.read_as_13("/plans/614/executions").await;
    assert_eq!(body["data"]["executions"].as_array().unwrap().len(), 20);
    assert_eq!(body["data"]["nextBefore"], 9006);
}

#[tokio::test]
async fn every_error_of_the_read_endpoints_answers_as_the_contract_says() {
    let app = spawn_app().await;
    let reader = app.token(13, &["PLAN_READ"]);
    let nobody = app.token(13, &[]);
    let cases: &[(&str, Option<&str>, u16, i64, &str)] = &[
        ("/executions/999999", Some(&reader), 404, 1017, "Execution 999999 not found"),
        ("/executions/0", Some(&reader), 404, 1001, "Invalid request: no resource at /executions/0"),
        ("/executions/abc", None, 404, 1001, "Invalid request: no resource at /executions/abc"),
        ("/executions/-4980", Some(&reader), 404, 1001, "Invalid request: no resource at /executions/-4980"),
        ("/executions/99999999999999999999", Some(&reader), 404, 1001,
            "Invalid request: no resource at /executions/99999999999999999999"),
        ("/plans/1.5/results", Some(&reader), 404, 1001, "Invalid request: no resource at /plans/1.5/results"),
        ("/plans/x/executions", Some(&reader), 404, 1001, "Invalid request: no resource at /plans/x/executions"),
        ("/plans/999/executions", Some(&reader), 404, 1000, "Plan not found!"),
        ("/plans/999/results", Some(&reader), 404, 1000, "Plan not found!"),
        ("/plans/615/results", Some(&reader), 400, 1004, "Plan 615 has no executed results to rerun"),
        ("/plans/614/executions?limit=0", Some(&reader), 400, 1001,
            "Invalid request: limit must be an integer from 1 to 100, got `0`"),
        ("/plans/614/executions?limit=101", Some(&reader), 400, 1001,
            "Invalid request: limit must be an integer from 1 to 100, got `101`"),
        ("/plans/614/executions?limit=ten", Some(&reader), 400, 1001,
            "Invalid request: limit must be an integer from 1 to 100, got `ten`"),
        ("/plans/614/executions?before=0", Some(&reader), 400, 1001,
            "Invalid request: before must be an execution id (an integer from 1 to 9223372036854775807), got `0`"),
        ("/plans/614/executions?before=5100", Some(&reader), 400, 1001,
            "Invalid request: before: 5100 is not an execution of plan 614"),
        ("/plans/614/executions?before=999999", Some(&reader), 400, 1001,
            "Invalid request: before: 999999 is not an execution of plan 614"),
        ("/plans/614/executions?limit=5&limit=6", Some(&reader), 400, 1001,
            "Invalid request: query parameter `limit` given more than once"),
        ("/plans/614/executions?page=2", Some(&reader), 400, 1001,
            "Invalid request: unknown query parameter `page`, expected `limit` or `before`"),
        ("/executions/4980", None, 401, 1009, "Full authentication is required to access this resource"),
        ("/plans/614/executions", None, 401, 1009, "Full authentication is required to access this resource"),
        ("/plans/614/results", Some("not.a.token"), 401, 1009, "Full authentication is required to access this resource"),
        ("/executions/4980", Some(&nobody), 403, 1010,
            "Access denied: the token lacks the PLAN_READ, PLAN_RUN or QUEUE_ADMIN authority"),
        ("/plans/614/executions", Some(&nobody), 403, 1010,
            "Access denied: the token lacks the PLAN_READ, PLAN_RUN or QUEUE_ADMIN authority"),
        ("/plans/614/results", Some(&nobody), 403, 1010,
            "Access denied: the token lacks the PLAN_READ, PLAN_RUN or QUEUE_ADMIN authority"),
    ];
    for (path, token, status, expected_code, expected_message) in cases {
        let (got, body) = app.get_as(path, *token).await;
        assert_eq!(
            (got, code(&body), message(&body)),
            (*status, *expected_code, *expected_message),
            "{path}"
        );
        assert_eq!(body["data"], Value::Null, "{path}");
    }
}

#[tokio::test]
async fn reading_needs_plan_read_plan_run_or_queue_admin() {
    let app = spawn_app().await;
    for authorities in [&["PLAN_READ"][..], &["PLAN_RUN"], &["QUEUE_ADMIN"]] {
        let token = app.token(13, authorities);
        for path in [
            "/executions/4980",
            "/plans/614/executions",
            "/plans/614/results",
        ] {
            let (status, body) = app.get_as(path, Some(&token)).await;
            assert_eq!((status, code(&body)), (200, 0), "{authorities:?} {path}");
        }
    }
}

#[tokio::test]
async fn a_non_member_sees_another_projects_plans_and_executions_as_unknown_ones() {
    let app = spawn_app().await;
    // user 77 belongs to project 9 only, whose plan 900 never ran
    app.sql(
        "INSERT INTO users (id, username) VALUES (77, 'other.team'); \
         INSERT INTO projects (id, name) VALUES (9, 'Other app'); \
         INSERT INTO project_members (project_id, user_id) VALUES (9, 77); \
         INSERT INTO plans (id, project_id, name) VALUES (900, 9, 'Other smoke')",
    )
    .await;
    let outsider = app.token(77, &["PLAN_READ", "PLAN_RUN"]);
    let unknown_plan =
        json!({"data": null, "result": {"code": 1000, "message": "Plan not found!"}});
    for path in [
        "/plans/614/results",
        "/plans/614/executions",
        "/plans/99999/results",
    ] {
        let (status, body) = app.get_as(path, Some(&outsider)).await;
        assert_eq!((status, &body), (404, &unknown_plan), "{path}");
    }
    let (status, body) = app.get_as("/executions/4980", Some(&outsider)).await;
    assert_eq!((status, message(&body)), (404, "Execution 4980 not found"));
    // a member of project 7 only (user 21) does not see project 8's plan 700 and its run
    let other = app.token(21, &["PLAN_READ"]);
    let (status, body) = app.get_as("/plans/700/results", Some(&other)).await;
    assert_eq!((status, &body), (404, &unknown_plan));
    let (status, body) = app.get_as("/executions/5100", Some(&other)).await;
    assert_eq!((status, code(&body)), (404, 1017));
    // while the member sees its own plan (never run), and user 13 does not
    let (status, body) = app.get_as("/plans/900/results", Some(&outsider)).await;
    assert_eq!((status, code(&body)), (400, 1004));
    let (status, body) = app.read_as_13("/plans/900/results").await;
    assert_eq!((status, &body), (404, &unknown_plan));
    // QUEUE_ADMIN reads every plan, whoever it is
    let admin = app.token(77, &["QUEUE_ADMIN"]);
    for path in [
        "/plans/700/results",
        "/executions/5100",
        "/plans/614/executions",
    ] {
        let (status, body) = app.get_as(path, Some(&admin)).await;
        assert_eq!((status, code(&body)), (200, 0), "{path}");
    }
}

#[tokio::test]
async fn the_read_endpoints_answer_head_and_refuse_other_methods_with_allow() {
    let app = spawn_app().await;
    let token = app.token(13, &["PLAN_READ"]);
    for path in [
        "/executions/4980",
        "/plans/614/executions",
        "/plans/614/results",
    ] {
        let url = format!("{}{path}", app.address);
        let head = app
            .client
            .head(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 200, "{path}");
        assert!(head.text().await.unwrap().is_empty());
        for method in [
            reqwest::Method::POST,
            reqwest::Method::PUT,
            reqwest::Method::DELETE,
        ] {
            let response = app
                .client
                .request(method.clone(), &url)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.headers()["allow"], "GET, HEAD", "{method} {path}");
            let (status, body) = read(response).await;
            assert_eq!((status, code(&body)), (405, 1001), "{method} {path}");
        }
    }
}

/// A pair's `publishedAt` outlives its dispatch row: the outbox upkeep deletes
/// published rows after `OUTBOX_RETENTION_SECS` and leaves the time on the
/// pair, so the execution reads the same afterwards (an attacker's finding:
/// `publishedAt` turned back to null, under the same `ETag`).
#[tokio::test]
async fn a_pairs_published_at_reads_the_same_after_the_outbox_row_is_deleted() {
    let app = spawn_app().await;
    let rerun = app.rerun_pairs(&[(111, 222), (112, 223)]).await;
    app.wait_until_pending(0).await;
    // published two hours ago, as far as the retention is concerned
    app.sql(&format!(
        "UPDATE dispatches SET published_at = published_at - interval '2 hours' \
          WHERE execution_id = {rerun}"
    ))
    .await;
    let path = format!("/executions/{rerun}");
    let (_, before) = app.read_as_13(&path).await;
    let published: Vec<Value> = before["data"]["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| pair["publishedAt"].clone())
        .collect();
    assert!(published.iter().all(Value::is_string), "{before}");

    let pool = plan_queue::db::build_relay_pool(
        &app.db_url,
        1,
        std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(60),
    );
    let deleted = tokio::task::spawn_blocking(move || {
        plan_queue::relay::upkeep::delete_all_due(&pool, std::time::Duration::from_secs(3600))
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(
        app.count_sql(&format!(
            "SELECT count(*) AS n FROM dispatches WHERE execution_id = {rerun}"
        ))
        .await,
        0
    );
    let (status, after) = app.read_as_13(&path).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["data"], before["data"], "the answer is the same");
}
