//! The read endpoints (contract, section 11): `GET /executions/{executionId}`,
//! `GET /plans/{planId}/executions`, `GET /plans/{planId}/results`; HEAD too.
//!
//! Checks, in order: a path id that is not a positive integer is an unknown
//! route (404 code 1001); then the token (401 code 1009); the query (400
//! code 1001); the token's authorities (403 code 1010); then the read, where
//! a plan or execution the caller may not see answers as an unknown one (404).
//! The error answers of the OpenAPI document are added by `crate::openapi`.

use crate::app::AppState;
use crate::auth::ReadScope;
use crate::domain::{parse_page_query, parse_path_id, parse_results_query, Id, KnownTags};
use crate::error::{ApiError, Envelope};
use crate::service::reads::{Conditional, EnvelopeJson};
use actix_web::http::header::{self, EntityTag, Header};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

/// Path of one execution.
pub const EXECUTION_PATH: &str = "/executions/{executionId}";
/// Path of an execution's callback deliveries (contract, section 21).
pub const EXECUTION_CALLBACKS_PATH: &str = "/executions/{executionId}/callbacks";
/// Path of a plan's executions.
pub const PLAN_EXECUTIONS_PATH: &str = "/plans/{planId}/executions";
/// Path of a plan's consolidated results.
pub const PLAN_RESULTS_PATH: &str = "/plans/{planId}/results";

/// The id in the path segment `name`; 404 code 1001 (as an unknown route)
/// when it is not a positive integer.
pub(crate) fn path_id(request: &HttpRequest, name: &str) -> Result<Id, ApiError> {
    request
        .match_info()
        .get(name)
        .and_then(parse_path_id)
        .ok_or_else(|| ApiError::NotFound(request.path().to_owned()))
}

/// The caller's read scope: 401 code 1009, 403 code 1010.
pub(crate) fn read_scope(request: &HttpRequest, state: &AppState) -> Result<ReadScope, ApiError> {
    state
        .verifier
        .authenticate(request.headers())?
        .authorize_read()
}

/// The tags of the request's `If-None-Match` (contract, section 22); a
/// header that is not a list of entity tags or `*` compares as none (the
/// answer is a 200, never a 304 on a malformed header).
pub(crate) fn known_tags(request: &HttpRequest) -> KnownTags {
    match header::IfNoneMatch::parse(request) {
        Ok(header::IfNoneMatch::Any) => KnownTags::Any,
        Ok(header::IfNoneMatch::Items(tags)) if !tags.is_empty() => {
            KnownTags::Tags(tags.into_iter().map(|t| t.tag().to_owned()).collect())
        }
        _ => KnownTags::Nothing,
    }
}

/// A read's answer: 200 with the body in the envelope, or 304 with no body;
/// both with the `ETag` of the answer (contract, section 22).
pub(crate) fn respond<T: Serialize>(answer: Conditional<T>) -> HttpResponse {
    let etag =
        |tag: &crate::domain::ReadTag| header::ETag(EntityTag::new_strong(tag.as_str().to_owned()));
    match answer {
        Conditional::NotModified(tag) => HttpResponse::NotModified()
            .insert_header(etag(&tag))
            .finish(),
        Conditional::Modified(tag, body) => HttpResponse::Ok()
            .insert_header(etag(&tag))
            .json(Envelope::success(body)),
    }
}

/// [`respond`] for an answer serialised in its envelope already: the
/// shared bytes are the body.
pub(crate) fn respond_json(answer: Conditional<EnvelopeJson>) -> HttpResponse {
    match answer {
        Conditional::NotModified(tag) => respond::<()>(Conditional::NotModified(tag)),
        Conditional::Modified(tag, body) => HttpResponse::Ok()
            .insert_header(header::ETag(EntityTag::new_strong(tag.as_str().to_owned())))
            .content_type(header::ContentType::json())
            .body(web::Bytes::from_owner(body.0)),
    }
}

