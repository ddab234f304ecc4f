//! `GET /plans/{planId}/flakiness` (contract, section 19); HEAD too. Checks
//! in the order of the other reads (`routes::executions`): the path id (404
//! code 1001), the token (401 code 1009), the query (400 code 1001), the
//! token's authorities (403 code 1010), then the plan (404 code 1000).

use crate::app::AppState;
use crate::domain::parse_flakiness_query;
use crate::error::{ApiError, Envelope};
use crate::routes::executions::{known_tags, path_id, respond};
use actix_web::{web, HttpRequest, HttpResponse};

/// Path of a plan's flakiness over time.
pub const PLAN_FLAKINESS_PATH: &str = "/plans/{planId}/flakiness";

/// Flakiness over a plan's last full runs.
#[utoipa::path(
    get,
    path = "/plans/{planId}/flakiness",
    tag = "read",
    operation_id = "getPlanFlakiness",
    summary = "Flakiness over a plan's last full runs: per pair, per environment (suspect) and \
per scenario",
    description = "Looks at the plan's last `runs` full runs (kind `RUN`) and each one's \
consolidated results as they stand now (that run and the reruns made from it, automatic retries \
included). A pair was **flaky in a run** when an attempt `FAILED` or `ERROR` came before one \
`PASSED`; it **failed first** when its attempt 1 was `FAILED` or `ERROR`. `runs` / `pairRuns` \
count the (pair, run) combinations present; `flakeRate` = `flaky` / that count, rounded to 4 \
decimals. An environment is `suspect` when its `flaky` is at least 3 and its rate at least twice \
that of all the plan's other environments together (0 when there are none): the device, more \
than the tests, looks flaky. `pairs` are ordered by scenario then environment, `environments` \
and `scenarios` by id. A plan that never ran answers `runs` 0 and empty lists. Needs `PLAN_RUN`, \
`PLAN_READ` or `QUEUE_ADMIN`; without `QUEUE_ADMIN` a plan of a project the token's subject is \
not a member of is 404, as an unknown one.",
    params(
        ("planId" = i64, Path, minimum = 1, example = 614, description = "The plan's id"),
        ("runs" = Option<i64>, Query, minimum = 1, maximum = 100, example = 20,
            description = "How many of the plan's last full runs to look at, 1-100 (default \
20); anything else is code 1001")
    ),
    responses(
        (status = 200, description = "The plan's flakiness",
            body = Envelope<crate::service::flakiness::PlanFlakiness>,
            example = json!({"data": {"planId": 614, "runs": 3,
                "pairs": [
                    {"scenarioId": 113, "environmentId": 223, "runs": 3, "failedFirst": 3,
                        "flaky": 3, "flakeRate": 1.0},
                    {"scenarioId": 113, "environmentId": 224, "runs": 3, "failedFirst": 0,
                        "flaky": 0, "flakeRate": 0.0}],
                "environments": [
                    {"environmentId": 223, "pairRuns": 3, "failedFirst": 3, "flaky": 3,
                        "flakeRate": 1.0, "suspect": true},
                    {"environmentId": 224, "pairRuns": 3, "failedFirst": 0, "flaky": 0,
                        "flakeRate": 0.0, "suspect": false}],
                "scenarios": [
                    {"scenarioId": 113, "pairRuns": 6, "failedFirst": 3, "flaky": 3,
                        "flakeRate": 0.5}]},
                "result": {"code": 0, "message": "success"}}))
    ),
    security(("bearer" = []))
)]
pub async fn plan_flakiness(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let plan_id = path_id(&request, "planId")?;
    let caller = state.verifier.authenticate(request.headers())?;
    let runs = parse_flakiness_query(request.query_string())?;
    let scope = caller.authorize_read()?;
    let answer = state
        .reads
        .plan_flakiness(scope, plan_id, runs, known_tags(&request))
        .await?;
    Ok(respond(answer))
}
