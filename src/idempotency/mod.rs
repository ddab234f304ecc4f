//! Idempotency-Key (contract, section 1): the key ([`IdempotencyKey`]), the
//! rules of a keyed request inside its transaction ([`begin`], [`finish`]),
//! and the expiry job ([`clean_expired_keys`]). The table's queries are in
//! `crate::db::idempotency` (the pattern of zero-to-production's
//! `src/idempotency/`).
//!
//! A keyed request takes a transaction-scoped lock on `(subject, key)` (a
//! concurrent twin answers 409 code 1013), then either replays the stored
//! first answer (same normalised request) or refuses (422 code 1012, another
//! request), or runs and stores its answer in the same transaction as its
//! data. A dry run is checked against a used key but never stored.

mod key;

pub use key::IdempotencyKey;

use crate::db::idempotency::{self as table, NewAnswer};
use crate::db::Db;
use crate::error::ApiError;
use chrono::Utc;
use diesel::PgConnection;
use std::time::Duration;
use tokio::sync::watch;

/// How often the expiry job runs.
const CLEAN_EVERY: Duration = Duration::from_secs(3600);

/// The first answer to a key, to send again as it was.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    pub status: u16,
    pub body: String,
}

/// Locks `key` of `subject` for this transaction and looks it up.
///
/// Returns the stored answer when `normalised` (the request, serialised in a
/// canonical form) equals the one it was first used with; `None` when the
/// key is new or expired (older than `retention`). Errors: 409 code 1013
/// while another request holds the key, 422 code 1012 for another request.
pub fn begin(
    conn: &mut PgConnection,
    subject: &str,
    key: &IdempotencyKey,
    normalised: &str,
    retention: Duration,
) -> Result<Option<Replay>, ApiError> {
    if !table::try_lock(conn, subject, key.as_str())? {
        return Err(ApiError::IdempotencyKeyInFlight);
    }
    match table::find(conn, subject, key.as_str(), table::cutoff(retention))? {
        None => Ok(None),
        Some(stored) if stored.request == normalised => Ok(Some(Replay {
            status: u16::try_from(stored.status_code).unwrap_or(500),
            body: stored.response_body,
        })),
        Some(_) => Err(ApiError::IdempotencyKeyReused),
    }
}

/// Stores the 200 answer `body` of `key` in the request's transaction.
pub fn finish(
    conn: &mut PgConnection,
    subject: &str,
    key: &IdempotencyKey,
    normalised: &str,
    body: &str,
    execution_id: Option<i64>,
) -> Result<(), ApiError> {
    table::save(
        conn,
        &NewAnswer {
            subject,
            key: key.as_str(),
            request: normalised,
            status_code: 200,
            response_body: body,
            execution_id,
            created_at: Utc::now(),
        },
    )?;
    Ok(())
}

/// Deletes the keys first used more than `retention` ago; returns how many.
/// Errors: 1011 when the database is unavailable.
pub async fn delete_expired(db: &Db, retention: Duration) -> Result<usize, ApiError> {
    db.run(move |conn| table::delete_expired(conn, retention).map_err(ApiError::from))
        .await
}

/// The expiry job: deletes expired keys hourly until `shutdown` turns true.
pub async fn clean_expired_keys(db: Db, retention: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(CLEAN_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.changed() => return,
        }
        match delete_expired(&db, retention).await {
            Ok(n) if n > 0 => log::info!("deleted {n} expired Idempotency-Keys"),
            Ok(_) => {}
            Err(e) => log::warn!("cleaning Idempotency-Keys failed: {e}"),
        }
    }
}
