//! The success path: what the caller gets and what the runners receive.

use crate::helpers::{code, pair_body, queued, spawn_app, DEMO_PAIRS};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_rerun_of_two_pairs_publishes_two_persistent_messages() {
    let app = spawn_app().await;
    let token = app.token(13, &["PLAN_RUN"]);
    let response = app
        .post_raw("/queue/rerun")
        .bearer_auth(&token)
        .header("x-request-id", "trace-me-42")
        .json(&json!({"planId": 614, "userId": 13, "frameworkType": "appium",
            "scenarioEnvironmentPairs": [{"scenarioId": 111, "environmentId": 222}, {"scenarioId": 112, "environmentId": 223}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    let (status, body) = crate::helpers::read(response).await;
    assert_eq!((status, code(&body)), (200, 0), "{body}");
    assert_eq!(body["result"]["message"], "success");
    let data = &body["data"];
    assert_eq!(data["planId"], 614);
    assert_eq!(data["sourceExecutionId"], 4980);
    assert_eq!(data["frameworkType"], "APPIUM");
    let execution_id = data["executionId"].as_i64().unwrap();
    assert!(
        execution_id > 5100,
        "generated ids stay clear of the fixture's"
    );
    assert_eq!(queued(&body), vec![(111, 222, 2), (112, 223, 2)]);

    let messages = app.consume("APPIUM", 2, WAIT).await;
    assert_eq!(messages.len(), 2);
    let sent_ids: HashSet<&str> = data["queued"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["messageId"].as_str().unwrap())
        .collect();
    for m in &messages {
        assert_eq!(m.routing_key, "APPIUM");
        assert_eq!(m.delivery_mode, Some(2));
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.kind.as_deref(), Some("scenario.rerun"));
        assert_eq!(m.correlation_id.as_deref(), Some("trace-me-42"));
        assert_eq!(m.message_id.as_deref(), m.body["messageId"].as_str());
        assert!(sent_ids.contains(m.body["messageId"].as_str().unwrap()));
        assert_eq!(m.body["executionId"], execution_id);
        assert_eq!(m.body["sourceExecutionId"], 4980);
        assert_eq!(m.body["planId"], 614);
        assert_eq!(m.body["userId"], 13);
        assert_eq!(m.body["frameworkType"], "APPIUM");
        assert_eq!(m.body["attempt"], 2);
        assert!(m.body["requestedAt"].as_str().unwrap().ends_with('Z'));
    }
    let first = messages
        .iter()
        .find(|m| m.body["scenarioId"] == 111)
        .expect("message of 111");
    assert_eq!(first.body["environmentId"], 222);
    assert_eq!(
        first.body["scenario"],
        json!({"name": "Login with valid credentials"})
    );
    assert_eq!(
        first.body["environment"],
        json!({"name": "Pixel 8", "platform": "ANDROID", "version": "14"})
    );
    assert_eq!(app.pending_within(Duration::from_secs(5)).await, 0);
}

#[tokio::test]
async fn a_pair_without_environment_expands_to_every_environment_of_the_last_run() {
    let app = spawn_app().await;
    // plan 614 runs on APPIUM; another type is 1023 (contract, section 20)
    app.sql("UPDATE plans SET framework_type = NULL WHERE id = 614")
        .await;
    let (status, body) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "GAUGE",
            "scenarioEnvironmentPairs": [{"scenarioId": 113}, {"scenarioId": 111, "environmentId": 222}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        queued(&body),
        vec![(113, 223, 2), (113, 224, 2), (111, 222, 2)]
    );
    assert_eq!(app.consume("GAUGE", 3, WAIT).await.len(), 3);
}

#[tokio::test]
async fn the_top_level_shorthand_reruns_one_pair_and_queue_is_an_alias() {
    let app = spawn_app().await;
    // plan 614 runs on APPIUM; another type is 1023 (contract, section 20)
    app.sql("UPDATE plans SET framework_type = NULL WHERE id = 614")
        .await;
    let token = app.token(13, &["PLAN_RUN"]);
    let (status, body) = app
        .post("/queue", Some(&token), &json!({"planId": 614, "userId": 13, "frameworkType": "JUNIT", "scenarioId": 112, "environmentId": 222}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(queued(&body), vec![(112, 222, 2)]);
    let messages = app.consume("JUNIT", 1, WAIT).await;
    assert_eq!(messages[0].body["scenarioId"], 112);
}

#[tokio::test]
async fn a_dry_run_answers_what_would_be_queued_and_changes_nothing() {
    let app = spawn_app().await;
    let before = app.counts().await;
    let (status, body) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111, "dryRun": true}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["executionId"], Value::Null);
    assert_eq!(body["data"]["sourceExecutionId"], 4980);
    assert_eq!(queued(&body), vec![(111, 222, 2), (111, 223, 2)]);
    assert!(body["data"]["queued"]
        .as_array()
        .unwrap()
        .iter()
        .all(|q| q["messageId"].is_null()));
    assert_eq!(app.counts().await, before);
    assert_eq!(app.dispatch_all_pending().await, 0, "nothing to publish");
    assert!(app
        .drain("APPIUM", Duration::from_millis(300))
        .await
        .is_empty());
}

#[tokio::test]
async fn each_rerun_of_a_pair_is_the_next_attempt_of_the_source_run() {
    let app = spawn_app().await;
    let body = json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111, "environmentId": 222});
    for expected in 2..=4 {
        let (status, got) = app.rerun(&body).await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(queued(&got), vec![(111, 222, expected)]);
        assert_eq!(
            got["data"]["sourceExecutionId"], 4980,
            "a rerun is never the source run"
        );
    }
    // a newer full run starts a new chain
    app.sql("INSERT INTO executions (id, plan_id, kind, requested_by, requested_at) VALUES (9000, 614, 'RUN', 13, now()); \
             INSERT INTO execution_pairs VALUES (9000, 111, 222, 'FAILED', 1)").await;
    let (_, got) = app.rerun(&body).await;
    assert_eq!(got["data"]["sourceExecutionId"], 9000);
    assert_eq!(queued(&got), vec![(111, 222, 2)]);
}

#[tokio::test]
async fn fifty_concurrent_reruns_publish_every_accepted_pair_exactly_once() {
    let app = spawn_app().await;
    let requests = (0..50).map(|i| {
        let (s, e) = DEMO_PAIRS[i % DEMO_PAIRS.len()];
        let body = pair_body(s, e);
        let app = &app;
        async move { app.rerun(&body).await }
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut message_ids = HashSet::new();
    let mut attempts: HashMap<(i64, i64), Vec<i64>> = HashMap::new();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        for q in body["data"]["queued"].as_array().unwrap() {
            assert!(message_ids.insert(q["messageId"].as_str().unwrap().to_owned()));
            let key = (
                q["scenarioId"].as_i64().unwrap(),
                q["environmentId"].as_i64().unwrap(),
            );
            attempts
                .entry(key)
                .or_default()
                .push(q["attempt"].as_i64().unwrap());
        }
    }
    for (pair, mut seen) in attempts {
        seen.sort();
        let expected: Vec<i64> = (2..2 + seen.len() as i64).collect();
        assert_eq!(
            seen, expected,
            "attempts of {pair:?} are handed out once each"
        );
    }
    let messages = app.consume("APPIUM", 51, Duration::from_secs(15)).await;
    let consumed: Vec<String> = messages
        .iter()
        .map(|m| m.message_id.clone().unwrap())
        .collect();
    assert_eq!(
        consumed.len(),
        50,
        "one message per accepted pair, none twice"
    );
    assert_eq!(consumed.into_iter().collect::<HashSet<_>>(), message_ids);
}

/// Issue 11: a rerun locks its pairs, not the source run. While a rerun of
/// (111, 222) is uncommitted, a rerun of another pair of the same plan
/// answers at once, and another rerun of (111, 222) waits for its commit and
/// then takes the next attempt.
#[tokio::test]
async fn reruns_of_disjoint_pairs_of_one_plan_do_not_wait_for_each_other() {
    use diesel::connection::SimpleConnection;
    use diesel::RunQueryDsl;
    let app = spawn_app().await;
    let (url, exchange) = (app.db_url.clone(), app.config.amqp.exchange.clone());
    let (held_tx, held_rx) = tokio::sync::oneshot::channel::<i32>();
    let (commit_tx, commit_rx) = std::sync::mpsc::channel::<()>();
    let holder = tokio::task::spawn_blocking(move || {
        #[derive(diesel::QueryableByName)]
        struct Held {
            #[diesel(sql_type = diesel::sql_types::Array<diesel::sql_types::Integer>)]
            queued_attempts: Vec<i32>,
        }
        let mut conn = plan_queue::db::connect(&url).unwrap();
        conn.batch_execute("BEGIN").unwrap();
        let held: Held = diesel::sql_query(format!(
            "SELECT queued_attempts FROM queue_rerun(614, 13, 'APPIUM', '{{111}}', '{{222}}', \
             '{{}}', 'queue', 50, 50, false, now(), '2026-11-30T00:00:00Z', NULL, '{exchange}', \
             gen_random_uuid(), false, 86400)"
        ))
        .get_result(&mut conn)
        .unwrap();
        held_tx.send(held.queued_attempts[0]).unwrap();
        commit_rx.recv().unwrap();
        conn.batch_execute("COMMIT").unwrap();
    });
    let held_attempt = held_rx.await.unwrap();

    // another pair of the same source run: not held up
    let other = tokio::time::timeout(WAIT, app.rerun(&pair_body(112, 223)))
        .await
        .expect("a rerun of another pair waited for an uncommitted rerun of the plan");
    assert_eq!(other.0, 200, "{}", other.1);
    assert_eq!(queued(&other.1), vec![(112, 223, 2)]);

    // the same pair: waits for the holder's commit, then comes next
    let same_body = pair_body(111, 222);
    let same = app.rerun(&same_body);
    tokio::pin!(same);
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), &mut same)
            .await
            .is_err(),
        "a rerun of the same pair did not wait for the uncommitted one"
    );
    commit_tx.send(()).unwrap();
    let (status, body) = tokio::time::timeout(WAIT, same).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        queued(&body),
        vec![(111, 222, i64::from(held_attempt) + 1)],
        "attempts of one pair stay consecutive"
    );
    holder.await.unwrap();
}

