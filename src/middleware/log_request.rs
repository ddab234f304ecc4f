//! The access log: one line per answered request.

use crate::app::{RequestFacts, RequestId};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::HttpMessage;
use std::time::Instant;

/// Writes one log line per request: method, path, status, latency in ms,
/// `request_id`, and `user`/`plan` when the handler learned them
/// ([`RequestFacts`]).
pub async fn log_request(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = request.method().to_string();
    let path = request.path().to_owned();
    let response = next.call(request).await?;
    let status = response.status().as_u16();
    let extensions = response.request().extensions();
    let request_id = extensions.get::<RequestId>().map_or("-", |r| r.0.as_str());
    let (user, plan) = extensions
        .get::<RequestFacts>()
        .map_or(("-".to_owned(), "-".to_owned()), |f| {
            (f.user_id.to_string(), f.plan_id.to_string())
        });
    log::info!(
        "{method} {path} {status} {:.1}ms request_id={request_id} user={user} plan={plan}",
        started.elapsed().as_secs_f64() * 1000.0
    );
    drop(extensions);
    Ok(response)
}
