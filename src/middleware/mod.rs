//! Cross-cutting HTTP concerns, one file each, wrapped around every route by
//! `crate::startup` (outermost first): [`request_id`], [`log_request`],
//! [`update_metrics`], [`limit_headers`], and [`library_routes`] around the
//! routes the Swagger UI library mounts.

mod library_routes;
mod limit_headers;
mod log_request;
mod request_id;
mod update_metrics;

pub use library_routes::{library_routes, DOCS_PATH, OPENAPI_PATH};
pub use limit_headers::limit_headers;
pub use log_request::log_request;
pub use request_id::{request_id, REQUEST_ID};
pub use update_metrics::update_metrics;