/// A rerun's call made again after a lost connection (the service then
/// cannot tell whether the first committed) answers what the first wrote
/// and writes nothing more: `queue_rerun` finds its first message id.
#[tokio::test]
async fn the_rerun_call_made_again_with_its_first_message_id_answers_what_it_wrote() {
    use diesel::RunQueryDsl;
    let app = spawn_app().await;
    let (url, exchange) = (app.db_url.clone(), app.config.amqp.exchange.clone());
    let before = app.counts().await;
    let answers = tokio::task::spawn_blocking(move || {
        #[derive(diesel::QueryableByName, Debug, PartialEq)]
        struct Answer {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            new_execution_id: i64,
            #[diesel(sql_type = diesel::sql_types::Array<diesel::sql_types::Integer>)]
            queued_attempts: Vec<i32>,
            #[diesel(sql_type = diesel::sql_types::Array<diesel::sql_types::Uuid>)]
            queued_message_ids: Vec<uuid::Uuid>,
        }
        let mut conn = plan_queue::db::connect(&url).unwrap();
        let first = uuid::Uuid::new_v4();
        let call = |replay: bool| {
            format!(
                "SELECT new_execution_id, queued_attempts, queued_message_ids FROM queue_rerun(614, \
                 13, 'APPIUM', '{{111,112}}', '{{222,223}}', '{{}}', 'queue', 50, 50, false, now(), \
                 '2026-11-30T00:00:00Z', NULL, '{exchange}', '{first}', {replay}, 86400)"
            )
        };
        let once: Answer = diesel::sql_query(call(false)).get_result(&mut conn).unwrap();
        let again: Answer = diesel::sql_query(call(true)).get_result(&mut conn).unwrap();
        (first, once, again)
    })
    .await
    .unwrap();
    let (first, once, again) = answers;
    assert_eq!(once.queued_message_ids[0], first);
    assert_eq!(once.queued_attempts, vec![2, 2]);
    assert_eq!(again, once, "the second call answers the first's rerun");
    assert_eq!(
        app.counts().await,
        (before.0 + 1, before.1 + 2),
        "one rerun and two dispatch rows, not two reruns"
    );
}
