//! `POST /queue/rerun` and its alias `POST /queue` (contract, section 1).

use crate::domain::parse_rerun_request;
use crate::error::{ApiError, Envelope};
use crate::service::{RerunContext, RerunOutcome};
use crate::startup::{AppState, RequestId};
use actix_web::http::header::{self, ContentType};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use std::time::Duration;

/// Header that names a retry-safe request (IETF httpapi idempotency-key draft).
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// Authenticates (401), reads and parses the body (1001, 1006, 1003, 1007,
/// 1008), checks the token's rights (1010), runs the rerun, answers 200.
pub async fn rerun(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let caller = state.verifier.authenticate(request.headers())?;
    check_content_type(&request)?;
    let idempotency_key = idempotency_key(&request)?;
    let config = &state.config;
    let body = read_body(
        payload,
        &request,
        config.body_limit,
        config.body_read_timeout,
    )
    .await?;
    let parsed = parse_rerun_request(&body, &config.framework_types, config.max_pairs)?;
    caller.authorize_rerun(parsed.user_id)?;
    let (plan_id, user_id) = (parsed.plan_id, parsed.user_id);
    let correlation_id = request.extensions().get::<RequestId>().map(|r| r.0.clone());
    let context = RerunContext {
        subject: caller.subject,
        correlation_id: correlation_id.clone(),
        idempotency_key,
    };
    let response = match state.service.rerun(parsed, context).await? {
        RerunOutcome::Accepted(accepted) => {
            log::info!(
                "rerun {} plan={plan_id} user={user_id} execution={} pairs={} request_id={}",
                if accepted.execution_id.is_some() {
                    "queued"
                } else {
                    "validated (dry run)"
                },
                accepted
                    .execution_id
                    .map_or("-".to_owned(), |id| id.to_string()),
                accepted.queued.len(),
                correlation_id.as_deref().unwrap_or("-"),
            );
            HttpResponse::Ok().json(Envelope::success(accepted))
        }
        RerunOutcome::Replayed { status, body } => HttpResponse::build(
            actix_web::http::StatusCode::from_u16(status).map_err(anyhow::Error::from)?,
        )
        .insert_header(("Idempotent-Replayed", "true"))
        .content_type(ContentType::json())
        .body(body),
    };
    Ok(response)
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

/// The `Idempotency-Key` header: 1 to 255 printable ASCII characters, else 1001.
fn idempotency_key(request: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = request.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
        return Err(ApiError::InvalidRequest(
            "Idempotency-Key must be 1 to 255 printable ASCII characters".to_owned(),
        ));
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
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
