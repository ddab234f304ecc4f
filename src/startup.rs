//! Wiring: the route table, the shared state, the relay task and the server.

use crate::auth::TokenVerifier;
use crate::config::Config;
use crate::db::{build_pool, build_relay_pool, Db};
use crate::relay::{Relay, RelayStatus};
use crate::routes;
use crate::service::RerunService;
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{from_fn, Logger, Next};
use actix_web::{web, App, HttpMessage, HttpServer};
use anyhow::Context;
use diesel::prelude::*;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Request header and response header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";
/// Time in-flight requests get to finish after SIGTERM, seconds.
const SHUTDOWN_TIMEOUT_SECS: u64 = 4;
/// Time the relay gets after the server stopped: its batch in flight and one
/// last round (each bounded by `PUBLISH_TIMEOUT_MS`), seconds. With the
/// server's 4 s, the process exits within 10 s of SIGTERM.
const RELAY_STOP_TIMEOUT_SECS: u64 = 5;
/// Connections of the relay's own pool.
const RELAY_POOL_SIZE: u32 = 2;

/// The request id of the current request (from `X-Request-Id` or generated).
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// State shared by all handlers.
pub struct AppState {
    pub config: Arc<Config>,
    pub verifier: TokenVerifier,
    pub service: RerunService,
    pub db: Db,
    pub relay_status: Arc<RelayStatus>,
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
        let secret = config.require_jwt_secret()?;
        let verifier = TokenVerifier::hs256(secret, config.jwt_leeway_secs);
        let db = Db::new(
            build_pool(
                &config.database_url,
                config.db_pool_size,
                config.db_checkout_timeout,
            ),
            config.db_checkout_timeout,
        );
        let wakeup = Arc::new(Notify::new());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let relay_status = Arc::new(RelayStatus::default());
        let relay = Relay::new(
            config.clone(),
            build_relay_pool(
                &config.database_url,
                RELAY_POOL_SIZE,
                config.db_checkout_timeout,
            ),
            wakeup.clone(),
            shutdown_rx,
            relay_status.clone(),
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
        });
        let listener = TcpListener::bind(&config.bind_addr)
            .with_context(|| format!("cannot listen on {} (BIND_ADDR)", config.bind_addr))?;
        let port = listener.local_addr()?.port();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(Logger::new(
                    r#"%a "%r" %s %b %Dms request_id=%{x-request-id}o"#,
                ))
                .wrap(from_fn(request_id))
                .configure(routes_table)
        })
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

/// The route table.
fn routes_table(cfg: &mut web::ServiceConfig) {
    for path in ["/queue/rerun", "/queue"] {
        cfg.service(
            web::resource(path)
                .route(web::post().to(routes::rerun))
                .default_service(web::to(routes::method_not_allowed)),
        );
    }
    cfg.route("/health", web::get().to(routes::health))
        .route("/health/live", web::get().to(routes::live))
        .route("/health/ready", web::get().to(routes::ready))
        .default_service(web::to(routes::not_found));
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
