//! The catalogue over HTTP (contract, section 20): `PUT` and `GET
//! /catalog/{kind}/{id}`, `POST /catalog/import`.
//!
//! Checks in order: an unknown `{kind}` or an id that is not a positive
//! integer is an unknown route (404 code 1001); then the token (401 code
//! 1009) and `CATALOG_WRITE` (403 code 1010); then the headers and the body
//! (415, 413, 408, 400 code 1001), then the write (400 code 1001, 412 code
//! 1021). Answers of `GET` and `PUT` carry `ETag: "<version>"`.

use super::executions::{known_tags, path_id};
use super::queue::{check_content_type, read_body};
use crate::app::AppState;
use crate::error::{ApiError, Envelope};
use crate::service::catalog::{Kind, Stored};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};

/// Path of one catalogue entity.
pub const ENTITY_PATH: &str = "/catalog/{kind}/{id}";
/// Path of the catalogue import.
pub const IMPORT_PATH: &str = "/catalog/import";

/// The kind of the path (404 code 1001 for another word).
fn path_kind(request: &HttpRequest) -> Result<Kind, ApiError> {
    request
        .match_info()
        .get("kind")
        .and_then(Kind::from_path)
        .ok_or_else(|| ApiError::NotFound(request.path().to_owned()))
}

/// The token's check: 401 code 1009, 403 code 1010 without `CATALOG_WRITE`.
fn authorize(request: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    state
        .verifier
        .authenticate(request.headers())?
        .authorize_catalog()
}

/// The version `If-Match` expects: a positive integer, bare or in double
/// quotes (section 20); `None` without the header.
///
/// Errors: 400 code 1001 for any other value.
fn if_match(request: &HttpRequest) -> Result<Option<i64>, ApiError> {
    let Some(value) = request.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    let bare = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    match bare.parse::<i64>() {
        Ok(version) if version > 0 => Ok(Some(version)),
        _ => Err(ApiError::InvalidRequest(format!(
            "If-Match must be a version (a positive integer, bare or in double quotes), got `{text}`"
        ))),
    }
}

/// 200 with the stored entity and its version as the `ETag`.
fn answer(stored: &Stored) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::ETAG, format!("\"{}\"", stored.version)))
        .json(Envelope::success(stored.to_json()))
}

/// Creates or replaces one catalogue entity.
#[utoipa::path(
    put,
    path = "/catalog/{kind}/{id}",
    tag = "catalog",
    operation_id = "putCatalogEntity",
    summary = "Create or replace a user, project, scenario, environment or plan",
    description = "The body is the entity's fixture row (contract, section 5) without `id`, \
with `active` (default true; `false` retires it: nothing is ever deleted) and, for plans, \
`frameworkType`, `runTimeoutSecs` (5-604800). Lists (`memberIds`, `scenarioIds`, \
`environmentIds`) are sets, answered in id order. The answer is the entity as stored with `id` \
and `version` (1 when created, one more with each change; a PUT that changes nothing keeps it), \
and `ETag: \"<version>\"`. An environment's `version` is its platform's (`\"14\"`): its \
catalogue version is the `ETag`. `If-Match: <version>` (bare or quoted) makes the write \
conditional: a stale one is 412 code 1021 and nothing changes. A reference to an unknown \
entity, or a plan's scenario of another project, is 400 code 1001 naming it. A retired user \
is 1002 for runs and reruns, a retired plan 1000; a retired scenario or environment is not run \
and naming it in a rerun is 1019. Needs `CATALOG_WRITE`.",
    params(
        ("kind" = String, Path, description = "`users`, `projects`, `scenarios`, `environments` or `plans`",
            example = "plans"),
        ("id" = i64, Path, minimum = 1, example = 614, description = "The entity's id (the platform's)"),
        ("If-Match" = Option<String>, Header, description = "The version the write expects, bare or quoted",
            example = "\"3\"")
    ),
    request_body(content = Object, description = "The fixture row without `id`",
        example = json!({"projectId": 7, "name": "Checkout smoke", "frameworkType": "APPIUM",
            "runTimeoutSecs": 1800, "scenarioIds": [111, 112], "environmentIds": [222, 223],
            "active": true})),
    responses(
        (status = 200, description = "The entity as stored; `ETag` is its version",
            headers(("ETag" = String, description = "The version in double quotes")),
            example = json!({"data": {"id": 614, "projectId": 7, "name": "Checkout smoke",
                "frameworkType": "APPIUM", "runTimeoutSecs": 1800, "scenarioIds": [111, 112],
                "environmentIds": [222, 223], "active": true, "version": 4},
                "result": {"code": 0, "message": "success"}}))
    ),
    security(("bearer" = []))
)]
pub async fn put_entity(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let kind = path_kind(&request)?;
    let id = path_id(&request, "id")?.get();
    authorize(&request, &state)?;
    let expected = if_match(&request)?;
    check_content_type(&request)?;
    let http = &state.config.http;
    let body = read_body(payload, &request, http.body_limit, http.body_read_timeout).await?;
    let body = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidRequest(format!("the body is not JSON: {e}")))?;
    let stored = state.catalog.put(kind, id, body, expected).await?;
    Ok(answer(&stored))
}