/// An execution with its pairs.
#[utoipa::path(
    get,
    path = "/executions/{executionId}",
    tag = "read",
    operation_id = "getExecution",
    summary = "An execution (a run or a rerun) with the status of each of its pairs",
    description = "`status` is `QUEUED` while no pair has started or finished, `FINISHED` once \
every pair is terminal, `RUNNING` otherwise. `counts` has all seven pair statuses. `pairs` are \
ordered by scenario then environment. Needs `PLAN_RUN`, `PLAN_READ` or `QUEUE_ADMIN`; without \
`QUEUE_ADMIN` an execution of a project the token's subject is not a member of is 404, as an \
unknown one.",
    params(("executionId" = i64, Path, minimum = 1, example = 4980,
        description = "The execution's id")),
    responses(
        (status = 200, description = "The execution",
            body = Envelope<crate::service::reads::ExecutionDetail>,
            example = json!({"data": {"executionId": 5012, "planId": 614, "kind": "RERUN",
                "sourceExecutionId": 4980, "trigger": "RETRY", "retryOf": 5011,
                "frameworkType": "APPIUM", "requestedBy": 13,
                "requestedAt": "2026-11-30T09:00:00Z", "startedAt": "2026-11-30T09:02:29Z",
                "finishedAt": "2026-11-30T09:03:10Z", "status": "FINISHED",
                "counts": {"QUEUED": 0, "RUNNING": 0, "PASSED": 0, "FAILED": 1, "ERROR": 0,
                    "SKIPPED": 0, "ABORTED": 0},
                "pairs": [{"scenarioId": 111, "environmentId": 222, "attempt": 2,
                    "status": "FAILED", "messageId": "0b6f2f0e-4a0c-4f53-9d0e-3c1f1d2a7b11",
                    "publishedAt": "2026-11-30T09:00:00.041Z", "startedAt": "2026-11-30T09:02:29Z",
                    "finishedAt": "2026-11-30T09:03:10Z", "durationMs": 41250,
                    "reportUrl": "https://reports.example/5012/111/222",
                    "detail": "Expected basket total 42.00 but was 0.00"}]},
                "result": {"code": 0, "message": "success"}}))
    ),
    security(("bearer" = []))
)]
pub async fn execution(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let execution_id = path_id(&request, "executionId")?;
    let scope = read_scope(&request, &state)?;
    let answer = state
        .reads
        .execution(scope, execution_id, known_tags(&request))
        .await?;
    Ok(respond(answer))
}

/// An execution's callback deliveries (contract, section 21).
#[utoipa::path(
    get,
    path = "/executions/{executionId}/callbacks",
    tag = "read",
    operation_id = "getExecutionCallbacks",
    summary = "The callback deliveries of an execution: attempts, last answer, delivered or given up",
    description = "One entry per `execution.finished` POSTed to the execution's `callbackUrl` \
(section 21), oldest first; empty when the execution has no `callbackUrl` or has not finished. \
Needs `PLAN_RUN`, `PLAN_READ` or `QUEUE_ADMIN`; without `QUEUE_ADMIN` an execution of a project \
the token's subject is not a member of is 404, as an unknown one.",
    params(("executionId" = i64, Path, minimum = 1, example = 5012,
        description = "The execution's id")),
    responses(
        (status = 200, description = "The deliveries",
            body = Envelope<crate::service::reads::CallbackLog>,
            example = json!({"data": {"callbacks": [{
                "eventId": "2a74c599-dd63-4b06-8fc9-084e67f1bf02",
                "url": "https://ci.example.com/hooks/plan-queue", "attempts": 3,
                "lastStatus": 200, "lastError": null,
                "lastAttemptAt": "2026-11-30T09:03:14Z", "deliveredAt": "2026-11-30T09:03:14Z",
                "givenUpAt": null}]},
                "result": {"code": 0, "message": "success"}}))
    ),
    security(("bearer" = []))
)]
pub async fn execution_callbacks(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let execution_id = path_id(&request, "executionId")?;
    let scope = read_scope(&request, &state)?;
    let log = state.reads.execution_callbacks(scope, execution_id).await?;
    Ok(HttpResponse::Ok().json(Envelope::success(log)))
}

