//! The state every handler shares, and what a request carries through the
//! middleware: its id and the facts a handler learned about it.
//!
//! Routes import this module, never `crate::startup` (which only wires).

use crate::amqp::BrokerStatus;
use crate::auth::TokenVerifier;
use crate::config::Config;
use crate::db::outbox::{self, OutboxBacklog};
use crate::db::Db;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::relay::upkeep::OutboxGate;
use crate::relay::RelayStatus;
use crate::service::{QueueService, ReadService};
use std::sync::Arc;

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
    /// Runs and reruns.
    pub queue: QueueService,
    /// Reading executions and results back (contract, section 11).
    pub reads: ReadService,
    /// Cancelling executions and plans (contract, section 16).
    pub cancels: crate::service::cancel::CancelService,
    /// The catalogue (contract, section 20).
    pub catalog: crate::service::catalog::CatalogService,
    pub db: Db,
    pub relay_status: Arc<RelayStatus>,
    /// The results consumer's broker connection (the node it uses).
    pub results_status: Arc<BrokerStatus>,
    /// Refuses new runs and reruns past `OUTBOX_MAX_PENDING`.
    pub outbox_gate: Arc<OutboxGate>,
    pub metrics: Arc<Metrics>,
    /// `CALLBACK_ALLOWED_HOSTS`, parsed: the hosts a `callbackUrl` may name
    /// (contract, section 21; empty: callbacks off).
    pub callback_hosts: crate::callbacks::AllowedHosts,
}

impl AppState {
    /// The outbox backlog ([`outbox::backlog`]); an error means the database
    /// is unreachable (1011).
    pub async fn outbox_backlog(&self) -> Result<OutboxBacklog, ApiError> {
        self.db
            .run(|conn| outbox::backlog(conn).map_err(ApiError::from))
            .await
    }
}
