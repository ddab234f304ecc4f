//! `POST /queue/rerun` and its alias `POST /queue` (contract, section 1).

use crate::app::{AppState, RequestFacts, RequestId};
use crate::auth::Caller;
use crate::domain::parse_rerun_request;
use crate::error::{ApiError, Envelope};
use crate::idempotency::IdempotencyKey;
use crate::service::{RerunContext, RerunOutcome};
use actix_web::http::header::{self, ContentType};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use std::time::Duration;

/// Header that names a retry-safe request (IETF httpapi idempotency-key draft).
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
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
    let (caller, idempotency_key, body) = read_request(&request, payload, &state).await?;
    let config = &state.config;
    let parsed = parse_rerun_request(&body, &config.amqp.framework_types, config.limits.max_pairs)?;
    let (plan_id, user_id) = (parsed.plan_id, parsed.user_id);
    request
        .extensions_mut()
        .insert(RequestFacts { plan_id, user_id });
    caller.authorize_rerun(parsed.user_id)?;
    if !parsed.dry_run {
        state.outbox_gate.admit()?;
    }
    let framework_type = parsed.framework_type.clone();
    let context = context(&request, caller.subject, idempotency_key);
    let correlation_id = context.correlation_id.clone();
    let response = match state.service.rerun(parsed, context).await? {
        RerunOutcome::Accepted(accepted) => {
            if accepted.execution_id.is_some() {
                state
                    .metrics
                    .rerun_accepted(&framework_type, accepted.queued.len());
            }
            log_accepted(
                "rerun",
                plan_id,
                user_id,
                accepted.execution_id,
                accepted.queued.len(),
                correlation_id.as_deref(),
            );
            HttpResponse::Ok().json(Envelope::success(accepted))
        }
        RerunOutcome::Replayed { status, body } => replayed(status, body)?,
    };
    Ok(response)
}

/// What every queueing operation does before parsing its body:
/// authenticates (401), checks the content type (415 code 1001) and the
/// `Idempotency-Key` header (1001), reads the body (413, 408).
pub(crate) async fn read_request(
    request: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
) -> Result<(Caller, Option<IdempotencyKey>, web::BytesMut), ApiError> {
    let caller = state.verifier.authenticate(request.headers())?;
    check_content_type(request)?;
    let idempotency_key = idempotency_key(request)?;
    let http = &state.config.http;
    let body = read_body(payload, request, http.body_limit, http.body_read_timeout).await?;
    Ok((caller, idempotency_key, body))
}

/// Who asks and how: the token's subject, the request id (the AMQP
/// `correlation_id`) and the `Idempotency-Key`.
pub(crate) fn context(
    request: &HttpRequest,
    subject: String,
    idempotency_key: Option<IdempotencyKey>,
) -> RerunContext {
    RerunContext {
        subject,
        correlation_id: request.extensions().get::<RequestId>().map(|r| r.0.clone()),
        idempotency_key,
    }
}

/// The log line of an accepted `operation` (`rerun` or `run`).
pub(crate) fn log_accepted(
    operation: &str,
    plan_id: i64,
    user_id: i64,
    execution_id: Option<i64>,
    pairs: usize,
    correlation_id: Option<&str>,
) {
    log::info!(
        "{operation} {} plan={plan_id} user={user_id} execution={} pairs={pairs} request_id={}",
        if execution_id.is_some() {
            "queued"
        } else {
            "validated (dry run)"
        },
        execution_id.map_or("-".to_owned(), |id| id.to_string()),
        correlation_id.unwrap_or("-"),
    );
}

/// The first answer to an Idempotency-Key, sent again as stored, with
/// `Idempotent-Replayed: true`.
pub(crate) fn replayed(status: u16, body: String) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status).map_err(anyhow::Error::from)?,
    )
    .insert_header(("Idempotent-Replayed", "true"))
    .content_type(ContentType::json())
    .body(body))
}

/// 415 code 1001 unless the body is declared JSON (`application/json` or a
/// `+json` type); a request without `Content-Type` is read as JSON.
fn check_content_type(request: &HttpRequest) -> Result<(), ApiError> {
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(if essence.is_empty() {
            "an unreadable type".to_owned()
        } else {
            essence
        }))
    }
}

/// The `Idempotency-Key` header, if sent: once, 1 to 255 printable ASCII
/// characters, else 1001 (two keys would make the request's identity
/// depend on which one a retry repeats).
fn idempotency_key(request: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut sent = request.headers().get_all(IDEMPOTENCY_KEY);
    let first = sent.next();
    if sent.next().is_some() {
        return Err(ApiError::InvalidRequest(
            "Idempotency-Key must be sent once".to_owned(),
        ));
    }
    first
        .map(|value| IdempotencyKey::parse(value.as_bytes()))
        .transpose()
}

/// Reads the body: 413 beyond `limit` bytes (by `Content-Length` before
/// reading, or while reading), 408 when it is not complete within `timeout`.
async fn read_body(
    mut payload: web::Payload,
    request: &HttpRequest,
    limit: usize,
    timeout: Duration,
) -> Result<web::BytesMut, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::BodyTooLarge(limit));
    }
    let read = async {
        let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
        while let Some(chunk) = payload.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::InvalidRequest(format!("cannot read the body: {e}")))?;
            if body.len() + chunk.len() > limit {
                return Err(ApiError::BodyTooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ApiError::BodyTimeout(timeout.as_millis()))?
}
