//! Wiring: the route table and [`Application`], which builds the shared
//! state, the HTTP server and the background tasks (relay, Idempotency-Key
//! expiry) and runs them. The state lives in `crate::app`, the middleware in
//! `crate::middleware`; this file runs no SQL.

use crate::amqp::BrokerStatus;
use crate::app::AppState;
use crate::auth::TokenVerifier;
use crate::config::Config;
use crate::db::{build_pool, build_relay_pool, Db};
use crate::idempotency;
use crate::metrics::Metrics;
use crate::middleware::{library_routes, limit_headers, log_request, request_id, update_metrics};
use crate::openapi::{ApiDoc, DOCS_PATH, OPENAPI_PATH};
use crate::relay::upkeep::{self, OutboxGate};
use crate::relay::{Relay, RelayStatus};
use crate::results::ResultsConsumer;
use crate::routes;
use crate::service::{QueueService, ReadService};
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{
    guard, web, App, FromRequest, Handler, HttpRequest, HttpResponse, HttpServer, Resource,
    Responder,
};
use anyhow::Context;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

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
/// Connections of the outbox upkeep (backlog count, retention).
const UPKEEP_POOL_SIZE: u32 = 1;
/// Connections of the deadline sweep's and the dead-letter watch's own pools.
const SWEEP_POOL_SIZE: u32 = 1;
/// Connections of the results consumer's own pool (one batch at a time, and
/// one to tell a refused result from a lost database).
const RESULTS_POOL_SIZE: u32 = 2;

/// A built service: the bound HTTP server and its relay, not yet running.
pub struct Application {
    port: u16,
    server: Server,
    relay: Relay,
    results: ResultsConsumer,
    deadlines: crate::deadlines::DeadlineSweep,
    dead_letters: crate::deadletter::DeadLetterWatch,
    /// The callback deliverer (section 21), when `CALLBACK_ALLOWED_HOSTS`
    /// names any host.
    callbacks: Option<crate::callbacks::deliver::Deliverer>,
    shutdown: watch::Sender<bool>,
    db: Db,
    retention: Duration,
    upkeep: Upkeep,
}

/// The outbox's upkeep tasks and what they need.
struct Upkeep {
    db: Db,
    gate: Arc<OutboxGate>,
    retention: Duration,
}

