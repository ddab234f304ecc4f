//! `GET /metrics`: Prometheus text format (see `crate::metrics` for the list).

use crate::app::AppState;
use crate::error::ApiError;
use actix_web::{web, HttpResponse};

/// Refreshes the gauges read at scrape time (outbox backlog, pool usage,
/// broker connection) and answers every metric in the Prometheus text
/// format. An unreachable database leaves the outbox gauges at their last
/// value; the scrape still succeeds.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4",
        content_type = "text/plain; version=0.0.4", body = String))
)]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let metrics = &state.metrics;
    match state.outbox_backlog().await {
        Ok(backlog) => {
            metrics.dispatch_pending.set(backlog.pending);
            metrics
                .dispatch_oldest_age
                .set(backlog.oldest_ms.unwrap_or(0) as f64 / 1000.0);
        }
        Err(e) => log::warn!("metrics: outbox backlog unknown: {e}"),
    }
    let usage = state.db.usage();
    metrics.db_pool_in_use.set(i64::from(usage.in_use));
    metrics.db_pool_waiting.set(usage.waiting as i64);
    metrics
        .broker_connected
        .set(i64::from(state.relay_status.broker_connected()));
    metrics
        .broker_blocked
        .set(i64::from(state.relay_status.broker_blocked().is_some()));
    metrics.set_topology_conflicts(&state.relay_status.conflicts());
    metrics.set_broker_nodes(&[
        ("relay", state.relay_status.broker_node()),
        ("results", state.results_status.broker_node()),
    ]);
    Ok(HttpResponse::Ok()
        .content_type(prometheus::TEXT_FORMAT)
        .body(metrics.render()?))
}
