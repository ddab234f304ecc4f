//! `GET /plans` and `GET /plans/{planId}`: the plans a caller may read, with
//! names, sizes and latest run (token rules of the contract's section 11).

use crate::helpers::{code, message, read, spawn_app, TestApp};
use serde_json::Value;

/// `GET path` with `token`: status and JSON body.
async fn get_as(app: &TestApp, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = app.client.get(format!("{}{path}", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    read(request.send().await.unwrap()).await
}

fn plan_ids(body: &Value) -> Vec<i64> {
    body["data"]["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["planId"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn plans_lists_the_plans_of_the_subjects_projects_with_their_latest_run() {
    let app = spawn_app().await;
    let (status, body) = get_as(&app, "/plans", Some(&app.token(13, &["PLAN_READ"]))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(plan_ids(&body), [614, 615, 700]);
    let plan = &body["data"]["plans"][0];
    assert_eq!(plan["name"], "Checkout smoke");
    assert_eq!(plan["projectId"], 7);
    assert_eq!(plan["projectName"], "Shop mobile app");
    assert_eq!(plan["frameworkType"], "APPIUM");
    assert_eq!(plan["scenarioCount"], 4);
    assert_eq!(plan["environmentCount"], 3);
    assert_eq!(plan["latestRun"]["executionId"], 4980);
    assert_eq!(plan["latestRun"]["kind"], "RUN");
    assert_eq!(plan["latestRun"]["status"], "FINISHED");
    let (_, results) = get_as(
        &app,
        "/plans/614/results",
        Some(&app.token(13, &["PLAN_RUN"])),
    )
    .await;
    assert_eq!(plan["resultCounts"], results["data"]["counts"]);
    let never_ran = &body["data"]["plans"][1];
    assert_eq!(never_ran["latestRun"], Value::Null);
    assert_eq!(never_ran["resultCounts"], Value::Null);

    let (_, mobile_only) = get_as(&app, "/plans", Some(&app.token(21, &["PLAN_RUN"]))).await;
    assert_eq!(plan_ids(&mobile_only), [614, 615]);
    let (_, admin) = get_as(&app, "/plans", Some(&app.token(99, &["QUEUE_ADMIN"]))).await;
    assert_eq!(plan_ids(&admin), [614, 615, 700]);
    let (_, stranger) = get_as(&app, "/plans", Some(&app.token(99, &["PLAN_READ"]))).await;
    assert_eq!(plan_ids(&stranger), Vec::<i64>::new());
}

#[tokio::test]
async fn the_counts_of_the_plans_list_follow_a_rerun_of_the_latest_run() {
    let app = spawn_app().await;
    let (status, body) = app
        .rerun(
            &serde_json::json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
                                   "statuses": ["FAILED", "ERROR"]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let token = app.token(13, &["PLAN_RUN"]);
    let (_, plans) = get_as(&app, "/plans", Some(&token)).await;
    let (_, results) = get_as(&app, "/plans/614/results", Some(&token)).await;
    let counts = &plans["data"]["plans"][0]["resultCounts"];
    assert_eq!(counts, &results["data"]["counts"]);
    assert_eq!(counts["QUEUED"], 3, "{counts}");
}

#[tokio::test]
async fn a_plan_names_its_scenarios_and_environments() {
    let app = spawn_app().await;
    let (status, body) = get_as(&app, "/plans/614", Some(&app.token(21, &["PLAN_RUN"]))).await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["planId"], 614);
    assert_eq!(data["name"], "Checkout smoke");
    let names = |list: &Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        names(&data["scenarios"]),
        [
            "Login with valid credentials",
            "Add item to basket",
            "Checkout with saved card",
            "Apply expired coupon"
        ]
    );
    assert_eq!(
        names(&data["environments"]),
        ["Pixel 8", "iPhone 15", "Galaxy S23"]
    );
    assert_eq!(
        data["environments"][1],
        serde_json::json!({"id": 223, "name": "iPhone 15", "platform": "IOS", "version": "17.4"})
    );
    assert_eq!(data["scenarios"][0]["id"], 111);
}

#[tokio::test]
async fn a_plan_of_another_project_answers_as_an_unknown_one_and_tokens_are_checked() {
    let app = spawn_app().await;
    let reader = app.token(55, &["PLAN_READ"]);
    for path in ["/plans/614", "/plans/99999"] {
        let (status, body) = get_as(&app, path, Some(&reader)).await;
        assert_eq!((status, code(&body)), (404, 1000), "{path}: {body}");
        assert_eq!(message(&body), "Plan not found!");
    }
    let (status, body) = get_as(&app, "/plans/0", Some(&reader)).await;
    assert_eq!((status, code(&body)), (404, 1001), "{body}");
    for path in ["/plans", "/plans/700"] {
        let (status, body) = get_as(&app, path, None).await;
        assert_eq!((status, code(&body)), (401, 1009), "{path}: {body}");
        let (status, body) = get_as(&app, path, Some(&app.token(55, &["OTHER"]))).await;
        assert_eq!((status, code(&body)), (403, 1010), "{path}: {body}");
    }
    let (status, _) = get_as(&app, "/plans/700", Some(&reader)).await;
    assert_eq!(status, 200);
}
