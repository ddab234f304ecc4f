//! HTTP request metrics: `plan_queue_http_requests_total` and
//! `plan_queue_http_request_duration_seconds` (see `crate::metrics`).

use crate::app::AppState;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use std::time::Instant;

/// Counts every answered request by method, route pattern (`unmatched` for
/// unknown paths) and status, with its latency in seconds. A method outside
/// RFC 9110's list is labelled `OTHER`: a label per made-up method would let
/// any client grow `/metrics` without bound.
pub async fn update_metrics(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = match request.method().as_str() {
        known @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS" | "CONNECT"
        | "TRACE") => known.to_owned(),
        _ => "OTHER".to_owned(),
    };
    let state = request.app_data::<web::Data<AppState>>().cloned();
    let response = next.call(request).await?;
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    if let Some(state) = state {
        state.metrics.observe_request(
            &method,
            &route,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
    Ok(response)
}