/// Reads one catalogue entity back.
#[utoipa::path(
    get,
    path = "/catalog/{kind}/{id}",
    tag = "catalog",
    operation_id = "getCatalogEntity",
    summary = "Read a user, project, scenario, environment or plan back",
    description = "The entity as `PUT` answered it, with `ETag: \"<version>\"`; one never \
written is 404 code 1001. Needs `CATALOG_WRITE`.",
    params(
        ("kind" = String, Path, description = "`users`, `projects`, `scenarios`, `environments` or `plans`",
            example = "environments"),
        ("id" = i64, Path, minimum = 1, example = 222, description = "The entity's id")
    ),
    responses(
        (status = 200, description = "The entity as stored",
            headers(("ETag" = String, description = "The version in double quotes")),
            example = json!({"data": {"id": 222, "name": "Pixel 8", "platform": "ANDROID",
                "version": "14", "active": false},
                "result": {"code": 0, "message": "success"}}))
    ),
    security(("bearer" = []))
)]
pub async fn get_entity(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let kind = path_kind(&request)?;
    let id = path_id(&request, "id")?.get();
    authorize(&request, &state)?;
    let stored = state.catalog.get(kind, id).await?;
    if known_tags(&request).includes(&stored.version.to_string()) {
        // contract, section 22: the tag is still current
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, format!("\"{}\"", stored.version)))
            .finish());
    }
    Ok(answer(&stored))
}

/// Applies a whole catalogue in one transaction.
#[utoipa::path(
    post,
    path = "/catalog/import",
    tag = "catalog",
    operation_id = "importCatalog",
    summary = "Apply a whole catalogue (the fixture format without executions), all or nothing",
    description = "`users`, `projects`, `scenarios`, `environments` and `plans` as in the \
fixture format (contract, section 5), each row as `PUT /catalog/{kind}/{id}` takes it with its \
`id`; applied in one transaction with the rules of `PUT` (the first refusal, naming the entity \
and the id, writes nothing). `executions` are refused (1001): `plan-queue seed --file` loads \
them, with the same rules for the rest. `data` is the number of entities written per kind. \
Needs `CATALOG_WRITE`.",
    request_body(content = Object, description = "The catalogue",
        example = json!({"users": [{"id": 13, "username": "ayse.qa"}],
            "projects": [{"id": 7, "name": "Shop mobile app", "memberIds": [13]}],
            "scenarios": [{"id": 111, "projectId": 7, "name": "Login with valid credentials"}],
            "environments": [{"id": 222, "name": "Pixel 8", "platform": "ANDROID", "version": "14"}],
            "plans": [{"id": 614, "projectId": 7, "name": "Checkout smoke",
                "frameworkType": "APPIUM", "scenarioIds": [111], "environmentIds": [222]}]})),
    responses(
        (status = 200, description = "Entities written per kind",
            example = json!({"data": {"users": 1, "projects": 1, "scenarios": 1,
                "environments": 1, "plans": 1}, "result": {"code": 0, "message": "success"}}))
    ),
    security(("bearer" = []))
)]
pub async fn import(
    request: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    authorize(&request, &state)?;
    check_content_type(&request)?;
    let http = &state.config.http;
    let body = read_body(payload, &request, http.body_limit, http.body_read_timeout).await?;
    let counts = state.catalog.import(&body).await?;
    Ok(HttpResponse::Ok().json(Envelope::success(counts)))
}
