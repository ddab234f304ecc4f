//! Reads a live page can poll (contract, section 22): every read answers
//! with an `ETag`, a request whose `If-None-Match` names the current tag is
//! 304 with no body, the tag changes with every change of the answer (a
//! result applied, a rerun queued, a cancel, a catalogue change of the
//! plan), and `attempts=none` gives a plan's results without the attempts.

use crate::ends::cancel;
use crate::helpers::{code, read, spawn_app, TestApp};
use crate::results::{publish, wait_consumer};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The reads of plan 614 (sections 11 and 19) a page polls.
const PLAN_READS: [&str; 6] = [
    "/plans/614/results",
    "/plans/614/results?attempts=none",
    "/plans/614/executions",
    "/plans/614/executions?limit=2",
    "/plans/614/flakiness",
    "/plans/614/flakiness?runs=5",
];

/// An answer with its headers' `ETag` and its raw body.
struct Tagged {
    status: u16,
    etag: Option<String>,
    body: String,
}

impl TestApp {
    /// GETs `path` with `token` and, when given, `If-None-Match`.
    async fn get_tagged(&self, path: &str, token: &str, if_none_match: Option<&str>) -> Tagged {
        let mut request = self
            .client
            .get(format!("{}{path}", self.address))
            .bearer_auth(token);
        if let Some(tags) = if_none_match {
            request = request.header("If-None-Match", tags);
        }
        let response = request.send().await.expect("request sent");
        let etag = response
            .headers()
            .get("ETag")
            .map(|v| v.to_str().unwrap().to_owned());
        Tagged {
            status: response.status().as_u16(),
            etag,
            body: response.text().await.unwrap(),
        }
    }

    /// The current tag of each of `paths`, read as user 13.
    async fn tags_of(&self, paths: &[String]) -> BTreeMap<String, String> {
        let token = self.token(13, &["PLAN_READ"]);
        let mut tags = BTreeMap::new();
        for path in paths {
            let answer = self.get_tagged(path, &token, None).await;
            assert_eq!(answer.status, 200, "{path}: {}", answer.body);
            tags.insert(path.clone(), answer.etag.expect("an ETag"));
        }
        tags
    }

    /// Asserts that each read of `old` answers 200 with another tag than
    /// the one it had; the new tags.
    async fn assert_retagged(
        &self,
        old: &BTreeMap<String, String>,
        after: &str,
    ) -> BTreeMap<String, String> {
        let token = self.token(13, &["PLAN_READ"]);
        let mut new = BTreeMap::new();
        for (path, tag) in old {
            let answer = self.get_tagged(path, &token, Some(tag)).await;
            assert_eq!(answer.status, 200, "{path} after {after}: {}", answer.body);
            let etag = answer.etag.expect("an ETag");
            assert_ne!(&etag, tag, "{path} kept its tag after {after}");
            new.insert(path.clone(), etag);
        }
        new
    }
}

/// The paths of plan 614's reads and of the executions `ids`.
fn reads_of(ids: &[i64]) -> Vec<String> {
    PLAN_READS
        .iter()
        .map(|p| p.to_string())
        .chain(ids.iter().map(|id| format!("/executions/{id}")))
        .collect()
}

