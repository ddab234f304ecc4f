//! Probes: `GET /health` (contract: 200 once requests are accepted),
//! `GET /health/live` and `GET /health/ready`.

use crate::amqp::TopologyConflict;
use crate::app::AppState;
use crate::error::{ApiResult, Envelope};
use actix_web::{web, HttpResponse};
use serde::Serialize;

/// `{"status": "UP"}`: the data of `/health` and `/health/live`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Status {
    /// Always `UP`.
    #[schema(example = "UP")]
    status: &'static str,
}

/// 200 `{"data": {"status": "UP"}, …}` once the server accepts requests
/// (contract, section 4).
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    responses((status = 200, description = "The server accepts requests", body = Envelope<Status>))
)]
pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(Envelope::success(Status { status: "UP" }))
}

/// Liveness: the process answers. Same body as `/health`.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "operations",
    responses((status = 200, description = "The process is up", body = Envelope<Status>))
)]
pub async fn live() -> HttpResponse {
    health().await
}

/// The parts readiness looks at.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    /// The database answered.
    pub database: bool,
    /// The database accepts writes: the service's session is not read-only
    /// and the server is not a standby (false when it did not answer).
    pub writable: bool,
    /// The relay holds a RabbitMQ connection.
    pub broker: bool,
    /// The RabbitMQ node (`host:port`) the relay is connected to, one of
    /// `AMQP_URL`'s; `None` while it has no connection.
    #[schema(example = "rabbit-1:5672")]
    pub broker_node: Option<String>,
    /// The RabbitMQ node (`host:port`) the results consumer is connected
    /// to; `None` while it has no connection.
    #[schema(example = "rabbit-2:5672")]
    pub results_broker_node: Option<String>,
    /// The broker's reason while it blocks the relay's connection (flow
    /// control: a memory or disk alarm), e.g. `low on memory`; `None` if not.
    pub broker_blocked: Option<String>,
    /// Parts of the topology the broker refused to declare as configured,
    /// with the routing keys they hold back; empty when none.
    pub topology_conflicts: Vec<TopologyConflict>,
    /// Age of the oldest unpublished dispatch row, milliseconds; `None` if none.
    pub oldest_pending_ms: Option<i64>,
    /// Unpublished dispatch rows.
    pub pending: i64,
}

impl Readiness {
    /// The failing parts, in the order the message names them; empty when
    /// ready. `threshold_ms` is `PENDING_AGE_THRESHOLD_MS`.
    fn failing(&self, threshold_ms: i64) -> Vec<String> {
        let mut failing = Vec::new();
        if !self.database {
            failing.push("database".to_owned());
        } else if !self.writable {
            failing.push("database read-only".to_owned());
        }
        if !self.broker {
            failing.push("broker".to_owned());
        } else if self.broker_blocked.is_some() {
            failing.push("broker blocked".to_owned());
        }
        for conflict in &self.topology_conflicts {
            failing.push(format!(
                "{} {} conflicts on {}",
                conflict.kind, conflict.name, conflict.argument
            ));
        }
        if self.oldest_pending_ms.is_some_and(|age| age > threshold_ms) {
            failing.push("outbox backlog".to_owned());
        }
        failing
    }
}

/// Readiness: 200 when the database answers and accepts writes, the relay
/// holds a broker connection the broker does not block, the whole topology
/// is declared as configured and no dispatch row has been pending longer
/// than `PENDING_AGE_THRESHOLD_MS`; otherwise 503 with code 1011 naming the
/// failing parts (`queue <name> conflicts on <argument>` for a topology
/// conflict). Reruns are accepted either way (and answer 503 code 1011
/// themselves while the database is read-only).
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "operations",
    responses(
        (status = 200, description = "Database reachable, broker connected, outbox not behind",
            body = Envelope<Readiness>),
        (status = 503, description = "Code 1011; the message names the failing parts \
            (`database`, `database read-only`, `broker`, `broker blocked`, \
            `<kind> <name> conflicts on <argument>`, `outbox backlog`)", body = Envelope<Readiness>,
            headers(("Retry-After" = String, description = "Seconds to wait")))
    )
)]
pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let (outbox, writable) = tokio::join!(state.outbox_backlog(), state.db.writable());
    let readiness = Readiness {
        database: outbox.is_ok() && writable.is_ok(),
        writable: writable.unwrap_or(false),
        broker: state.relay_status.broker_connected(),
        broker_node: state.relay_status.broker_node(),
        results_broker_node: state.results_status.broker_node(),
        broker_blocked: state.relay_status.broker_blocked(),
        topology_conflicts: state.relay_status.conflicts(),
        oldest_pending_ms: outbox.as_ref().ok().and_then(|b| b.oldest_ms),
        pending: outbox.as_ref().map(|b| b.pending).unwrap_or(0),
    };
    let failing = readiness.failing(state.config.relay.pending_age_threshold.as_millis() as i64);
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
