//! Probes: `GET /health` (contract: 200 once requests are accepted),
//! `GET /health/live` and `GET /health/ready`.

use crate::error::{ApiResult, Envelope};
use crate::startup::AppState;
use actix_web::{web, HttpResponse};
use serde::Serialize;

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

/// 200 `{"data": {"status": "UP"}, …}` once the server accepts requests.
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(Envelope::success(Status { status: "UP" }))
}

/// Liveness: the process answers. Same body as `/health`.
pub async fn live() -> HttpResponse {
    health().await
}

/// The parts readiness looks at.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    pub database: bool,
    pub broker: bool,
    /// Age of the oldest unpublished dispatch row, milliseconds; `None` if none.
    pub oldest_pending_ms: Option<i64>,
    pub pending: i64,
}

/// Readiness: 200 when the database answers, the relay holds a broker
/// connection and no dispatch row has been pending longer than
/// `PENDING_AGE_THRESHOLD_MS`; otherwise 503 with code 1011 naming the failing
/// parts. Reruns are accepted either way.
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let outbox = state.outbox_backlog().await;
    let readiness = Readiness {
        database: outbox.is_ok(),
        broker: state.relay_status.broker_connected(),
        oldest_pending_ms: outbox.as_ref().ok().and_then(|b| b.oldest_ms),
        pending: outbox.as_ref().map(|b| b.pending).unwrap_or(0),
    };
    let threshold = state.config.pending_age_threshold.as_millis() as i64;
    let mut failing = Vec::new();
    if !readiness.database {
        failing.push("database");
    }
    if !readiness.broker {
        failing.push("broker");
    }
    if readiness
        .oldest_pending_ms
        .is_some_and(|age| age > threshold)
    {
        failing.push("outbox backlog");
    }
    if failing.is_empty() {
        return HttpResponse::Ok().json(Envelope::success(readiness));
    }
    let message = format!("Service unavailable: {}", failing.join(", "));
    log::warn!("readiness failing: {message}");
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", crate::error::RETRY_AFTER_SECS.to_string()))
        .json(Envelope {
            data: Some(readiness),
            result: ApiResult {
                code: 1011,
                message,
            },
        })
}
