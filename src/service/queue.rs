//! What the two queueing use cases share: [`QueueService`] (its `rerun` in
//! `rerun.rs`, its `run` in `run.rs`), who asks ([`QueueContext`]), a queued
//! pair of the answer, and the one way both run: on the request pool, in the
//! Idempotency-Key flow ([`idempotency::with_key`]), made again after a lost
//! connection with the same first message id ([`Db::run_replayable`]), the
//! relay woken after a commit that wrote dispatch rows.

use crate::config::Limits;
use crate::db::queries::WriteContext;
use crate::db::Db;
use crate::error::{ApiError, Envelope};
use crate::idempotency::{self, Answer, IdempotencyKey, KeyScope, Keyed};
use diesel::PgConnection;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

/// One pair in the 200 answer.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueuedPair {
    pub scenario_id: i64,
    pub environment_id: i64,
    pub attempt: i32,
    /// `None` for a dry run, which queues nothing.
    pub message_id: Option<String>,
}

/// What a queueing request produced.
#[derive(Debug)]
pub enum QueueOutcome<T> {
    /// Committed (or validated, for a dry run).
    Accepted(T),
    /// A retry with a known Idempotency-Key: the first answer, as stored.
    Replayed { status: u16, body: String },
}

/// Who asks and how: what the request carries besides its body.
#[derive(Debug, Clone, Default)]
pub struct QueueContext {
    /// The token's subject; scope of the Idempotency-Key.
    pub subject: String,
    /// `X-Request-Id`, carried as the AMQP `correlation_id`.
    pub correlation_id: Option<String>,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// The 200 answer of a queueing request.
pub(super) trait Accepted: Serialize {
    /// The execution written; `None` for a dry run.
    fn execution_id(&self) -> Option<i64>;
}

/// One queueing statement: checks a request and, unless a dry run, writes
/// it with `write`; its failed check as the contract's error.
pub(super) type Statement<R, T> =
    fn(&QueueService, &mut PgConnection, &R, &WriteContext<'_>) -> Result<T, ApiError>;

/// The rerun (`rerun.rs`) and the run of a plan (`run.rs`); cheap to clone.
#[derive(Clone)]
pub struct QueueService {
    pub(super) db: Db,
    pub(super) relay_wakeup: Arc<Notify>,
    /// `MAX_PAIRS` and `MAX_ATTEMPTS`.
    pub(super) limits: Limits,
    /// The configured framework types (a plan's own must be one, section 7).
    pub(super) framework_types: Arc<[String]>,
    pub(super) idempotency_retention: Duration,
    /// `AMQP_EXCHANGE`, recorded on every dispatch row written.
    pub(super) exchange: Arc<str>,
    /// `QUEUE_TIMEOUT_SECS` (5-2592000), for the messages' `expiresAt`
    /// (contract, section 15).
    pub(super) queue_timeout_secs: i32,
}

impl QueueService {
    /// `relay_wakeup` is notified after every commit that wrote dispatch rows;
    /// `exchange` (`AMQP_EXCHANGE`) is recorded on them; `queue_timeout`
    /// (`QUEUE_TIMEOUT_SECS`) gives their messages' `expiresAt`.
    pub fn new(
        db: Db,
        relay_wakeup: Arc<Notify>,
        limits: Limits,
        framework_types: &[String],
        idempotency_retention: Duration,
        exchange: &str,
        queue_timeout: Duration,
    ) -> Self {
        QueueService {
            db,
            relay_wakeup,
            limits,
            framework_types: framework_types.into(),
            idempotency_retention,
            exchange: exchange.into(),
            queue_timeout_secs: i32::try_from(queue_timeout.as_secs()).unwrap_or(i32::MAX),
        }
    }

    /// Runs `statement` for `request`: one statement and one commit without
    /// an Idempotency-Key; with one, that statement between the key's two in
    /// one transaction ([`idempotency::with_key`]; `request` serialised is
    /// the normalised request). Wakes the relay after a commit that wrote
    /// dispatch rows.
    ///
    /// Errors: the statement's; 1012/1013 for Idempotency-Key misuse; 1011
    /// when the database is unavailable. Nothing is written on any error.
    pub(super) async fn queue<R, T>(
        &self,
        request: R,
        dry_run: bool,
        context: QueueContext,
        statement: Statement<R, T>,
    ) -> Result<QueueOutcome<T>, ApiError>
    where
        R: Serialize + Send + 'static,
        T: Accepted + Send + 'static,
    {
        let service = self.clone();
        // kept across a second try after a lost connection (run_replayable)
        let first_message_id = Uuid::new_v4();
        let mut tries = 0;
        let keyed = self
            .db
            .run_replayable(move |conn| {
                tries += 1;
                let replay = tries > 1;
                let scope = context.idempotency_key.as_ref().map(|key| KeyScope {
                    subject: &context.subject,
                    key,
                    retention: service.idempotency_retention,
                });
                // without a key the statement is its own transaction
                let own_transaction = scope.is_none();
                let call = |conn: &mut PgConnection| {
                    let write = WriteContext::now(
                        context.correlation_id.as_deref(),
                        &service.exchange,
                        first_message_id,
                        replay,
                        own_transaction,
                    );
                    statement(&service, conn, &request, &write)
                };
                idempotency::with_key(conn, scope, &request, dry_run, call, answer_to_store)
            })
            .await?;
        let outcome = match keyed {
            Keyed::Fresh(accepted) => QueueOutcome::Accepted(accepted),
            Keyed::Replayed(replay) => QueueOutcome::Replayed {
                status: replay.status,
                body: replay.body,
            },
        };
        if matches!(&outcome, QueueOutcome::Accepted(a) if a.execution_id().is_some()) {
            self.relay_wakeup.notify_one();
        }
        Ok(outcome)
    }
}

/// The 200 answer around `accepted`, as an Idempotency-Key stores it.
fn answer_to_store<T: Accepted>(accepted: &T) -> Result<Answer, ApiError> {
    let body = serde_json::to_string(&Envelope::success(accepted)).map_err(anyhow::Error::from)?;
    Ok(Answer {
        body,
        execution_id: accepted.execution_id(),
    })
}
