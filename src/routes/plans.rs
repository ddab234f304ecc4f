//! The plan reads (`GET /plans`, `GET /plans/{planId}`; HEAD too): names and
//! sizes of the plans a caller may read, for the page and for integrators.
//!
//! Checks as in `routes::executions` (contract, section 11): a path id that
//! is not a positive integer is an unknown route (404 code 1001); then the
//! token (401 code 1009); its authorities (403 code 1010); then the read,
//! where a plan the caller may not see answers as an unknown one (404 code 1000).

use super::executions::{path_id, read_scope};
use crate::app::AppState;
use crate::error::{ApiError, Envelope};
use actix_web::{web, HttpRequest, HttpResponse};

/// Path of the plans list.
pub const PLANS_PATH: &str = "/plans";
/// Path of one plan.
pub const PLAN_PATH: &str = "/plans/{planId}";

/// The plans the caller may read.
#[utoipa::path(
    get,
    path = "/plans",
    tag = "read",
    operation_id = "listPlans",
    summary = "The plans the token's subject may read, with their latest run",
    description = "Every plan of a project the token's subject is a member of (every plan with \
`QUEUE_ADMIN`), ordered by `planId`, not paged. `latestRun` is the plan's most recent full run \
(its source run) as `GET /executions/{executionId}` answers it without `pairs`; `resultCounts` \
the `counts` of `GET /plans/{planId}/results` (the current status of each pair of that run's \
chain); both null when the plan never ran. Needs `PLAN_RUN`, `PLAN_READ` or `QUEUE_ADMIN`.",
    responses(
        (status = 200, description = "The plans",
            body = Envelope<crate::service::plans::PlanList>,
            example = json!({"data": {"plans": [{"planId": 614, "name": "Checkout smoke",
                "projectId": 7, "projectName": "Shop mobile app", "frameworkType": "APPIUM",
                "scenarioCount": 4, "environmentCount": 3,
                "latestRun": {"executionId": 4980, "planId": 614, "kind": "RUN",
                    "sourceExecutionId": 4980, "trigger": "USER", "retryOf": null,
                    "frameworkType": null, "requestedBy": 13,
                    "requestedAt": "2026-11-27T10:00:00Z", "startedAt": "2026-11-27T10:00:00Z",
                    "finishedAt": "2026-11-27T10:12:00Z", "status": "FINISHED",
                    "counts": {"QUEUED": 0, "RUNNING": 0, "PASSED": 2, "FAILED": 2, "ERROR": 1,
                        "SKIPPED": 0, "ABORTED": 1}},
                "resultCounts": {"QUEUED": 0, "RUNNING": 0, "PASSED": 3, "FAILED": 1,
                    "ERROR": 1, "SKIPPED": 0, "ABORTED": 1}},
                {"planId": 615, "name": "Nightly regression (never run)", "projectId": 7,
                "projectName": "Shop mobile app", "frameworkType": null, "scenarioCount": 1,
                "environmentCount": 1, "latestRun": null, "resultCounts": null}]},
                "result": {"code": 0, "message": "success"}}))
    ),
    security(("bearer" = []))
)]
pub async fn plans(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let scope = read_scope(&request, &state)?;
    let list = state.reads.plans(scope).await?;
    Ok(HttpResponse::Ok().json(Envelope::success(list)))
}

/// One plan with its scenarios and environments.
#[utoipa::path(
    get,
    path = "/plans/{planId}",
    tag = "read",
    operation_id = "getPlan",
    summary = "A plan with its scenarios and environments",
    description = "The plan as `GET /plans` lists it, with `scenarios` and `environments` \
(each ordered by id), so that the ids of `GET /plans/{planId}/results` can be shown by name. \
Needs `PLAN_RUN`, `PLAN_READ` or `QUEUE_ADMIN`; without `QUEUE_ADMIN` a plan of a project the \
token's subject is not a member of is 404 code 1000, as an unknown one.",
    params(("planId" = i64, Path, minimum = 1, example = 614, description = "The plan's id")),
    responses(
        (status = 200, description = "The plan",
            body = Envelope<crate::service::plans::PlanDetail>,
            example = json!({"data": {"planId": 614, "name": "Checkout smoke",
                "projectId": 7, "projectName": "Shop mobile app", "frameworkType": "APPIUM",
                "scenarioCount": 2, "environmentCount": 2, "latestRun": null,
                "resultCounts": null,
                "scenarios": [{"id": 111, "name": "Login with valid credentials"},
                              {"id": 112, "name": "Add item to basket"}],
                "environments": [
                    {"id": 222, "name": "Pixel 8", "platform": "ANDROID", "version": "14"},
                    {"id": 223, "name": "iPhone 15", "platform": "IOS", "version": "17.4"}]},
                "result": {"code": 0, "message": "success"}}))
    ),
    security(("bearer" = []))
)]
pub async fn plan(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let plan_id = path_id(&request, "planId")?;
    let scope = read_scope(&request, &state)?;
    let detail = state.reads.plan(scope, plan_id).await?;
    Ok(HttpResponse::Ok().json(Envelope::success(detail)))
}