/// One page of a plan's executions, newest first.
#[utoipa::path(
    get,
    path = "/plans/{planId}/executions",
    tag = "read",
    operation_id = "listPlanExecutions",
    summary = "A plan's executions, newest first, a page at a time",
    description = "Executions as `GET /executions/{executionId}` answers them, without `pairs`, \
ordered by `requestedAt` then `executionId`, both descending. Pass `data.nextBefore` as \
`before` for the next page; it is null on the last page. Any other query parameter, or one \
given twice, is 400 code 1001. Needs `PLAN_RUN`, `PLAN_READ` or `QUEUE_ADMIN`; without \
`QUEUE_ADMIN` a plan of a project the token's subject is not a member of is 404, as an unknown one.",
    params(
        ("planId" = i64, Path, minimum = 1, example = 614, description = "The plan's id"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100,
            description = "Executions per page, 1–100 (default 20)"),
        ("before" = Option<i64>, Query, minimum = 1,
            description = "An execution of this plan: the page starts after it (else code 1001)")
    ),
    responses(
        (status = 200, description = "One page",
            body = Envelope<crate::service::reads::ExecutionPage>,
            example = json!({"data": {"executions": [{"executionId": 5012, "planId": 614,
                "kind": "RERUN", "sourceExecutionId": 4980, "trigger": "USER", "retryOf": null,
                "frameworkType": "APPIUM",
                "requestedBy": 13, "requestedAt": "2026-11-30T09:00:00Z", "startedAt": null,
                "finishedAt": null, "status": "QUEUED",
                "counts": {"QUEUED": 1, "RUNNING": 0, "PASSED": 0, "FAILED": 0, "ERROR": 0,
                    "SKIPPED": 0, "ABORTED": 0}}],
                "nextBefore": 5012},
                "result": {"code": 0, "message": "success"}}))
    ),
    security(("bearer" = []))
)]
pub async fn plan_executions(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let plan_id = path_id(&request, "planId")?;
    let caller = state.verifier.authenticate(request.headers())?;
    let page = parse_page_query(request.query_string())?;
    let scope = caller.authorize_read()?;
    let answer = state
        .reads
        .plan_executions(scope, plan_id, page, known_tags(&request))
        .await?;
    Ok(respond(answer))
}

/// How a plan's results give each pair's attempts: `all` (the default) or
/// `none` (contract, section 22). Only documents the parameter, which
/// `parse_results_query` reads.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum AttemptsParam {
    /// Each pair's `attempts` (the default).
    All,
    /// `attemptCount` in place of `attempts`.
    None,
}

/// The consolidated results of a plan.
#[utoipa::path(
    get,
    path = "/plans/{planId}/results",
    tag = "read",
    operation_id = "getPlanResults",
    summary = "The consolidated results of a plan: each pair's latest attempt, every attempt, flaky",
    description = "The pairs of the plan's source run (its most recent full run), each with its \
latest attempt in the source run's chain (the run and every rerun made from it) as its current \
status, all its attempts (first to latest) and `flaky`: an earlier attempt `FAILED` or `ERROR` \
and a later one `PASSED`. `counts` counts the current statuses. Needs `PLAN_RUN`, `PLAN_READ` \
or `QUEUE_ADMIN`; without `QUEUE_ADMIN` a plan of a project the token's subject is not a member \
of is 404, as an unknown one.",
    params(
        ("planId" = i64, Path, minimum = 1, example = 614, description = "The plan's id"),
        ("attempts" = inline(Option<AttemptsParam>), Query, example = "none",
            description = "`all` (the default): each pair's `attempts`; `none`: `attemptCount` \
in their place (contract, section 22); anything else is code 1001")
    ),
    responses(
        (status = 200, description = "The consolidated results",
            body = Envelope<crate::service::reads::PlanResults>,
            examples(
                ("attemptsAll" = (summary = "attempts=all (the default)",
                    value = json!({"data": {"planId": 614, "sourceExecutionId": 4980,
                        "counts": {"QUEUED": 0, "RUNNING": 0, "PASSED": 1, "FAILED": 0,
                            "ERROR": 0, "SKIPPED": 0, "ABORTED": 0},
                        "pairs": [{"scenarioId": 111, "environmentId": 222, "status": "PASSED",
                            "attempt": 2, "executionId": 5012, "reason": null, "flaky": true,
                            "attempts": [{"attempt": 1, "executionId": 4980, "status": "FAILED"},
                                         {"attempt": 2, "executionId": 5012, "status": "PASSED"}]}]},
                        "result": {"code": 0, "message": "success"}}))),
                ("attemptsNone" = (summary = "attempts=none: attemptCount instead of attempts",
                    value = json!({"data": {"planId": 614, "sourceExecutionId": 4980,
                        "counts": {"QUEUED": 0, "RUNNING": 0, "PASSED": 1, "FAILED": 0,
                            "ERROR": 0, "SKIPPED": 0, "ABORTED": 0},
                        "pairs": [{"scenarioId": 111, "environmentId": 222, "status": "PASSED",
                            "attempt": 2, "executionId": 5012, "reason": null, "flaky": true,
                            "attemptCount": 2}]},
                        "result": {"code": 0, "message": "success"}})))
            ))
    ),
    security(("bearer" = []))
)]
pub async fn plan_results(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let plan_id = path_id(&request, "planId")?;
    let caller = state.verifier.authenticate(request.headers())?;
    let attempts = parse_results_query(request.query_string())?;
    let scope = caller.authorize_read()?;
    let answer = state
        .reads
        .plan_results(scope, plan_id, attempts, known_tags(&request))
        .await?;
    Ok(respond_json(answer))
}
