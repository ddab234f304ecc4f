//! The OpenAPI document: generated from the code, served, committed, and
//! browsable at /docs in a real (headless) Chromium.

use crate::helpers::spawn_app;
use plan_queue::openapi::ApiDoc;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use utoipa::OpenApi;

const COMMITTED: &str = "docs/openapi.json";

fn generated() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap() + "\n"
}

#[test]
fn committed_openapi_json_matches_the_code() {
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(COMMITTED, generated()).unwrap();
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated(),
        "{COMMITTED} is stale: run `UPDATE_DOCS=1 cargo test --test api committed_openapi` and commit it"
    );
}

#[tokio::test]
async fn openapi_json_is_served_as_generated_with_every_error_example() {
    let app = spawn_app().await;
    let (status, text) = app.get("/openapi.json").await;
    assert_eq!(status, 200);
    let served: serde_json::Value = serde_json::from_str(&text).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&generated()).unwrap();
    assert_eq!(served, expected);
    assert_eq!(served["openapi"], "3.1.0");
    let rerun = &served["paths"]["/queue/rerun"]["post"];
    assert_eq!(rerun["security"][0]["bearer"], serde_json::json!([]));
    let plan_not_found = &rerun["responses"]["400"]["content"]["application/json"]["examples"]
        ["planNotFound"]["value"];
    assert_eq!(
        plan_not_found,
        &serde_json::json!({"data": null, "result": {"code": 1000, "message": "Plan not found!"}})
    );
    for status in ["200", "401", "403", "413", "422", "409", "500", "503"] {
        assert!(rerun["responses"][status].is_object(), "no {status} answer");
    }
}

#[tokio::test]
async fn docs_redirects_to_the_bundled_swagger_ui() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(format!("{}/docs", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(response.headers()["location"], "/docs/");
    let (status, html) = app.get("/docs/").await;
    assert_eq!(status, 200);
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("://cdn") && !html.contains("unpkg"),
        "loads from a CDN"
    );
    let script = app
        .client
        .get(format!("{}/docs/swagger-ui-bundle.js", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(
        script.status(),
        200,
        "the Swagger UI bundle is served from the binary"
    );
}

/// Where a Chromium binary is, if any.
fn chromium() -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .flat_map(|dir| {
            ["chromium", "chromium-browser", "google-chrome"].map(|name| dir.join(name))
        })
        .find(|path| path.is_file())
}

/// The DOM of `url` after its scripts ran, from headless Chromium.
fn rendered_dom(chromium: &Path, url: &str) -> String {
    let profile =
        std::env::temp_dir().join(format!("plan-queue-chromium-{}", uuid::Uuid::new_v4()));
    let mut child = Command::new(chromium)
        .arg("--headless")
        .args(crate::page::CHROMIUM_FLAGS)
        .args(["--virtual-time-budget=20000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn headless_chromium_shows_the_rerun_operation_at_docs() {
    let Some(chromium) = chromium() else {
        println!("SKIPPED headless_chromium_shows_the_rerun_operation_at_docs: no chromium on PATH (apt-get install chromium)");
        return;
    };
    let app = spawn_app().await;
    let url = format!("{}/docs", app.address);
    let dom = tokio::task::spawn_blocking(move || rendered_dom(&chromium, &url))
        .await
        .unwrap();
    // Swagger UI renders one block per operation once it has loaded
    // /openapi.json; the static page holds neither.
    assert!(
        dom.contains(r#"data-path="/queue/rerun""#),
        "the rendered page shows no /queue/rerun operation: {}",
        &dom[..dom.len().min(2000)]
    );
    assert!(dom.contains("opblock-post"), "no POST operation block");
}
