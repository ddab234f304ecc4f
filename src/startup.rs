//! Wiring: the route table, the shared state, the relay task and the server.

use crate::auth::TokenVerifier;
use crate::config::Config;
use crate::db::{build_pool, build_relay_pool, Db};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::openapi::{ApiDoc, DOCS_PATH, OPENAPI_PATH};
use crate::relay::{Relay, RelayStatus};
use crate::routes;
use crate::service::RerunService;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{from_fn, Next};
use actix_web::{
    guard, web, App, FromRequest, Handler, HttpMessage, HttpRequest, HttpResponse, HttpServer,
    Resource, Responder, ResponseError,
};
use anyhow::Context;
use diesel::prelude::*;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

/// Request header and response header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";
/// Time in-flight requests get to finish after SIGTERM, seconds.
const SHUTDOWN_TIMEOUT_SECS: u64 = 4;
/// Time the relay gets after the server stopped: its batch in flight and one
/// last round (each bounded by `PUBLISH_TIMEOUT_MS`), seconds. With the
/// server's 4 s, the process exits within 10 s of SIGTERM.
const RELAY_STOP_TIMEOUT_SECS: u64 = 5;
/// Idle time before a keep-alive connection is closed, seconds.
const KEEP_ALIVE_SECS: u64 = 5;
/// Time a client gets to acknowledge the closing of its connection, seconds.
const CLIENT_DISCONNECT_TIMEOUT_SECS: u64 = 1;
/// Connections of the relay's own pool.
const RELAY_POOL_SIZE: u32 = 2;

/// The request id of the current request (from `X-Request-Id` or generated).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// What a handler learned about its request, for the request's log line.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts {
    pub plan_id: i64,
    pub user_id: i64,
}

/// State shared by all handlers.
pub struct AppState {
    pub config: Arc<Config>,
    pub verifier: TokenVerifier,
    pub service: RerunService,
    pub db: Db,
    pub relay_status: Arc<RelayStatus>,
    pub metrics: Arc<Metrics>,
}

/// Unpublished dispatch rows: how many, and the age of the oldest in ms.
pub struct OutboxBacklog {
    pub pending: i64,
    pub oldest_ms: Option<i64>,
}

impl AppState {
    /// Counts pending dispatch rows; an error means the database is unreachable.
    pub async fn outbox_backlog(&self) -> Result<OutboxBacklog, crate::error::ApiError> {
        self.db
            .run(|conn| {
                #[derive(QueryableByName)]
                struct Row {
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    pending: i64,
                    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
                    oldest_ms: Option<i64>,
                }
                let row: Row = diesel::sql_query(
                    "SELECT count(*) AS pending, \
                            (extract(epoch FROM now() - min(created_at)) * 1000)::bigint AS oldest_ms \
                       FROM dispatches WHERE published_at IS NULL",
                )
                .get_result(conn)?;
                Ok(OutboxBacklog {
                    pending: row.pending,
                    oldest_ms: row.oldest_ms,
                })
            })
            .await
    }
}

/// A built service: the bound HTTP server and its relay, not yet running.
pub struct Application {
    port: u16,
    server: Server,
    relay: Relay,
    shutdown: watch::Sender<bool>,
    db: Db,
    retention: Duration,
}

impl Application {
    /// Binds `config.bind_addr` (port 0 picks a free port) and wires the
    /// service. Does not touch the database or the broker yet: the database
    /// must be migrated (`db::migrate`) and the relay connects on its own.
    /// `handle_signals`: stop gracefully on SIGTERM/SIGINT (off in tests).
    pub fn build(config: Config, handle_signals: bool) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        let verifier = TokenVerifier::from_config(&config)?;
        log::info!(
            "bearer tokens: {:?} only{}{}",
            verifier.algorithm(),
            config
                .jwt_issuer
                .as_ref()
                .map_or(String::new(), |i| format!(", iss {i}")),
            config
                .jwt_audience
                .as_ref()
                .map_or(String::new(), |a| format!(", aud {a}"))
        );
        let db = Db::new(
            build_pool(
                &config.database_url,
                config.db_pool_size,
                config.db_checkout_timeout,
                config.db_max_lifetime,
            ),
            config.db_checkout_timeout,
        );
        let wakeup = Arc::new(Notify::new());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let relay_status = Arc::new(RelayStatus::default());
        let metrics = Arc::new(Metrics::new()?);
        let relay = Relay::new(
            config.clone(),
            build_relay_pool(
                &config.database_url,
                RELAY_POOL_SIZE,
                config.db_checkout_timeout,
                config.db_max_lifetime,
            ),
            wakeup.clone(),
            shutdown_rx,
            relay_status.clone(),
            metrics.clone(),
        );
        let state = web::Data::new(AppState {
            service: RerunService::new(
                db.clone(),
                wakeup,
                config.max_pairs,
                config.idempotency_retention,
            ),
            config: config.clone(),
            verifier,
            db: db.clone(),
            relay_status,
            metrics,
        });
        let openapi = ApiDoc::openapi();
        let listener = TcpListener::bind(&config.bind_addr)
            .with_context(|| format!("cannot listen on {} (BIND_ADDR)", config.bind_addr))?;
        let port = listener.local_addr()?.port();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(limit_headers))
                .wrap(from_fn(observe))
                .wrap(from_fn(request_id))
                .service(
                    SwaggerUi::new(format!("{DOCS_PATH}/{{_:.*}}"))
                        .url(OPENAPI_PATH, openapi.clone()),
                )
                .configure(routes_table)
        })
        .client_request_timeout(config.header_read_timeout)
        .client_disconnect_timeout(Duration::from_secs(CLIENT_DISCONNECT_TIMEOUT_SECS))
        .keep_alive(Duration::from_secs(KEEP_ALIVE_SECS))
        .max_connections(config.max_connections)
        .listen(listener)?
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS);
        if !handle_signals {
            server = server.disable_signals();
        }
        Ok(Application {
            port,
            server: server.run(),
            relay,
            shutdown,
            db,
            retention: config.idempotency_retention,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that stops the server (and with it the relay).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until stopped; then stops the relay after its batch in flight.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let relay = tokio::spawn(self.relay.run());
        let cleanup = tokio::spawn(clean_idempotency_keys(
            self.db,
            self.retention,
            self.shutdown.subscribe(),
        ));
        let served = self.server.await;
        let _ = self.shutdown.send(true);
        if tokio::time::timeout(Duration::from_secs(RELAY_STOP_TIMEOUT_SECS), relay)
            .await
            .is_err()
        {
            log::warn!("relay did not stop in time");
        }
        cleanup.abort();
        served.context("HTTP server failed")
    }
}

