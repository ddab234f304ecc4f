//! The command line of the contract (section 4), run as a process.

use crate::helpers::{plan_queue, test_config, JWT_SECRET};
use std::process::{Command, Output};

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn serve_without_jwt_secret_exits_with_one_line_saying_what_to_set() {
    let output = plan_queue(&["serve"], &[("BIND_ADDR", "127.0.0.1:0")]);
    assert!(!output.status.success());
    let text = stderr(&output);
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    assert!(text.contains("JWT_SECRET"), "{text}");
}

#[test]
fn serve_with_postgresql_unreachable_exits_with_one_line_saying_what_to_fix() {
    let output = plan_queue(
        &["serve"],
        &[
            ("JWT_SECRET", "x"),
            ("DATABASE_URL", "postgres://postgres@127.0.0.1:1/plan_queue"),
            ("BIND_ADDR", "127.0.0.1:0"),
        ],
    );
    assert!(!output.status.success());
    let text = stderr(&output);
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    assert!(
        text.contains("cannot connect to PostgreSQL") && text.contains("DATABASE_URL"),
        "{text}"
    );
}

#[test]
fn token_prints_a_jwt_with_the_given_authorities_and_ttl() {
    let output = plan_queue(
        &[
            "token",
            "--user-id",
            "13",
            "--authority",
            "PLAN_RUN",
            "--authority",
            "QUEUE_ADMIN",
            "--ttl-secs",
            "120",
        ],
        &[("JWT_SECRET", JWT_SECRET)],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let token = String::from_utf8(output.stdout).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        token.trim(),
        &jsonwebtoken::DecodingKey::from_secret(JWT_SECRET.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], "13");
    assert_eq!(
        claims["authorities"],
        serde_json::json!(["PLAN_RUN", "QUEUE_ADMIN"])
    );
    let ttl = claims["exp"].as_u64().unwrap() - jsonwebtoken::get_current_timestamp();
    assert!((110..=120).contains(&ttl), "ttl {ttl}");
}

#[test]
fn token_defaults_to_plan_run() {
    let output = plan_queue(&["token", "--user-id", "21"], &[("JWT_SECRET", JWT_SECRET)]);
    let token = String::from_utf8(output.stdout).unwrap();
    let caller = plan_queue::auth::TokenVerifier::hs256(JWT_SECRET, 0)
        .authenticate(&{
            let mut h = actix_web::http::header::HeaderMap::new();
            h.insert(
                actix_web::http::header::AUTHORIZATION,
                format!("Bearer {}", token.trim()).parse().unwrap(),
            );
            h
        })
        .unwrap();
    assert_eq!(caller.authorities, vec!["PLAN_RUN".to_owned()]);
    assert!(caller.authorize_queue(21).is_ok());
}

#[test]
fn migrate_creates_the_database_and_seed_twice_changes_nothing() {
    let config = test_config();
    let url = config.database.url.as_str();
    let name = url.rsplit('/').next().unwrap().to_owned();
    let _cleanup = DropDatabase(name);
    let migrate = plan_queue(&["migrate"], &[("DATABASE_URL", url)]);
    assert!(migrate.status.success(), "{}", stderr(&migrate));
    let snapshot = || {
        let output = Command::new("psql")
            .args([url, "-Atc", "SELECT string_agg(t::text, ';') FROM (SELECT * FROM users ORDER BY id) t; \
                                 SELECT string_agg(t::text, ';') FROM (SELECT * FROM execution_pairs ORDER BY 1,2,3) t; \
                                 SELECT string_agg(t::text, ';') FROM (SELECT * FROM project_members ORDER BY 1,2) t"])
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap()
    };
    for _ in 0..2 {
        let seed = plan_queue(
            &["seed", "--file", "fixtures/demo.json"],
            &[("DATABASE_URL", url)],
        );
        assert!(seed.status.success(), "{}", stderr(&seed));
    }
    let once = snapshot();
    assert!(once.contains("former.contractor"), "{once}");
    let seed = plan_queue(
        &["seed", "--file", "fixtures/demo.json"],
        &[("DATABASE_URL", url)],
    );
    assert!(seed.status.success());
    assert_eq!(snapshot(), once, "seeding again changed nothing");
}

/// Drops the named database when the test ends, passed or failed.
struct DropDatabase(String);

impl Drop for DropDatabase {
    fn drop(&mut self) {
        use diesel::connection::SimpleConnection;
        use diesel::Connection;
        if let Ok(mut admin) = diesel::PgConnection::establish(crate::helpers::ADMIN_DB_URL) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.0
            ));
        }
    }
}

#[test]
fn a_fixture_with_an_unknown_status_is_refused_and_writes_nothing() {
    let dir = std::env::temp_dir().join(format!("pq-fixture-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.json");
    std::fs::write(
        &file,
        r#"{"executions": [{"id": 1, "planId": 1, "userId": 1, "startedAt": "2026-11-27T10:00:00Z",
            "results": [{"scenarioId": 1, "environmentId": 1, "status": "GREEN"}]}]}"#,
    )
    .unwrap();
    let output = plan_queue(
        &["seed", "--file", file.to_str().unwrap()],
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:1/x")],
    );
    assert!(!output.status.success());
    assert!(stderr(&output).contains("GREEN"), "{}", stderr(&output));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn seeding_a_fixture_over_a_rerun_id_is_refused_and_changes_nothing() {
    let app = crate::helpers::spawn_app().await;
    let (status, body) = app.rerun(&crate::helpers::pair_body(111, 222)).await;
    assert_eq!(status, 200, "{body}");
    let rerun_id = body["data"]["executionId"].as_i64().unwrap();
    let dir = std::env::temp_dir().join(format!("pq-fixture-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("collides.json");
    std::fs::write(
        &file,
        format!(
            r#"{{"executions": [{{"id": {rerun_id}, "planId": 614, "userId": 13, "startedAt": "2026-11-29T10:00:00Z",
                "results": [{{"scenarioId": 114, "environmentId": 224, "status": "FAILED"}}]}}]}}"#
        ),
    )
    .unwrap();
    let url = app.db_url.clone();
    let path = file.to_str().unwrap().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        plan_queue(&["seed", "--file", &path], &[("DATABASE_URL", &url)])
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("already exists as a rerun"),
        "{}",
        stderr(&output)
    );
    let pairs = app
        .count_sql(&format!(
            "SELECT count(*) AS n FROM execution_pairs WHERE execution_id = {rerun_id} AND scenario_id = 111 AND attempt = 2"
        ))
        .await;
    assert_eq!(pairs, 1, "the rerun's pair is untouched");
}
