//! `plan-queue smoke`: checks a live deployment over HTTP without triggering
//! a test run.
//!
//! Four checks, one verdict line each (`PASS <check>: …` or `FAIL <check>: …`):
//! 1. `readiness` — `GET /health/ready` answers 200;
//! 2. `openapi` — `GET /openapi.json` is an OpenAPI 3.1 document with `POST /queue/rerun`;
//! 3. `dry-run` — an authenticated `dryRun` rerun of the given plan, user,
//!    framework type and scenario answers 200 code 0 with no `executionId`;
//! 4. `unknown-plan` — a `dryRun` rerun of plan 9223372036854775807 answers
//!    400 code 1000 (`Plan not found!`).
//!
//! Both reruns are dry runs: nothing is written and nothing is published.
//! The token must carry `PLAN_RUN` and speak for `user_id` (or hold `QUEUE_ADMIN`).

use anyhow::Context;
use serde_json::{json, Value};
use std::time::Duration;

/// The plan id of the unknown-plan check: the largest id, which no fixture uses.
pub const UNKNOWN_PLAN_ID: i64 = i64::MAX;
/// Time each HTTP request of a check may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What to check and as whom (the arguments of `plan-queue smoke`); the ids
/// default to the demo fixture's (`fixtures/demo.json`).
#[derive(Debug, Clone, clap::Args)]
pub struct SmokeOptions {
    /// Base URL of the deployment, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub url: String,
    /// A bearer JWT with PLAN_RUN for --user-id.
    #[arg(long)]
    pub token: String,
    /// A plan that has executed results.
    #[arg(long, default_value_t = 614)]
    pub plan_id: i64,
    /// The user the dry run is made for.
    #[arg(long, default_value_t = 13)]
    pub user_id: i64,
    /// A configured framework type.
    #[arg(long, default_value = "APPIUM")]
    pub framework_type: String,
    /// A scenario of the plan's last executed results.
    #[arg(long, default_value_t = 111)]
    pub scenario_id: i64,
}

/// The verdict of one check.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// `readiness`, `openapi`, `dry-run` or `unknown-plan`.
    pub check: &'static str,
    pub passed: bool,
    /// What was seen, for the verdict line.
    pub detail: String,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = if self.passed { "PASS" } else { "FAIL" };
        write!(f, "{word} {}: {}", self.check, self.detail)
    }
}

/// Runs every check in order (a failing one does not stop the others) and
/// returns their verdicts. Errors only if no HTTP client can be built.
pub async fn run(options: &SmokeOptions) -> anyhow::Result<Vec<Verdict>> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("cannot build the HTTP client")?;
    let base = options.url.trim_end_matches('/');
    let checks = [
        ("readiness", readiness(&client, base).await),
        ("openapi", openapi(&client, base).await),
        ("dry-run", dry_run(&client, base, options).await),
        ("unknown-plan", unknown_plan(&client, base, options).await),
    ];
    Ok(checks
        .into_iter()
        .map(|(check, outcome)| match outcome {
            Ok(detail) => Verdict {
                check,
                passed: true,
                detail,
            },
            Err(e) => Verdict {
                check,
                passed: false,
                detail: format!("{e:#}"),
            },
        })
        .collect())
}

async fn readiness(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let (status, body) = get_json(client, &format!("{base}/health/ready")).await?;
    anyhow::ensure!(
        status == 200,
        "GET /health/ready answered {status}: {}",
        body["result"]["message"]
    );
    Ok("GET /health/ready answered 200".to_owned())
}

async fn openapi(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let (status, doc) = get_json(client, &format!("{base}/openapi.json")).await?;
    anyhow::ensure!(status == 200, "GET /openapi.json answered {status}");
    let version = doc["openapi"].as_str().unwrap_or("none");
    anyhow::ensure!(
        version.starts_with("3.1"),
        "expected OpenAPI 3.1, got {version}"
    );
    anyhow::ensure!(
        doc["paths"]["/queue/rerun"]["post"].is_object(),
        "the document has no POST /queue/rerun"
    );
    Ok(format!("OpenAPI {version} with POST /queue/rerun"))
}

async fn dry_run(
    client: &reqwest::Client,
    base: &str,
    options: &SmokeOptions,
) -> anyhow::Result<String> {
    let (status, body) = rerun(client, base, options, options.plan_id).await?;
    let code = body["result"]["code"].as_i64();
    anyhow::ensure!(
        status == 200 && code == Some(0),
        "dry run of plan {} answered {status} code {}: {}",
        options.plan_id,
        body["result"]["code"],
        body["result"]["message"]
    );
    anyhow::ensure!(
        body["data"]["executionId"].is_null(),
        "the dry run created execution {}",
        body["data"]["executionId"]
    );
    let pairs = body["data"]["queued"].as_array().map_or(0, Vec::len);
    Ok(format!(
        "dry run of plan {} validated, {pairs} pair(s) would be queued",
        options.plan_id
    ))
}

async fn unknown_plan(
    client: &reqwest::Client,
    base: &str,
    options: &SmokeOptions,
) -> anyhow::Result<String> {
    let (status, body) = rerun(client, base, options, UNKNOWN_PLAN_ID).await?;
    let code = body["result"]["code"].as_i64();
    anyhow::ensure!(
        status == 400 && code == Some(1000),
        "expected 400 code 1000, got {status} code {}: {}",
        body["result"]["code"],
        body["result"]["message"]
    );
    Ok(format!(
        "unknown plan answered 400 code 1000 ({})",
        body["result"]["message"]
    ))
}

/// A dry-run `POST /queue/rerun` of `plan_id` with the options' other ids.
async fn rerun(
    client: &reqwest::Client,
    base: &str,
    options: &SmokeOptions,
    plan_id: i64,
) -> anyhow::Result<(u16, Value)> {
    let body = json!({
        "planId": plan_id,
        "userId": options.user_id,
        "frameworkType": options.framework_type,
        "scenarioId": options.scenario_id,
        "dryRun": true,
    });
    let response = client
        .post(format!("{base}/queue/rerun"))
        .bearer_auth(&options.token)
        .header("X-Request-Id", format!("smoke-{}", uuid::Uuid::new_v4()))
        .json(&body)
        .send()
        .await
        .context("POST /queue/rerun failed")?;
    read_json(response).await
}

async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<(u16, Value)> {
    let response = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url} failed"))?;
    read_json(response).await
}

async fn read_json(response: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    let status = response.status().as_u16();
    let body = response
        .json()
        .await
        .with_context(|| format!("answer {status} is not JSON"))?;
    Ok((status, body))
}
