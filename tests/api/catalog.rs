//! The catalogue over HTTP (contract, section 20): `PUT`/`GET
//! /catalog/{kind}/{id}`, `POST /catalog/import`, versions and `If-Match`,
//! references named with their ids, retirement and its effects on runs and
//! reruns, `seed --file` on the same rules, and writers that lose nothing.

use crate::helpers::{code, message, plan_queue, queued, read, spawn_app, spawn_app_with, TestApp};
use serde_json::{json, Value};

/// What a catalogue answer says: status, `ETag`, body.
struct Answer {
    status: u16,
    etag: Option<String>,
    body: Value,
}

impl TestApp {
    fn catalog_token(&self) -> String {
        self.token(1, &["CATALOG_WRITE"])
    }

    /// `PUT /catalog/{path}` with `body`, and `If-Match` when given.
    async fn put_catalog(&self, path: &str, body: &Value, if_match: Option<&str>) -> Answer {
        let mut request = self
            .client
            .put(format!("{}/catalog/{path}", self.address))
            .bearer_auth(self.catalog_token())
            .json(body);
        if let Some(version) = if_match {
            request = request.header("If-Match", version);
        }
        answer(request.send().await.expect("request sent")).await
    }

    /// `GET /catalog/{path}`.
    async fn get_catalog(&self, path: &str) -> Answer {
        let request = self
            .client
            .get(format!("{}/catalog/{path}", self.address))
            .bearer_auth(self.catalog_token());
        answer(request.send().await.expect("request sent")).await
    }

    /// `POST /catalog/import` with `body`.
    async fn import(&self, body: &Value) -> (u16, Value) {
        let token = self.catalog_token();
        self.post("/catalog/import", Some(&token), body).await
    }

