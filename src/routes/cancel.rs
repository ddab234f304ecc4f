//! `POST /executions/{executionId}/cancel` and `POST /plans/{planId}/cancel`
//! (contract, section 16).
//!
//! Checks, in order: a path id that is not a positive integer is an unknown
//! route (404 code 1001); the token (401 code 1009); the body, which is
//! empty or `{}` (else 400 code 1001; a body that is there must be JSON,
//! else 415); the token's
//! authority (403 code 1010: `PLAN_RUN` or `QUEUE_ADMIN`); then the cancel,
//! where an execution or plan the caller may not see answers as an unknown
//! one (404 code 1017 / 1000), and one with nothing in flight 409 code 1020.

use super::queue::QueueRequest;
use crate::app::AppState;
use crate::domain::parse_path_id;
use crate::error::{ApiError, Envelope};
use crate::service::cancel::CancelScope;
use actix_web::{web, HttpRequest, HttpResponse};

/// Path of an execution's cancel.
pub const EXECUTION_CANCEL_PATH: &str = "/executions/{executionId}/cancel";
/// Path of a plan's cancel.
pub const PLAN_CANCEL_PATH: &str = "/plans/{planId}/cancel";

/// Cancels every queued or running pair of one execution.
#[utoipa::path(
    post,
    path = "/executions/{executionId}/cancel",
    tag = "cancel",
    operation_id = "cancelExecution",
    summary = "Cancel an execution: its queued and running pairs end ABORTED, reason CANCELLED",
    description = "Every `QUEUED` or `RUNNING` pair of the execution ends `ABORTED` with \
`reason` `CANCELLED` and `finishedAt` now, in one transaction; the execution turns `FINISHED` \
and publishes `execution.finished` as usual. An `execution.cancelled` event (routing key \
`execution.cancelled.<frameworkType>` on `<exchange>.events`) tells runners which run messages \
to skip or kill. Results that arrive later change nothing. Body: none or `{}`. Needs \
`PLAN_RUN` and membership in the plan's project, or `QUEUE_ADMIN`; an execution the caller may \
not see is 404 as an unknown one. Nothing in flight (also a second cancel): 409 code 1020.",
    params(("executionId" = i64, Path, minimum = 1, example = 5012,
        description = "The execution's id")),
    responses(
        (status = 200, description = "Cancelled",
            body = Envelope<crate::service::cancel::CancelAnswer>,
            example = json!({"data": {"cancelled": [
                    {"executionId": 5012, "scenarioId": 111, "environmentId": 222, "attempt": 2,
                     "previousStatus": "RUNNING"},
                    {"executionId": 5012, "scenarioId": 112, "environmentId": 222, "attempt": 2,
                     "previousStatus": "QUEUED"}],
                "executions": [{"executionId": 5012, "status": "FINISHED"}]},
                "result": {"code": 0, "message": "success"}}))
    ),
    security(("bearer" = []))
)]
pub async fn cancel_execution(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    cancel(
        request,
        payload,
        state,
        "executionId",
        CancelScope::Execution,
    )
    .await
}

/// Cancels every queued or running pair of every execution of a plan.
#[utoipa::path(
    post,
    path = "/plans/{planId}/cancel",
    tag = "cancel",
    operation_id = "cancelPlan",
    summary = "Cancel every execution of a plan: their queued and running pairs end ABORTED, reason CANCELLED",
    description = "As `POST /executions/{executionId}/cancel`, for every execution of the plan \
with pairs in flight; one `execution.cancelled` event per execution. A plan the caller may not \
see is 404 code 1000 as an unknown one. Nothing in flight: 409 code 1020.",
    params(("planId" = i64, Path, minimum = 1, example = 614, description = "The plan's id")),
    responses(
        (status = 200, description = "Cancelled",
            body = Envelope<crate::service::cancel::CancelAnswer>,
            example = json!({"data": {"cancelled": [
                    {"executionId": 5012, "scenarioId": 111, "environmentId": 222, "attempt": 2,
                     "previousStatus": "QUEUED"},
                    {"executionId": 5013, "scenarioId": 112, "environmentId": 223, "attempt": 1,
                     "previousStatus": "RUNNING"}],
                "executions": [{"executionId": 5012, "status": "FINISHED"},
                               {"executionId": 5013, "status": "FINISHED"}]},
                "result": {"code": 0, "message": "success"}}))
    ),
    security(("bearer" = []))
)]
pub async fn cancel_plan(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    cancel(request, payload, state, "planId", CancelScope::Plan).await
}

async fn cancel(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    name: &str,
    scope: fn(i64) -> CancelScope,
) -> Result<HttpResponse, ApiError> {
    let id = request
        .match_info()
        .get(name)
        .and_then(parse_path_id)
        .ok_or_else(|| ApiError::NotFound(request.path().to_owned()))?;
    let read = QueueRequest::read_optional_body(&request, payload, &state).await?;
    check_empty_body(&read.body)?;
    let caller = read.caller;
    let visible = caller.authorize_cancel()?;
    let cancelled_by = caller
        .subject
        .parse::<i64>()
        .ok()
        .filter(|id| *id >= 1 && id.to_string() == caller.subject);
    let answer = state
        .cancels
        .cancel(scope(id.get()), visible, cancelled_by)
        .await?;
    Ok(HttpResponse::Ok().json(Envelope::success(answer)))
}

/// A cancel's body is empty or `{}` (contract, section 16); else 400 code 1001.
fn check_empty_body(body: &[u8]) -> Result<(), ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(fields)) => match fields.keys().next() {
            None => Ok(()),
            Some(field) => Err(ApiError::InvalidRequest(format!("unknown field `{field}`"))),
        },
        Ok(_) => Err(ApiError::InvalidRequest(
            "the body must be empty or {}".to_owned(),
        )),
        Err(e) => Err(ApiError::InvalidRequest(format!("malformed JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_body_is_empty_or_an_empty_object() {
        assert!(check_empty_body(b"").is_ok());
        assert!(check_empty_body(b" {} ").is_ok());
        assert_eq!(
            check_empty_body(b"{\"force\": true}").unwrap_err().code(),
            1001
        );
        assert_eq!(check_empty_body(b"[]").unwrap_err().code(), 1001);
        assert_eq!(check_empty_body(b"{").unwrap_err().code(), 1001);
    }
}
