//! The routes a library mounts (the Swagger UI under `/docs/` and the
//! OpenAPI document at `/openapi.json`) answered like the API's own: HEAD as
//! GET without the body, and any other method 405 code 1001 with
//! `Allow: GET, HEAD` (issue 17: they answered 404, and HEAD 404 too).

use crate::error::ApiError;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::ResponseError;

/// Path of the OpenAPI document.
pub const OPENAPI_PATH: &str = "/openapi.json";
/// Path of the interactive reference (Swagger UI); the library serves what
/// is below it.
pub const DOCS_PATH: &str = "/docs";

/// The paths the Swagger UI library serves: the OpenAPI document and
/// everything below `/docs/`.
fn mounted_by_library(path: &str) -> bool {
    path == OPENAPI_PATH
        || path
            .strip_prefix(DOCS_PATH)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Passes API routes through; for a library route, turns HEAD into GET and
/// drops the body of the answer, and answers other methods but GET with
/// 405 `Allow: GET, HEAD` in the envelope.
pub async fn library_routes(
    mut request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if !mounted_by_library(request.path()) {
        return Ok(next.call(request).await?.map_into_left_body());
    }
    let method = request.method().clone();
    if method == Method::HEAD {
        request.head_mut().method = Method::GET;
        let response = next.call(request).await?;
        return Ok(response
            .map_body(|_, _| actix_web::body::None::new())
            .map_into_boxed_body()
            .map_into_right_body());
    }
    if method != Method::GET {
        let refusal = ApiError::MethodNotAllowed {
            method: method.to_string(),
            allow: "GET, HEAD",
        }
        .error_response();
        return Ok(request
            .into_response(refusal)
            .map_into_boxed_body()
            .map_into_right_body());
    }
    Ok(next.call(request).await?.map_into_left_body())
}
