//! Every row of the contract's error table: status, code, message, and that
//! nothing was written.

use crate::helpers::{
    assert_no_leak, assert_token_refused, code, message, spawn_app, spawn_app_with, valid_rerun,
    TestApp,
};
use serde_json::{json, Value};

/// Sends `body` as user 13 and asserts the status, code and exact message,
/// and that no execution or dispatch row appeared.
async fn assert_refused(
    app: &TestApp,
    body: Value,
    status: u16,
    expected_code: i64,
    expected_message: &str,
) {
    let before = app.counts().await;
    let (got_status, got) = app.rerun(&body).await;
    assert_eq!(
        (got_status, code(&got), message(&got)),
        (status, expected_code, expected_message),
        "for {body}"
    );
    assert_eq!(got["data"], Value::Null);
    assert_eq!(app.counts().await, before, "a refused request wrote rows");
}

#[tokio::test]
async fn a_request_without_a_token_is_1009_with_a_bearer_challenge() {
    let app = spawn_app().await;
    let response = app
        .post_raw("/queue/rerun")
        .json(&valid_rerun(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let (_, body) = crate::helpers::read(response).await;
    assert_eq!(code(&body), 1009);
    assert_eq!(
        message(&body),
        "Full authentication is required to access this resource"
    );
}

#[tokio::test]
async fn bad_tokens_are_1009_with_invalid_token() {
    let app = spawn_app().await;
    let wrong_key =
        plan_queue::auth::issue_token("another-secret", 13, &["PLAN_RUN".into()], 60).unwrap();
    let expired = {
        use jsonwebtoken::{encode, EncodingKey, Header};
        let now = jsonwebtoken::get_current_timestamp();
        let claims = json!({"sub": "13", "exp": now - 3600, "authorities": ["PLAN_RUN"]});
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"test-secret"),
        )
        .unwrap()
    };
    for token in [wrong_key.as_str(), expired.as_str(), "not-a-jwt", ""] {
        assert_token_refused(&app, token, "a bad token").await;
    }
    assert_eq!(app.counts().await.1, 0);
}

#[tokio::test]
async fn malformed_requests_are_1001_and_name_the_problem() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"planId": "614", "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111}),
            "planId",
        ),
        (
            json!({"planId": 614, "userId": 0, "frameworkType": "APPIUM", "scenarioId": 111}),
            "userId",
        ),
        (
            json!({"planId": 614, "userId": 13, "frameworkType": 5, "scenarioId": 111}),
            "frameworkType",
        ),
        (
            json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111, "rerunAll": true}),
            "rerunAll",
        ),
        (
            json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
                "scenarioEnvironmentPairs": [{"scenarioId": 111, "environmentId": -1}]}),
            "environmentId",
        ),
    ];
    for (body, needle) in cases {
        let before = app.counts().await;
        let (status, got) = app.rerun(&body).await;
        assert_eq!((status, code(&got)), (400, 1001), "{body}");
        assert!(message(&got).starts_with("Invalid request: "), "{got}");
        assert!(message(&got).contains(needle), "{body} → {got}");
        assert_eq!(app.counts().await, before);
    }
    let token = app.token(13, &["PLAN_RUN"]);
    let response = app
        .post_raw("/queue/rerun")
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{\"planId\": 614,")
        .send()
        .await
        .unwrap();
    let (status, got) = crate::helpers::read(response).await;
    assert_eq!((status, code(&got)), (400, 1001));
    assert!(message(&got).contains("malformed JSON"), "{got}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_code_1001() {
    let app = spawn_app_with(|c| c.http.body_limit = 1024).await;
    let pairs: Vec<Value> = (0..200).map(|i| json!({"scenarioId": i + 1})).collect();
    let body = json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioEnvironmentPairs": pairs});
    assert_refused(
        &app,
        body,
        413,
        1001,
        "Invalid request: body larger than 1024 bytes",
    )
    .await;
}

