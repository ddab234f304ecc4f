//! What the queueing operations, `POST /queue/rerun` (`rerun.rs`) and
//! `POST /queue/run` (`run.rs`), do alike before and after their service
//! call: authenticate, check the headers, read the body, check the rights
//! and the outbox, log, replay a stored answer.

use crate::app::{AppState, RequestFacts, RequestId};
use crate::auth::Caller;
use crate::error::{ApiError, Envelope};
use crate::idempotency::IdempotencyKey;
use crate::service::{QueueContext, QueueOutcome};
use actix_web::http::header::{self, ContentType};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::Serialize;
use std::time::Duration;

/// Header that names a retry-safe request (IETF httpapi idempotency-key draft).
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// A queueing request read, not yet parsed: who sent it, its
/// `Idempotency-Key`, its body.
pub(crate) struct QueueRequest {
    /// The authenticated caller.
    pub caller: Caller,
    idempotency_key: Option<IdempotencyKey>,
    /// The JSON body, to parse into the operation's request.
    pub body: web::BytesMut,
}

impl QueueRequest {
    /// What every queueing operation does before parsing its body:
    /// authenticates (401), checks the content type (415 code 1001) and the
    /// `Idempotency-Key` header (1001), reads the body (413, 408).
    pub(crate) async fn read(
        request: &HttpRequest,
        payload: web::Payload,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let caller = state.verifier.authenticate(request.headers())?;
        check_content_type(request)?;
        let idempotency_key = idempotency_key(request)?;
        let http = &state.config.http;
        let body = read_body(payload, request, http.body_limit, http.body_read_timeout).await?;
        Ok(QueueRequest {
            caller,
            idempotency_key,
            body,
        })
    }

    /// [`read`](Self::read) for an operation whose body may be absent (a
    /// cancel, contract section 16: "Body: none, or `{}`"): the content type
    /// is checked only when there is a body, so a bodiless POST with a form
    /// content type (what `curl -X POST -d ''` sends) is not 415.
    pub(crate) async fn read_optional_body(
        request: &HttpRequest,
        payload: web::Payload,
        state: &AppState,
    ) -> Result<Self, ApiError> {
        let caller = state.verifier.authenticate(request.headers())?;
        let idempotency_key = idempotency_key(request)?;
        let http = &state.config.http;
        let body = read_body(payload, request, http.body_limit, http.body_read_timeout).await?;
        if !body.iter().all(u8::is_ascii_whitespace) {
            check_content_type(request)?;
        }
        Ok(QueueRequest {
            caller,
            idempotency_key,
            body,
        })
    }

    /// What every queueing operation does after parsing its body: records
    /// `(plan_id, user_id)` for the access log, checks the token's rights
    /// (1010), and unless a dry run the outbox's backlog (503 code 1011);
    /// then says who asks and how: the token's subject, the request id (the
    /// AMQP `correlation_id`) and the `Idempotency-Key`.
    pub(crate) fn admit(
        self,
        request: &HttpRequest,
        state: &AppState,
        (plan_id, user_id): (i64, i64),
        dry_run: bool,
    ) -> Result<QueueContext, ApiError> {
        request
            .extensions_mut()
            .insert(RequestFacts { plan_id, user_id });
        self.caller.authorize_queue(user_id)?;
        if !dry_run {
            state.outbox_gate.admit()?;
        }
        Ok(QueueContext {
            subject: self.caller.subject,
            correlation_id: request.extensions().get::<RequestId>().map(|r| r.0.clone()),
            idempotency_key: self.idempotency_key,
        })
    }
}

/// The answer to a queueing request: 200 around the accepted data, after
/// `on_accepted` (metrics, the log line), or the first answer to its
/// Idempotency-Key again.
pub(crate) fn respond<T: Serialize>(
    outcome: QueueOutcome<T>,
    on_accepted: impl FnOnce(&T),
) -> Result<HttpResponse, ApiError> {
    match outcome {
        QueueOutcome::Accepted(accepted) => {
            on_accepted(&accepted);
            Ok(HttpResponse::Ok().json(Envelope::success(accepted)))
        }
        QueueOutcome::Replayed { status, body } => replayed(status, body),
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
fn replayed(status: u16, body: String) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status).map_err(anyhow::Error::from)?,
    )
    .insert_header(("Idempotent-Replayed", "true"))
    .content_type(ContentType::json())
    .body(body))
}

/// 415 code 1001 unless the body is declared JSON (`application/json` or a
/// `+json` type); a request without `Content-Type` is read as JSON.
pub(crate) fn check_content_type(request: &HttpRequest) -> Result<(), ApiError> {
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
    Ok(first
        .map(|value| IdempotencyKey::parse(value.as_bytes()))
        .transpose()?)
}

/// Reads the body: 413 beyond `limit` bytes (by `Content-Length` before
/// reading, or while reading), 408 when it is not complete within `timeout`.
pub(crate) async fn read_body(
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
