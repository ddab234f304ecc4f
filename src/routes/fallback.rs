//! Answers for paths and methods the API does not serve, in the envelope.

use crate::error::ApiError;
use actix_web::{HttpRequest, HttpResponse};

/// 404 code 1001 for any unknown path.
pub async fn not_found(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(request.path().to_owned()))
}

/// 405 code 1001 for a method a known resource does not serve; `allow` is
/// the `Allow` header, the methods it does serve (e.g. `POST`, `GET, HEAD`).
pub async fn method_not_allowed(
    request: HttpRequest,
    allow: &'static str,
) -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed {
        method: request.method().to_string(),
        allow,
    })
}
