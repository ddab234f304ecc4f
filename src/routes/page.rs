//! The page for testers (`GET /`) and its assets (`GET /ui/{asset}`), HEAD
//! too; other methods are 405 and an unknown asset 404 code 1001, as for
//! every route of the API. See `crate::page`.

use crate::error::ApiError;
use crate::page::{self, CONTENT_SECURITY_POLICY};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

/// Path of the page.
pub const PAGE_PATH: &str = "/";
/// Path of the page's assets.
pub const ASSET_PATH: &str = "/ui/{asset}";

/// `body` as `content_type`, revalidated on every load (the binary, not a
/// cache, decides what the page is), under the page's security policy.
fn static_answer(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}

/// The page (HTML).
pub async fn index() -> HttpResponse {
    static_answer("text/html; charset=utf-8", page::INDEX_HTML)
}

/// An asset of the page; 404 code 1001 for a name the page does not have.
pub async fn asset(request: HttpRequest) -> Result<HttpResponse, ApiError> {
    let found = request
        .match_info()
        .get("asset")
        .and_then(page::asset)
        .ok_or_else(|| ApiError::NotFound(request.path().to_owned()))?;
    Ok(static_answer(found.content_type, found.body))
}