#[tokio::test]
async fn missing_fields_are_1006_with_the_original_texts() {
    let app = spawn_app().await;
    let cases = [
        (
            json!({"userId": 13, "frameworkType": "APPIUM", "scenarioId": 111}),
            "planId is mandatory",
        ),
        (
            json!({"planId": 614, "frameworkType": "APPIUM", "scenarioId": 111}),
            "userId is mandatory",
        ),
        (
            json!({"planId": 614, "userId": 13, "scenarioId": 111}),
            "frameworkType is mandatory",
        ),
        (
            json!({"planId": 614, "userId": 13, "frameworkType": null, "scenarioId": 111}),
            "frameworkType is mandatory",
        ),
        (
            json!({"planId": 614, "userId": 13, "frameworkType": " ", "scenarioId": 111}),
            "frameworkType is mandatory",
        ),
        (
            json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM"}),
            "At least one scenarioEnvironmentPair is required",
        ),
        (
            json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioEnvironmentPairs": []}),
            "At least one scenarioEnvironmentPair is required",
        ),
        (
            json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioEnvironmentPairs": [{"environmentId": 222}]}),
            "scenarioId is mandatory",
        ),
    ];
    for (body, text) in cases {
        assert_refused(&app, body, 400, 1006, text).await;
    }
}

#[tokio::test]
async fn an_unconfigured_framework_type_is_1003() {
    let app = spawn_app().await;
    let body = json!({"planId": 614, "userId": 13, "frameworkType": "cypress", "scenarioId": 111});
    assert_refused(
        &app,
        body,
        400,
        1003,
        "frameworkType CYPRESS is not supported",
    )
    .await;
}

#[tokio::test]
async fn a_pair_named_twice_is_1007_also_after_expansion() {
    let app = spawn_app().await;
    let literal = json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
        "scenarioEnvironmentPairs": [{"scenarioId": 111, "environmentId": 222}, {"scenarioId": 111, "environmentId": 222}]});
    assert_refused(
        &app,
        literal,
        400,
        1007,
        "Duplicate scenarioEnvironmentPair: scenario 111 on environment 222",
    )
    .await;
    let expanded = json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
        "scenarioEnvironmentPairs": [{"scenarioId": 111, "environmentId": 223}, {"scenarioId": 111}]});
    assert_refused(
        &app,
        expanded,
        400,
        1007,
        "Duplicate scenarioEnvironmentPair: scenario 111 on environment 223",
    )
    .await;
}

#[tokio::test]
async fn more_pairs_than_max_pairs_is_1008_also_after_expansion() {
    let app = spawn_app_with(|c| c.limits.max_pairs = 2).await;
    let literal = json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
        "scenarioEnvironmentPairs": [{"scenarioId": 111, "environmentId": 222}, {"scenarioId": 112, "environmentId": 222},
                                     {"scenarioId": 113, "environmentId": 223}]});
    assert_refused(
        &app,
        literal,
        400,
        1008,
        "Too many scenarioEnvironmentPairs: 3 (limit 2)",
    )
    .await;
    // 111 ran on 222 and 223, 113 on 223 and 224: four pairs after expansion
    let expanded = json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
        "scenarioEnvironmentPairs": [{"scenarioId": 111}, {"scenarioId": 113}]});
    assert_refused(
        &app,
        expanded,
        400,
        1008,
        "Too many scenarioEnvironmentPairs: 4 (limit 2)",
    )
    .await;
}

#[tokio::test]
async fn access_is_denied_with_1010_for_each_reason() {
    let app = spawn_app().await;
    let before = app.counts().await;
    // no PLAN_RUN
    let token = app.token(13, &["PLAN_VIEW"]);
    let (status, body) = app
        .post("/queue/rerun", Some(&token), &valid_rerun(false))
        .await;
    assert_eq!((status, code(&body)), (403, 1010));
    assert!(message(&body).starts_with("Access denied: "), "{body}");
    // subject is another user, without QUEUE_ADMIN
    let token = app.token(21, &["PLAN_RUN"]);
    let (status, body) = app
        .post("/queue/rerun", Some(&token), &valid_rerun(false))
        .await;
    assert_eq!((status, code(&body)), (403, 1010), "{body}");
    // user 55 is not a member of project 7 (plan 614), even as QUEUE_ADMIN caller
    let token = app.token(1, &["PLAN_RUN", "QUEUE_ADMIN"]);
    let mut body = valid_rerun(false);
    body["userId"] = json!(55);
    let (status, got) = app.post("/queue/rerun", Some(&token), &body).await;
    assert_eq!((status, code(&got)), (403, 1010), "{got}");
    assert_eq!(app.counts().await, before);
}

#[tokio::test]
async fn an_unknown_plan_is_1000() {
    let app = spawn_app().await;
    let body =
        json!({"planId": 999999, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111});
    assert_refused(&app, body, 400, 1000, "Plan not found!").await;
}