/// Reruns `(scenario, environment)` of plan 614 as user 13 on APPIUM and
/// waits until the relay published its message (a publication changes the
/// execution's `publishedAt`, so its tag); the execution and message ids.
async fn rerun_published(app: &TestApp, pair: (i64, i64)) -> (i64, String) {
    let (status, body) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
                       "scenarioEnvironmentPairs": [{"scenarioId": pair.0, "environmentId": pair.1}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    app.wait_until_pending(0).await;
    let id = body["data"]["executionId"].as_i64().unwrap();
    let message_id = body["data"]["queued"][0]["messageId"].as_str().unwrap();
    (id, message_id.to_owned())
}

#[tokio::test]
async fn every_read_answers_304_with_no_body_when_if_none_match_names_its_tag() {
    let app = spawn_app().await;
    let member = app.token(13, &["PLAN_READ"]);
    let catalog = app.token(1, &["CATALOG_WRITE"]);
    let mut reads: Vec<(String, &str)> = reads_of(&[4980, 5100])
        .into_iter()
        .map(|p| (p, member.as_str()))
        .collect();
    reads.push(("/catalog/plans/614".to_owned(), catalog.as_str()));
    let mut seen = Vec::new();
    for (path, token) in &reads {
        let first = app.get_tagged(path, token, None).await;
        assert_eq!(first.status, 200, "{path}: {}", first.body);
        let tag = first.etag.expect("an ETag on a 200");
        assert!(tag.starts_with('"') && tag.ends_with('"'), "{path}: {tag}");
        for if_none_match in [
            tag.clone(),
            format!("\"another\", {tag}"),
            format!("W/{tag}"),
            "*".to_owned(),
        ] {
            let again = app.get_tagged(path, token, Some(&if_none_match)).await;
            assert_eq!(again.status, 304, "{path} with {if_none_match}");
            assert_eq!(again.body, "", "{path}: a 304 has no body");
            assert_eq!(again.etag.as_ref(), Some(&tag), "{path}");
        }
        let other = app.get_tagged(path, token, Some("\"another\"")).await;
        assert_eq!(
            (other.status, other.etag.as_ref()),
            (200, Some(&tag)),
            "{path}"
        );
        seen.push(tag);
    }
    // the catalogue keeps its version as the tag (section 20)
    assert_eq!(seen.last().map(String::as_str), Some("\"1\""));
    let distinct: std::collections::HashSet<&String> = seen.iter().collect();
    assert_eq!(distinct.len(), seen.len(), "each read has its own tag");
}

#[tokio::test]
async fn a_rerun_a_result_a_cancel_and_a_catalogue_change_give_the_reads_new_tags() {
    let app = spawn_app().await;
    wait_consumer(&app).await;
    let tags = app.tags_of(&reads_of(&[4980])).await;

    let (rerun, message_id) = rerun_published(&app, (111, 222)).await;
    let mut tags = app.assert_retagged(&tags, "a rerun").await;
    tags.extend(app.tags_of(&reads_of(&[rerun])).await);

    publish(
        &app,
        &[
            json!({"messageId": message_id, "executionId": rerun, "scenarioId": 111,
                 "environmentId": 222, "attempt": 2, "status": "PASSED",
                 "at": "2026-11-30T09:03:10Z"}),
        ],
    )
    .await;
    let started = std::time::Instant::now();
    while app
        .count_sql(&format!(
            "SELECT count(*) AS n FROM execution_pairs \
              WHERE execution_id = {rerun} AND status = 'PASSED'"
        ))
        .await
        == 0
    {
        assert!(started.elapsed().as_secs() < 20, "the result never applied");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let tags = app.assert_retagged(&tags, "a result").await;

    let (second, _) = rerun_published(&app, (112, 222)).await;
    let mut tags = app.tags_of(&tags.into_keys().collect::<Vec<_>>()).await;
    tags.extend(app.tags_of(&reads_of(&[second])).await);
    let (status, body) = cancel(&app, &format!("/executions/{second}/cancel"), 13).await;
    assert_eq!((status, code(&body)), (200, 0), "{body}");
    let tags = app.assert_retagged(&tags, "a cancel").await;

    let catalog = app.token(1, &["CATALOG_WRITE"]);
    let (_, plan) = read(
        app.client
            .get(format!("{}/catalog/plans/614", app.address))
            .bearer_auth(&catalog)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let mut plan = plan["data"].clone();
    let fields = plan.as_object_mut().unwrap();
    fields.remove("id");
    fields.remove("version");
    fields.insert("name".to_owned(), json!("Checkout smoke, renamed"));
    let response = app
        .client
        .put(format!("{}/catalog/plans/614", app.address))
        .bearer_auth(&catalog)
        .json(&plan)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.assert_retagged(&tags, "a catalogue change of the plan")
        .await;
}

#[tokio::test]
async fn results_without_attempts_give_each_pairs_attempt_count_and_nothing_else_changes() {
    let app = spawn_app().await;
    rerun_published(&app, (111, 222)).await;
    let member = app.token(13, &["PLAN_READ"]);
    let body = |answer: Tagged| -> Value {
        assert_eq!(answer.status, 200, "{}", answer.body);
        serde_json::from_str(&answer.body).unwrap()
    };
    let all = body(app.get_tagged("/plans/614/results", &member, None).await);
    let default = body(
        app.get_tagged("/plans/614/results?attempts=all", &member, None)
            .await,
    );
    assert_eq!(all, default, "attempts=all is the default");
    let none = body(
        app.get_tagged("/plans/614/results?attempts=none", &member, None)
            .await,
    );
    let mut expected = all.clone();
    for pair in expected["data"]["pairs"].as_array_mut().unwrap() {
        let fields = pair.as_object_mut().unwrap();
        let attempts = fields.remove("attempts").unwrap();
        fields.insert(
            "attemptCount".to_owned(),
            json!(attempts.as_array().unwrap().len()),
        );
    }
    assert_eq!(none, expected);
    let rerun_pair = &none["data"]["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["scenarioId"] == 111 && p["environmentId"] == 222)
        .unwrap()["attemptCount"];
    assert_eq!(rerun_pair, 2);

    let bad = app
        .get_tagged("/plans/614/results?attempts=some", &member, None)
        .await;
    let bad: Value = serde_json::from_str(&bad.body).unwrap();
    assert_eq!(
        bad,
        json!({"data": null, "result": {"code": 1001,
               "message": "Invalid request: attempts must be `all` or `none`, got `some`"}})
    );
}

#[tokio::test]
async fn a_caller_who_cannot_see_a_plan_gets_404_whatever_its_if_none_match() {
    let app = spawn_app().await;
    // user 21 is a member of project 7 only; plan 700 and its run 5100 are project 8's
    let member = app.token(13, &["PLAN_READ"]);
    let other = app.token(21, &["PLAN_READ"]);
    let unknown_plan =
        json!({"data": null, "result": {"code": 1000, "message": "Plan not found!"}});
    for path in [
        "/plans/700/results",
        "/plans/700/results?attempts=none",
        "/plans/700/executions",
        "/plans/700/flakiness",
        "/executions/5100",
    ] {
        let seen = app.get_tagged(path, &member, None).await;
        assert_eq!(seen.status, 200, "{path}");
        let tag = seen.etag.unwrap();
        for if_none_match in [tag.as_str(), "*"] {
            let answer = app.get_tagged(path, &other, Some(if_none_match)).await;
            assert_eq!(answer.status, 404, "{path} with {if_none_match}");
            assert!(answer.etag.is_none(), "{path}: a 404 has no tag");
            let body: Value = serde_json::from_str(&answer.body).unwrap();
            if path.starts_with("/plans") {
                assert_eq!(body, unknown_plan, "{path}");
            } else {
                assert_eq!(code(&body), 1017, "{path}");
            }
        }
    }
}