impl Application {
    /// Binds `BIND_ADDR` (port 0 picks a free port) and wires the
    /// service. Does not touch the database or the broker yet: the database
    /// must be migrated (`db::migrate`) and the relay connects on its own.
    /// `handle_signals`: stop gracefully on SIGTERM/SIGINT (off in tests).
    pub fn build(config: Config, handle_signals: bool) -> anyhow::Result<Self> {
        let config = Arc::new(config);
        let verifier = TokenVerifier::from_config(&config.tokens)?;
        log::info!(
            "bearer tokens: {:?} only{}{}",
            verifier.algorithm(),
            config
                .tokens
                .issuer
                .as_ref()
                .map_or(String::new(), |i| format!(", iss {i}")),
            config
                .tokens
                .audience
                .as_ref()
                .map_or(String::new(), |a| format!(", aud {a}"))
        );
        let database = &config.database;
        let db = Db::new(
            build_pool(
                &database.url,
                database.pool_size,
                database.checkout_timeout,
                database.max_lifetime,
            ),
            database.checkout_timeout,
        );
        let wakeup = Arc::new(Notify::new());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let relay_status = Arc::new(RelayStatus::default());
        let results_status = Arc::new(BrokerStatus::default());
        let outbox_gate = OutboxGate::new(config.relay.max_pending);
        let upkeep = Upkeep {
            db: Db::new(
                build_relay_pool(
                    &database.url,
                    UPKEEP_POOL_SIZE,
                    database.checkout_timeout,
                    database.max_lifetime,
                ),
                database.checkout_timeout,
            ),
            gate: outbox_gate.clone(),
            retention: config.relay.retention,
        };
        let metrics = Arc::new(Metrics::new()?);
        let relay = Relay::new(
            config.amqp.clone(),
            config.relay.clone(),
            build_relay_pool(
                &database.url,
                RELAY_POOL_SIZE,
                database.checkout_timeout,
                database.max_lifetime,
            ),
            wakeup.clone(),
            shutdown_rx.clone(),
            relay_status.clone(),
            metrics.clone(),
        );
        // an execution finished by a result, a deadline or a dead letter
        // queues its automatic rerun (contract, section 18)
        let retries = crate::results::apply::Retries::Queue {
            max_attempts: config.limits.max_attempts,
            // QUEUE_TIMEOUT_SECS is at most 2 592 000 (config checks it)
            queue_timeout_secs: i32::try_from(config.deadlines.queue_timeout_secs)
                .unwrap_or(i32::MAX),
        };
        let deadlines = crate::deadlines::DeadlineSweep::new(
            config.deadlines.clone(),
            build_pool(
                &database.url,
                SWEEP_POOL_SIZE,
                database.checkout_timeout,
                database.max_lifetime,
            ),
            &config.amqp.exchange,
            wakeup.clone(),
            metrics.clone(),
            shutdown_rx.clone(),
            retries,
        );
        let dead_letters = crate::deadletter::DeadLetterWatch::new(
            config.amqp.clone(),
            build_pool(
                &database.url,
                SWEEP_POOL_SIZE,
                database.checkout_timeout,
                database.max_lifetime,
            ),
            wakeup.clone(),
            shutdown_rx.clone(),
            metrics.clone(),
            retries,
        );
        let callback_hosts = crate::callbacks::AllowedHosts::parse(&config.callbacks.allowed_hosts)
            .map_err(|e| anyhow::anyhow!("CALLBACK_ALLOWED_HOSTS: {e}"))?;
        let callbacks = match config.callbacks.secret.as_deref() {
            Some(secret) if !callback_hosts.is_empty() => {
                Some(crate::callbacks::deliver::Deliverer::new(
                    Db::new(
                        build_relay_pool(
                            &database.url,
                            SWEEP_POOL_SIZE,
                            database.checkout_timeout,
                            database.max_lifetime,
                        ),
                        database.checkout_timeout,
                    ),
                    callback_hosts.clone(),
                    secret,
                    config.callbacks.retry_for(),
                    metrics.clone(),
                    shutdown_rx.clone(),
                )?)
            }
            _ => None,
        };
        let results = ResultsConsumer::new(
            config.amqp.clone(),
            config.results.clone(),
            build_pool(
                &database.url,
                RESULTS_POOL_SIZE,
                database.checkout_timeout,
                database.max_lifetime,
            ),
            wakeup.clone(),
            shutdown_rx,
            metrics.clone(),
            results_status.clone(),
            retries,
        );
        let state = web::Data::new(AppState {
            queue: QueueService::new(
                db.clone(),
                wakeup.clone(),
                config.limits.clone(),
                &config.amqp.framework_types,
                config.idempotency.retention,
                &config.amqp.exchange,
                config.deadlines.queue_timeout(),
            ),
            reads: ReadService::new(db.clone()),
            catalog: crate::service::catalog::CatalogService::new(db.clone()),
            cancels: crate::service::cancel::CancelService::new(
                db.clone(),
                &config.amqp.exchange,
                wakeup.clone(),
                metrics.clone(),
            ),
            config: config.clone(),
            verifier,
            db: db.clone(),
            relay_status,
            results_status,
            outbox_gate,
            metrics,
            callback_hosts,
        });
        let openapi = ApiDoc::openapi();
        let http = &config.http;
        let listener = TcpListener::bind(&http.bind_addr)
            .with_context(|| format!("cannot listen on {} (BIND_ADDR)", http.bind_addr))?;
        let port = listener.local_addr()?.port();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(from_fn(library_routes))
                .wrap(from_fn(limit_headers))
                .wrap(from_fn(update_metrics))
                .wrap(from_fn(log_request))
                .wrap(from_fn(request_id))
                .service(
                    SwaggerUi::new(format!("{DOCS_PATH}/{{_:.*}}"))
                        .url(OPENAPI_PATH, openapi.clone()),
                )
                .configure(routes_table)
        })
        .client_request_timeout(http.header_read_timeout)
        .client_disconnect_timeout(Duration::from_secs(CLIENT_DISCONNECT_TIMEOUT_SECS))
        .keep_alive(Duration::from_secs(KEEP_ALIVE_SECS))
        .max_connections(http.max_connections)
        .listen(listener)?
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS);
        if !handle_signals {
            server = server.disable_signals();
        }
        Ok(Application {
            port,
            server: server.run(),
            relay,
            results,
            deadlines,
            dead_letters,
            callbacks,
            shutdown,
            db,
            retention: config.idempotency.retention,
            upkeep,
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

    /// Serves until stopped; then stops the relay after its batch in flight
    /// and the results consumer after its batch in hand.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let relay = tokio::spawn(self.relay.run());
        let results = tokio::spawn(self.results.run());
        let deadlines = tokio::spawn(self.deadlines.run());
        let dead_letters = tokio::spawn(self.dead_letters.run());
        let callbacks = self
            .callbacks
            .map(|deliverer| tokio::spawn(deliverer.run()));
        let cleanup = tokio::spawn(idempotency::clean_expired_keys(
            self.db,
            self.retention,
            self.shutdown.subscribe(),
        ));
        let gate = tokio::spawn(
            self.upkeep
                .gate
                .watch(self.upkeep.db.clone(), self.shutdown.subscribe()),
        );
        let retention = tokio::spawn(upkeep::delete_published_rows(
            self.upkeep.db,
            self.upkeep.retention,
            self.shutdown.subscribe(),
        ));
        let served = self.server.await;
        let _ = self.shutdown.send(true);
        let stopped = async { tokio::join!(relay, results) };
        if tokio::time::timeout(Duration::from_secs(RELAY_STOP_TIMEOUT_SECS), stopped)
            .await
            .is_err()
        {
            log::warn!("relay or results consumer did not stop in time");
        }
        for task in [cleanup, gate, retention, deadlines, dead_letters]
            .into_iter()
            .chain(callbacks)
        {
            task.abort();
        }
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
    cfg.service(
        web::resource(routes::run::RUN_PATH)
            .route(web::post().to(routes::run))
            .default_service(web::to(|r: HttpRequest| {
                routes::method_not_allowed(r, "POST")
            })),
    );
    cfg.service(
        web::resource(routes::catalog::ENTITY_PATH)
            .route(
                web::route()
                    .guard(guard::Any(guard::Get()).or(guard::Head()))
                    .to(routes::catalog::get_entity),
            )
            .route(web::put().to(routes::catalog::put_entity))
            .default_service(web::to(|r: HttpRequest| {
                routes::method_not_allowed(r, "GET, HEAD, PUT")
            })),
    )
    .service(post_resource(
        routes::catalog::IMPORT_PATH,
        routes::catalog::import,
    ));
    cfg.service(post_resource(
        routes::cancel::EXECUTION_CANCEL_PATH,
        routes::cancel_execution,
    ))
    .service(post_resource(
        routes::cancel::PLAN_CANCEL_PATH,
        routes::cancel_plan,
    ));
    cfg.service(get_resource("/health", routes::health))
        .service(get_resource("/health/live", routes::live))
        .service(get_resource("/health/ready", routes::ready))
        .service(get_resource("/metrics", routes::metrics))
        .service(get_resource(DOCS_PATH, docs_redirect))
        .service(get_resource(
            routes::executions::EXECUTION_PATH,
            routes::execution,
        ))
        .service(get_resource(
            routes::executions::EXECUTION_CALLBACKS_PATH,
            routes::execution_callbacks,
        ))
        .service(get_resource(
            routes::executions::PLAN_EXECUTIONS_PATH,
            routes::plan_executions,
        ))
        .service(get_resource(
            routes::executions::PLAN_RESULTS_PATH,
            routes::plan_results,
        ))
        .service(get_resource(
            routes::flakiness::PLAN_FLAKINESS_PATH,
            routes::flakiness::plan_flakiness,
        ))
        .service(get_resource(
            routes::plans::PLANS_PATH,
            routes::plans::plans,
        ))
        .service(get_resource(routes::plans::PLAN_PATH, routes::plans::plan))
        .service(get_resource(routes::page::PAGE_PATH, routes::page::index))
        .service(get_resource(routes::page::ASSET_PATH, routes::page::asset))
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

/// A resource served by `handler` for POST, 405 `Allow: POST` for any
/// other method.
fn post_resource<F, Args>(path: &str, handler: F) -> Resource
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(|r: HttpRequest| {
            routes::method_not_allowed(r, "POST")
        }))
}

/// `/docs` → `/docs/`: Swagger UI loads its assets relative to the page.
async fn docs_redirect() -> HttpResponse {
    HttpResponse::PermanentRedirect()
        .insert_header(("Location", format!("{DOCS_PATH}/")))
        .finish()
}