#[tokio::test]
async fn an_unknown_or_inactive_user_is_1002() {
    let app = spawn_app().await;
    let admin = app.token(1, &["PLAN_RUN", "QUEUE_ADMIN"]);
    for user in [34, 424242] {
        let mut body = valid_rerun(false);
        body["userId"] = json!(user);
        let (status, got) = app.post("/queue/rerun", Some(&admin), &body).await;
        assert_eq!(
            (status, code(&got), message(&got)),
            (400, 1002, "User not found!"),
            "user {user}"
        );
    }
    assert_eq!(app.counts().await.1, 0);
}

#[tokio::test]
async fn a_plan_that_never_ran_is_1004() {
    let app = spawn_app().await;
    let body = json!({"planId": 615, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111, "environmentId": 222});
    assert_refused(
        &app,
        body,
        400,
        1004,
        "Plan 615 has no executed results to rerun",
    )
    .await;
}

#[tokio::test]
async fn a_pair_outside_the_last_run_is_1005() {
    let app = spawn_app().await;
    // 114 on 222 ran only in the older run 4970, not in the latest full run 4980
    let body = json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 114, "environmentId": 222});
    assert_refused(
        &app,
        body,
        400,
        1005,
        "Scenario 114 on environment 222 is not in the last executed results of plan 614",
    )
    .await;
    let body = json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 114});
    assert_refused(
        &app,
        body,
        400,
        1005,
        "Scenario 114 on environment any is not in the last executed results of plan 614",
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_database_is_503_code_1011_with_retry_after_and_leaks_nothing() {
    let mut app = spawn_app().await;
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    let url = format!("postgres://postgres:{password}@127.0.0.1:1/nowhere");
    app.restart_with(|c| {
        c.database.url = url;
        c.database.checkout_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let token = app.token(13, &["PLAN_RUN"]);
    let response = app
        .post_raw("/queue/rerun")
        .bearer_auth(&token)
        .json(&valid_rerun(false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let (_, body) = crate::helpers::read(response).await;
    assert_eq!(
        (code(&body), message(&body)),
        (1011, "Service unavailable: database")
    );
    // neither the body nor any log line shows the password, the token or SQL
    let secrets = [
        password.as_str(),
        token.as_str(),
        crate::helpers::JWT_SECRET,
    ];
    assert_no_leak(&body.to_string(), &secrets);
    assert_no_leak(&body.to_string(), &["127.0.0.1", "nowhere"]);
    let lines = crate::helpers::logs();
    assert!(
        lines.iter().any(|l| l.contains("database unavailable")),
        "the outage is logged for operators"
    );
    for line in &lines {
        assert_no_leak(line, &secrets);
    }
}

#[tokio::test]
async fn an_internal_error_is_an_opaque_1099() {
    let app = spawn_app().await;
    app.sql("ALTER TABLE project_members RENAME TO project_members_gone")
        .await;
    let (status, body) = app.rerun(&valid_rerun(false)).await;
    assert_eq!(
        (status, code(&body), message(&body)),
        (500, 1099, "INTERNAL_SERVER_ERROR")
    );
    let text = body.to_string();
    assert!(
        !text.contains("project_members") && !text.contains("relation"),
        "{text}"
    );
    assert_eq!(app.counts().await.1, 0);
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_the_envelope() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/nope", app.address))
        .send()
        .await
        .unwrap();
    let (status, body) = crate::helpers::read(response).await;
    assert_eq!((status, code(&body)), (404, 1001));
    let response = app
        .client
        .get(format!("{}/queue/rerun", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "POST");
    let (status, body) = crate::helpers::read(response).await;
    assert_eq!((status, code(&body)), (405, 1001));
    // the GET resources: other methods are 405 too (found by schemathesis'
    // unsupported_method check), and HEAD is served
    for path in [
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/docs",
    ] {
        let response = app
            .client
            .delete(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["allow"], "GET, HEAD", "{path}");
        let (status, body) = crate::helpers::read(response).await;
        assert_eq!((status, code(&body)), (405, 1001), "{path}");
    }
    let response = app
        .client
        .head(format!("{}/health", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn content_types_other_than_json_are_415_code_1001() {
    let app = spawn_app().await;
    let token = app.token(13, &["PLAN_RUN"]);
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "text/json",
        "",
    ] {
        let response = app
            .post_raw("/queue/rerun")
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(valid_rerun(false).to_string())
            .send()
            .await
            .unwrap();
        let (status, body) = crate::helpers::read(response).await;
        assert_eq!(
            (status, code(&body)),
            (415, 1001),
            "{content_type:?}: {body}"
        );
    }
    let response = app
        .post_raw("/queue/rerun")
        .bearer_auth(&token)
        .header("content-type", "application/json; charset=utf-8")
        .body(valid_rerun(false).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
