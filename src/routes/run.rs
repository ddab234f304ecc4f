//! `POST /queue/run` (contract, section 7).

use super::queue::{log_accepted, respond, QueueRequest};
use crate::app::AppState;
use crate::domain::check_callback_url;
use crate::domain::parse_run_request;
use crate::error::{ApiError, Envelope};
use actix_web::{web, HttpRequest, HttpResponse};

/// The path of the run operation.
pub const RUN_PATH: &str = "/queue/run";

/// Authenticates (401), reads and parses the body (1001, 413, 1006, 1003),
/// checks the token's rights (1010), runs the plan, answers 200. The error
/// answers of the OpenAPI document are added by `crate::openapi`.
#[utoipa::path(
    post,
    path = "/queue/run",
    tag = "run",
    operation_id = "run",
    summary = "Run a whole test plan: every scenario on every environment",
    description = "Queues the plan's scenarios × environments (or the given subsets), ordered by \
scenario then environment, each at attempt 1, as a new full run: it becomes the plan's source \
run for later reruns. Records the run and one dispatch record per pair in one transaction and \
answers 200: every message then reaches RabbitMQ (one per pair, `type` `scenario.run`, routing \
key = frameworkType), even if the broker is unreachable at that moment. Refused with 409 code \
1014 while a pair of the plan's consolidated results is queued or running, unless `force`. With \
`dryRun` nothing is written or published and `executionId`, `sourceExecutionId` and every \
`messageId` are null. Checks run in the order of the contract's error table; the first failure \
answers.",
    request_body(content = crate::domain::run_request::RawRunRequest, content_type = "application/json",
        example = json!({"planId": 614, "userId": 13, "scenarioIds": [111, 112],
            "environmentIds": [222]})),
    params(
        ("Idempotency-Key" = Option<String>, Header, nullable = false, min_length = 1,
            max_length = 255, pattern = "^[ -~]+$", description = "1–255 printable ASCII characters; a retry with the same key and body \
gets the first answer again (header `Idempotent-Replayed: true`) and queues nothing new"),
        ("X-Request-Id" = Option<String>, Header, nullable = false,
            description = "1–128 visible ASCII characters, else one is generated; echoed on the \
answer and carried as the AMQP `correlation_id` of the messages")
    ),
    responses(
        (status = 200, description = "Queued (or, with `dryRun`, validated)",
            body = Envelope<crate::service::RunAccepted>,
            example = json!({"data": {"executionId": 5013, "planId": 614, "sourceExecutionId": 5013,
                "frameworkType": "APPIUM", "queued": [
                    {"scenarioId": 111, "environmentId": 222, "attempt": 1,
                     "messageId": "6c1e4f7a-93a1-4b0e-8f3e-2d7f0c9b5a10"},
                    {"scenarioId": 112, "environmentId": 222, "attempt": 1,
                     "messageId": "d2b8a0c4-1f5e-4e8b-9a37-7c6d5e4f3a21"}]},
                "result": {"code": 0, "message": "success"}}))
    ),
    security(("bearer" = []))
)]
pub async fn run(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let read = QueueRequest::read(&request, payload, &state).await?;
    let parsed = parse_run_request(&read.body, &state.config.amqp.framework_types)?;
    check_callback_url(parsed.callback_url.as_deref(), &state.callback_hosts)?;
    let (plan_id, user_id) = (parsed.plan_id, parsed.user_id);
    let context = read.admit(&request, &state, (plan_id, user_id), parsed.dry_run)?;
    let correlation_id = context.correlation_id.clone();
    let outcome = state.queue.run(parsed, context).await?;
    respond(outcome, |accepted| {
        let pairs = accepted.queued.len();
        if accepted.execution_id.is_some() {
            state.metrics.run_accepted(&accepted.framework_type, pairs);
        }
        let request_id = correlation_id.as_deref();
        log_accepted(
            "run",
            plan_id,
            user_id,
            accepted.execution_id,
            pairs,
            request_id,
        );
    })
}
