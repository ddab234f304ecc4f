//! The header size limit, `HEADER_LIMIT_BYTES`.

use crate::app::AppState;
use crate::error::ApiError;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};

/// 431 code 1001 when the header names and values together exceed
/// `HEADER_LIMIT_BYTES`, before any other check (actix itself refuses heads
/// over 128 KiB or 96 headers with a bare 431).
pub async fn limit_headers(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let limit = request
        .app_data::<web::Data<AppState>>()
        .map_or(usize::MAX, |state| state.config.http.header_limit);
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if size > limit {
        let response = ApiError::HeadersTooLarge(limit).error_response();
        return Ok(request.into_response(response).map_into_right_body());
    }
    Ok(next.call(request).await?.map_into_left_body())
}