    /// `POST /queue/run` of `body` as user 13 with `PLAN_RUN`.
    async fn run_plan(&self, body: &Value) -> (u16, Value) {
        let token = self.token(13, &["PLAN_RUN"]);
        self.post("/queue/run", Some(&token), body).await
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let etag = response
        .headers()
        .get("ETag")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = read(response).await;
    Answer { status, etag, body }
}

fn new_plan(name: &str) -> Value {
    json!({"projectId": 7, "name": name, "frameworkType": "appium", "runTimeoutSecs": 600,
           "scenarioIds": [112, 111, 112], "environmentIds": [223, 222]})
}

#[tokio::test]
async fn a_plan_is_created_replaced_and_read_back_and_an_unchanged_put_keeps_its_version() {
    let app = spawn_app().await;
    let created = app.put_catalog("plans/900", &new_plan("Smoke"), None).await;
    assert_eq!(created.status, 200, "{}", created.body);
    let expected = json!({"id": 900, "projectId": 7, "name": "Smoke", "frameworkType": "APPIUM",
        "runTimeoutSecs": 600, "retryFailed": 0, "scenarioIds": [111, 112],
        "environmentIds": [222, 223], "active": true, "version": 1});
    assert_eq!(created.body["data"], expected);
    assert_eq!(created.etag.as_deref(), Some("\"1\""));

    let read_back = app.get_catalog("plans/900").await;
    assert_eq!(
        (read_back.status, &read_back.body["data"]),
        (200, &expected)
    );
    assert_eq!(read_back.etag.as_deref(), Some("\"1\""));

    let unchanged = app.put_catalog("plans/900", &new_plan("Smoke"), None).await;
    assert_eq!(unchanged.body["data"]["version"], 1, "nothing changed");

    let replaced = app
        .put_catalog(
            "plans/900",
            &json!({"projectId": 7, "name": "Smoke", "scenarioIds": [113], "environmentIds": [224]}),
            Some("1"),
        )
        .await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    assert_eq!(
        replaced.body["data"],
        json!({"id": 900, "projectId": 7, "name": "Smoke", "frameworkType": null,
            "runTimeoutSecs": null, "retryFailed": 0, "scenarioIds": [113],
            "environmentIds": [224], "active": true, "version": 2})
    );
    assert_eq!(replaced.etag.as_deref(), Some("\"2\""));
    let (status, run) = app
        .run_plan(&json!({"planId": 900, "userId": 13, "frameworkType": "GAUGE", "dryRun": true}))
        .await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(
        queued(&run),
        vec![(113, 224, 1)],
        "runs use the replaced lists"
    );

    let environment = app.get_catalog("environments/222").await;
    assert_eq!(
        environment.body["data"],
        json!({"id": 222, "name": "Pixel 8", "platform": "ANDROID", "version": "14", "active": true}),
        "an environment keeps its own version; the catalogue's is the ETag"
    );
    assert_eq!(environment.etag.as_deref(), Some("\"1\""));
}

#[tokio::test]
async fn a_stale_if_match_is_412_with_the_current_version_and_writes_nothing() {
    let app = spawn_app().await;
    let before = app.get_catalog("users/21").await;
    let stale = app
        .put_catalog("users/21", &json!({"username": "renamed"}), Some("\"7\""))
        .await;
    assert_eq!(stale.status, 412, "{}", stale.body);
    assert_eq!(
        (code(&stale.body), message(&stale.body)),
        (1021, "Version mismatch: current version is 1")
    );
    assert_eq!(app.get_catalog("users/21").await.body, before.body);

    let current = app
        .put_catalog("users/21", &json!({"username": "renamed"}), Some("\"1\""))
        .await;
    assert_eq!(current.status, 200, "{}", current.body);
    assert_eq!(current.body["data"]["version"], 2);
    let never_written = app
        .put_catalog("users/77", &json!({"username": "new"}), Some("1"))
        .await;
    assert_eq!(
        (never_written.status, message(&never_written.body)),
        (412, "Version mismatch: current version is 0")
    );
    assert_eq!(app.get_catalog("users/77").await.status, 404);
}

#[tokio::test]
async fn a_reference_to_an_unknown_entity_is_1001_naming_it_and_writes_nothing() {
    let app = spawn_app().await;
    let cases = [
        (
            "plans/900",
            json!({"projectId": 7, "name": "x", "scenarioIds": [111, 999], "environmentIds": [222]}),
            "Invalid request: plan 900: scenario 999 does not exist",
        ),
        (
            "plans/900",
            json!({"projectId": 7, "name": "x", "scenarioIds": [111], "environmentIds": [998]}),
            "Invalid request: plan 900: environment 998 does not exist",
        ),
        (
            "plans/900",
            json!({"projectId": 99, "name": "x"}),
            "Invalid request: plan 900: project 99 does not exist",
        ),
        (
            "plans/900",
            json!({"projectId": 7, "name": "x", "scenarioIds": [111, 201]}),
            "Invalid request: plan 900: scenario 201 is in project 8, not in the plan's project 7",
        ),
        (
            "projects/9",
            json!({"name": "x", "memberIds": [13, 404]}),
            "Invalid request: project 9: user 404 does not exist",
        ),
        (
            "scenarios/111",
            json!({"projectId": 8, "name": "moved"}),
            "Invalid request: scenario 111: plan 614 of project 7 lists it",
        ),
        (
            "scenarios/500",
            json!({"projectId": 7, "name": "x", "owner": "me"}),
            "Invalid request: scenario 500: unknown field `owner`, expected one of `id`, `projectId`, `name`, `active`",
        ),
    ];
    for (path, body, expected) in cases {
        let refused = app.put_catalog(path, &body, None).await;
        assert_eq!(refused.status, 400, "{path}: {}", refused.body);
        assert_eq!(
            (code(&refused.body), message(&refused.body)),
            (1001, expected)
        );
    }
    let never_written = app.get_catalog("plans/900").await;
    assert_eq!(never_written.status, 404);
    assert_eq!(
        (code(&never_written.body), message(&never_written.body)),
        (1001, "Invalid request: plan 900 is not in the catalogue")
    );
    assert_eq!(app.get_catalog("projects/9").await.status, 404);
    assert_eq!(
        app.get_catalog("scenarios/111").await.body["data"]["projectId"],
        7
    );
    assert_eq!(app.get_catalog("devices/1").await.status, 404);
}

#[tokio::test]
async fn the_catalogue_needs_the_catalog_write_authority() {
    let app = spawn_app().await;
    let token = app.token(13, &["PLAN_RUN", "QUEUE_ADMIN"]);
    let response = app
        .client
        .get(format!("{}/catalog/plans/614", app.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!((status, code(&body)), (403, 1010), "{body}");
    let (status, body) = app.post("/catalog/import", Some(&token), &json!({})).await;
    assert_eq!((status, code(&body)), (403, 1010), "{body}");
    let (status, body) = app.post("/catalog/import", None, &json!({})).await;
    assert_eq!((status, code(&body)), (401, 1009), "{body}");
}

/// `fixtures/demo.json` without its executions.
fn demo_catalogue() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/demo.json"))
        .unwrap();
    let mut fixture: Value = serde_json::from_str(&text).unwrap();
    fixture.as_object_mut().unwrap().remove("executions");
    fixture
}

#[tokio::test]
async fn importing_the_demo_catalogue_equals_seeding_it() {
    let app = spawn_app().await;
    let catalogue = demo_catalogue();
    let (status, body) = app.import(&catalogue).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!({"users": 4, "projects": 2, "scenarios": 6, "environments": 5, "plans": 3})
    );
    for kind in ["users", "projects", "scenarios", "environments", "plans"] {
        for row in catalogue[kind].as_array().unwrap() {
            let id = row["id"].as_i64().unwrap();
            let stored = app.get_catalog(&format!("{kind}/{id}")).await;
            assert_eq!(
                stored.etag.as_deref(),
                Some("\"1\""),
                "{kind} {id}: the import found what seed wrote"
            );
            let data = stored.body["data"].as_object().unwrap();
            for (field, value) in row.as_object().unwrap() {
                let mut value = value.clone();
                if let Some(ids) = value.as_array_mut() {
                    ids.sort_by_key(|v| v.as_i64());
                }
                assert_eq!(data[field], value, "{kind} {id}: {field}");
            }
        }
    }

    let mut with_executions = demo_catalogue();
    with_executions["executions"] = json!([{"id": 1, "planId": 614, "userId": 13,
        "startedAt": "2026-11-27T10:00:00Z", "results": []}]);
    let (status, body) = app.import(&with_executions).await;
    assert_eq!((status, code(&body)), (400, 1001), "{body}");

    let half_bad = json!({"users": [{"id": 77, "username": "new"}],
        "plans": [{"id": 614, "projectId": 7, "name": "x", "scenarioIds": [999]}]});
    let (status, body) = app.import(&half_bad).await;
    assert_eq!(
        (status, message(&body)),
        (
            400,
            "Invalid request: plan 614: scenario 999 does not exist"
        )
    );
    assert_eq!(
        app.get_catalog("users/77").await.status,
        404,
        "all or nothing"
    );
}

#[tokio::test]
async fn seed_refuses_an_unknown_reference_naming_it_without_a_foreign_key_error() {
    let app = spawn_app().await;
    let dir = std::env::temp_dir().join(format!("pq-fixture-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            r#"{"plans": [{"id": 614, "projectId": 7, "name": "x", "scenarioIds": [111, 999]}]}"#,
            "plan 614: scenario 999 does not exist",
        ),
        (
            r#"{"executions": [{"id": 9000, "planId": 614, "userId": 13, "startedAt": "2026-11-29T10:00:00Z",
                "results": [{"scenarioId": 111, "environmentId": 998, "status": "FAILED"}]}]}"#,
            "execution 9000: environment 998 does not exist",
        ),
    ];
    for (i, (fixture, expected)) in cases.into_iter().enumerate() {
        let file = dir.join(format!("{i}.json"));
        std::fs::write(&file, fixture).unwrap();
        let (url, path) = (app.db_url.clone(), file.to_str().unwrap().to_owned());
        let output = tokio::task::spawn_blocking(move || {
            plan_queue(&["seed", "--file", &path], &[("DATABASE_URL", &url)])
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!stderr.contains("foreign key"), "{stderr}");
    }
    std::fs::remove_dir_all(dir).unwrap();
    assert_eq!(
        app.get_catalog("plans/614").await.body["data"]["scenarioIds"],
        json!([111, 112, 113, 114])
    );
}

