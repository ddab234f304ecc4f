//! `POST /queue/rerun` and its alias `POST /queue` (contract, section 1).

use super::queue::{log_accepted, respond, QueueRequest};
use crate::app::AppState;
use crate::domain::check_callback_url;
use crate::domain::parse_rerun_request;
use crate::error::{ApiError, Envelope};
use actix_web::{web, HttpRequest, HttpResponse};

/// The canonical path of the rerun operation; `/queue` is its alias.
pub const RERUN_PATH: &str = "/queue/rerun";

/// Authenticates (401), reads and parses the body (1001, 1006, 1003, 1007,
/// 1008), checks the token's rights (1010), runs the rerun, answers 200.
/// The error answers of the OpenAPI document are added by `crate::openapi`.
#[utoipa::path(
    post,
    path = "/queue/rerun",
    tag = "rerun",
    operation_id = "rerun",
    summary = "Rerun scenario–environment pairs of a test plan's last executed results",
    description = "Validates the request against the plan's source run (its most recent full \
run and the reruns made from it), records the rerun and one dispatch record per pair in one \
transaction, and answers 200: every message then reaches RabbitMQ (one per pair, routing key \
= frameworkType), even if the broker is unreachable at that moment. With `dryRun` nothing is \
written or published and every `messageId` is null. Instead of naming pairs, `statuses` selects \
every pair of the source run whose current status (its latest attempt's) is one of them; \
`onInFlight` says what to do with a named pair that is still queued or running (`queue` it again, \
`skip` it and list it in `skipped`, or `refuse` with 409 code 1014). No pair goes beyond \
`MAX_ATTEMPTS` attempts (code 1015). Checks run in the order of the error table of the contract; \
the first failure answers.",
    request_body(content = crate::domain::request::RawRerunRequest, content_type = "application/json",
        example = json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
            "scenarioEnvironmentPairs": [{"scenarioId": 111, "environmentId": 222},
                                         {"scenarioId": 112}]})),
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
            body = Envelope<crate::service::RerunAccepted>,
            example = json!({"data": {"executionId": 5012, "planId": 614, "sourceExecutionId": 4980,
                "frameworkType": "APPIUM", "queued": [{"scenarioId": 111, "environmentId": 222,
                "attempt": 2, "messageId": "0b6f2f0e-4a0c-4f53-9d0e-3c1f1d2a7b11"}],
                "skipped": [{"scenarioId": 112, "environmentId": 223, "executionId": 5011,
                "attempt": 2, "status": "RUNNING"}]},
                "result": {"code": 0, "message": "success"}}))
    ),
    security(("bearer" = []))
)]
pub async fn rerun(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let read = QueueRequest::read(&request, payload, &state).await?;
    let config = &state.config;
    let parsed = parse_rerun_request(
        &read.body,
        &config.amqp.framework_types,
        config.limits.max_pairs,
    )?;
    check_callback_url(parsed.callback_url.as_deref(), &state.callback_hosts)?;
    let (plan_id, user_id) = (parsed.plan_id, parsed.user_id);
    let context = read.admit(&request, &state, (plan_id, user_id), parsed.dry_run)?;
    let framework_type = parsed.framework_type.clone();
    let correlation_id = context.correlation_id.clone();
    let outcome = state.queue.rerun(parsed, context).await?;
    respond(outcome, |accepted| {
        let pairs = accepted.queued.len();
        if accepted.execution_id.is_some() {
            state.metrics.rerun_accepted(&framework_type, pairs);
        }
        let request_id = correlation_id.as_deref();
        log_accepted(
            "rerun",
            plan_id,
            user_id,
            accepted.execution_id,
            pairs,
            request_id,
        );
    })
}