/// The route table. A known path asked with a method it does not serve is
/// 405 with `Allow`; an unknown path is 404.
fn routes_table(cfg: &mut web::ServiceConfig) {
    for path in ["/queue/rerun", "/queue"] {
        cfg.service(
            web::resource(path)
                .route(web::post().to(routes::rerun))
                .default_service(web::to(|r: HttpRequest| {
                    routes::method_not_allowed(r, "POST")
                })),
        );
    }
    cfg.service(get_resource("/health", routes::health))
        .service(get_resource("/health/live", routes::live))
        .service(get_resource("/health/ready", routes::ready))
        .service(get_resource("/metrics", routes::metrics))
        .service(get_resource(DOCS_PATH, docs_redirect))
        .default_service(web::to(routes::not_found));
}

/// A resource served by `handler` for GET and HEAD (HEAD without the body),
/// 405 `Allow: GET, HEAD` for any other method.
fn get_resource<F, Args>(path: &str, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    web::resource(path)
        .route(
            web::route()
                .guard(guard::Any(guard::Get()).or(guard::Head()))
                .to(handler),
        )
        .default_service(web::to(|r: HttpRequest| {
            routes::method_not_allowed(r, "GET, HEAD")
        }))
}

/// Takes `X-Request-Id` (1–128 visible ASCII characters) or makes one, and
/// echoes it on the response.
async fn request_id(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.call(request).await?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID), value);
    }
    Ok(response)
}

/// `/docs` → `/docs/`: Swagger UI loads its assets relative to the page.
async fn docs_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header(("Location", format!("{DOCS_PATH}/")))
        .finish()
}

/// Counts every answered request in the metrics (by method, route pattern
/// and status, with its latency) and writes one log line per request:
/// method, path, status, latency, `request_id`, and `user`/`plan` when the
/// handler learned them ([`RequestFacts`]).
async fn observe(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = request.method().to_string();
    // a label per made-up method would let any client grow /metrics without bound
    let method_label = match request.method().as_str() {
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS" | "CONNECT" | "TRACE" => {
            method.clone()
        }
        _ => "OTHER".to_owned(),
    };
    let path = request.path().to_owned();
    let state = request.app_data::<web::Data<AppState>>().cloned();
    let response = next.call(request).await?;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    if let Some(state) = state {
        state
            .metrics
            .observe_request(&method_label, &route, status, elapsed.as_secs_f64());
    }
    let extensions = response.request().extensions();
    let request_id = extensions.get::<RequestId>().map_or("-", |r| r.0.as_str());
    let (user, plan) = extensions
        .get::<RequestFacts>()
        .map_or(("-".to_owned(), "-".to_owned()), |f| {
            (f.user_id.to_string(), f.plan_id.to_string())
        });
    log::info!(
        "{method} {path} {status} {:.1}ms request_id={request_id} user={user} plan={plan}",
        elapsed.as_secs_f64() * 1000.0
    );
    drop(extensions);
    Ok(response)
}

/// 431 code 1001 when the header names and values together exceed
/// `HEADER_LIMIT_BYTES`, before any other check (actix itself refuses heads
/// over 128 KiB or 96 headers with a bare 431).
async fn limit_headers(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let limit = request
        .app_data::<web::Data<AppState>>()
        .map_or(usize::MAX, |state| state.config.header_limit);
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

/// Deletes Idempotency-Keys older than `retention`, hourly.
async fn clean_idempotency_keys(db: Db, retention: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.changed() => return,
        }
        match delete_expired_idempotency_keys(&db, retention).await {
            Ok(n) if n > 0 => log::info!("deleted {n} expired Idempotency-Keys"),
            Ok(_) => {}
            Err(e) => log::warn!("cleaning Idempotency-Keys failed: {e}"),
        }
    }
}

/// Deletes the Idempotency-Keys first used more than `retention` ago; returns
/// how many. Errors: 1011 when the database is unavailable.
pub async fn delete_expired_idempotency_keys(
    db: &Db,
    retention: Duration,
) -> Result<usize, crate::error::ApiError> {
    let secs = retention.as_secs_f64();
    db.run(move |conn| {
        diesel::sql_query(
            "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
        )
        .bind::<diesel::sql_types::Double, _>(secs)
        .execute(conn)
        .map_err(crate::error::ApiError::from)
    })
    .await
}