#[tokio::test]
async fn retired_entities_are_not_run_and_history_still_reads() {
    let app = spawn_app().await;
    let retired = app
        .put_catalog(
            "scenarios/111",
            &json!({"projectId": 7, "name": "Login with valid credentials", "active": false}),
            None,
        )
        .await;
    assert_eq!(retired.body["data"]["version"], 2, "{}", retired.body);
    let (status, run) = app
        .run_plan(&json!({"planId": 614, "userId": 13, "dryRun": true}))
        .await;
    assert_eq!(status, 200, "{run}");
    assert!(
        queued(&run).iter().all(|(scenario, _, _)| *scenario != 111),
        "{run}"
    );
    let (status, rerun) = app.rerun(&crate::helpers::pair_body(111, 222)).await;
    assert_eq!(
        (status, code(&rerun), message(&rerun)),
        (400, 1019, "Scenario 111 is not in plan 614")
    );
    let (status, rerun) = app
        .rerun(
            &json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
                       "statuses": ["FAILED"], "dryRun": true}),
        )
        .await;
    assert_eq!(status, 200, "{rerun}");
    assert_eq!(
        queued(&rerun),
        vec![(113, 223, 2)],
        "111/222 FAILED is left out"
    );
    let (_, mismatch) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "GAUGE", "scenarioId": 112}))
        .await;
    assert_eq!(
        (code(&mismatch), message(&mismatch)),
        (1023, "Plan 614 runs on APPIUM, not GAUGE")
    );

    app.put_catalog(
        "users/13",
        &json!({"username": "ayse.qa", "active": false}),
        None,
    )
    .await;
    let (status, refused) = app.rerun(&crate::helpers::pair_body(112, 222)).await;
    assert_eq!((status, code(&refused)), (400, 1002), "{refused}");
    app.put_catalog("users/13", &json!({"username": "ayse.qa"}), None)
        .await;
    let plan = app.get_catalog("plans/614").await.body["data"].clone();
    let mut retired_plan = plan.clone();
    retired_plan["active"] = json!(false);
    let object = retired_plan.as_object_mut().unwrap();
    object.remove("id");
    object.remove("version");
    app.put_catalog("plans/614", &retired_plan, None).await;
    let (status, refused) = app.run_plan(&json!({"planId": 614, "userId": 13})).await;
    assert_eq!((status, code(&refused)), (400, 1000), "{refused}");

    let reader = app.token(13, &["QUEUE_ADMIN"]);
    for path in ["/executions/4980", "/plans/614/results"] {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap();
        let (status, body) = read(response).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(
            body.to_string().contains("\"scenarioId\":111"),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn twenty_parallel_writers_on_one_plan_lose_nothing() {
    let app = std::sync::Arc::new(spawn_app().await);
    for id in 1001..=1020 {
        let created = app
            .put_catalog(
                &format!("scenarios/{id}"),
                &json!({"projectId": 7, "name": format!("Scenario {id}")}),
                None,
            )
            .await;
        assert_eq!(created.status, 200, "{}", created.body);
    }
    let writers = (1001..=1020).map(|id| {
        let app = app.clone();
        tokio::spawn(async move {
            // read, add my scenario, write if nobody wrote meanwhile; else again
            loop {
                let current = app.get_catalog("plans/614").await;
                let mut plan = current.body["data"].clone();
                plan["scenarioIds"].as_array_mut().unwrap().push(json!(id));
                let object = plan.as_object_mut().unwrap();
                object.remove("id");
                object.remove("version");
                let written = app
                    .put_catalog("plans/614", &plan, current.etag.as_deref())
                    .await;
                match written.status {
                    200 => return,
                    412 => continue,
                    other => panic!("{other}: {}", written.body),
                }
            }
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.unwrap();
    }
    let plan = app.get_catalog("plans/614").await;
    let ids: Vec<i64> = plan.body["data"]["scenarioIds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = [111, 112, 113, 114]
        .into_iter()
        .chain(1001..=1020)
        .collect();
    assert_eq!(ids, expected, "every writer's scenario is in the plan");
    assert_eq!(plan.body["data"]["version"], 21, "one version per write");
}

/// PostgreSQL's `text` cannot hold the NUL character: a body carrying one,
/// in any string a run, rerun or catalogue write would store, is the client's
/// mistake (400 code 1001 naming the field), never a failed statement (500),
/// and writes nothing. (An attacker's finding: `callbackUrl` and every
/// catalogue name answered 500.)
#[tokio::test]
async fn a_nul_character_in_any_stored_text_is_1001_naming_the_field_and_writes_nothing() {
    let app = spawn_app_with(|c| {
        c.callbacks.allowed_hosts = "localhost".to_owned();
        c.callbacks.secret = Some("s".to_owned());
    })
    .await;
    let before = app.counts().await;
    let queueing = [
        (
            "/queue/run",
            json!({"planId": 614, "userId": 13, "force": true, "dryRun": true,
                   "callbackUrl": "http://localhost:9/a\u{0}b"}),
            "Invalid request: callbackUrl: text must not contain the NUL character (\\u0000)",
        ),
        (
            "/queue/rerun",
            json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111,
                   "callbackUrl": "http://localhost:9/?q=\u{0}"}),
            "Invalid request: callbackUrl: text must not contain the NUL character (\\u0000)",
        ),
        (
            "/queue/rerun",
            json!({"planId": 614, "userId": 13, "frameworkType": "APP\u{0}IUM", "scenarioId": 111}),
            "Invalid request: frameworkType: text must not contain the NUL character (\\u0000)",
        ),
        (
            "/queue/rerun",
            json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
                   "statuses": ["FAILED\u{0}"]}),
            "Invalid request: statuses[0]: text must not contain the NUL character (\\u0000)",
        ),
    ];
    let token = app.token(13, &["PLAN_RUN"]);
    for (path, body, expected) in queueing {
        let (status, answer) = app.post(path, Some(&token), &body).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(
            (code(&answer), message(&answer)),
            (1001, expected),
            "{body}"
        );
    }
    let catalogue = [
        (
            "plans/900",
            json!({"projectId": 7, "name": "a\u{0}b", "scenarioIds": [111], "environmentIds": [222]}),
            "Invalid request: plan 900: name must not contain the NUL character (\\u0000)",
        ),
        (
            "users/900",
            json!({"username": "x\u{0}y"}),
            "Invalid request: user 900: username must not contain the NUL character (\\u0000)",
        ),
        (
            "projects/951",
            json!({"name": "\u{0}", "memberIds": []}),
            "Invalid request: project 951: name must not contain the NUL character (\\u0000)",
        ),
        (
            "environments/951",
            json!({"name": "Pixel", "platform": "ANDROID", "version": "1\u{0}4"}),
            "Invalid request: environment 951: version must not contain the NUL character (\\u0000)",
        ),
    ];
    for (path, body, expected) in catalogue {
        let refused = app.put_catalog(path, &body, None).await;
        assert_eq!(refused.status, 400, "{path}: {}", refused.body);
        assert_eq!(
            (code(&refused.body), message(&refused.body)),
            (1001, expected)
        );
        assert_eq!(app.get_catalog(path).await.status, 404, "{path} written");
    }
    let (status, answer) = app
        .import(&json!({"environments": [{"id": 952, "name": "x\u{0}", "platform": "IOS", "version": "17"}]}))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        (code(&answer), message(&answer)),
        (
            1001,
            "Invalid request: environment 952: name must not contain the NUL character (\\u0000)"
        )
    );
    assert_eq!(app.get_catalog("environments/952").await.status, 404);
    app.assert_nothing_written_or_published(before).await;
}
