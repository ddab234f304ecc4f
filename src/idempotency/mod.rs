//! Idempotency-Key (contract, section 1): the key ([`IdempotencyKey`]), the
//! flow of a keyed request inside its transaction ([`with_key`], built of
//! [`begin`] and [`finish`]), and the expiry job ([`clean_expired_keys`]).
//! The table's queries are in `crate::db::idempotency` (the pattern of
//! zero-to-production's `src/idempotency/`).
//!
//! A keyed request takes a transaction-scoped lock on `(subject, key)` (a
//! concurrent twin is [`KeyError::InFlight`]), then either replays the stored
//! first answer (same normalised request) or refuses
//! ([`KeyError::Reused`], another request), or runs and stores its answer in
//! the same transaction as its data. A dry run is checked against a used key
//! but never stored. `crate::error` words each refusal as the contract does.

mod key;

pub use key::{IdempotencyKey, InvalidKey};

use crate::db::idempotency::{self as table, NewAnswer};
use crate::db::Db;
use anyhow::Context;
use chrono::Utc;
use diesel::{Connection, PgConnection};
use serde::Serialize;
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

/// Why a keyed request cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Another request holds the key right now (409 code 1013).
    #[error("a request with this Idempotency-Key is still being processed")]
    InFlight,
    /// The key was first used with another request (422 code 1012).
    #[error("Idempotency-Key reused with a different request")]
    Reused,
    /// The key's table could not be read or written.
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
    /// The request or its answer could not be serialised.
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

/// Whose key a request carries: the token's subject (the key's scope), the
/// key, and how long first answers are kept (`IDEMPOTENCY_RETENTION_SECS`).
#[derive(Debug, Clone, Copy)]
pub struct KeyScope<'a> {
    pub subject: &'a str,
    pub key: &'a IdempotencyKey,
    pub retention: Duration,
}

/// What a call under a key produced.
#[derive(Debug)]
pub enum Keyed<T> {
    /// The call ran (its answer stored under the key, if any and not a dry run).
    Fresh(T),
    /// A retry with a known key: the first answer, as stored.
    Replayed(Replay),
}

/// The 200 answer of a call, to store under its key.
#[derive(Debug)]
pub struct Answer {
    /// The whole answer body, sent again as it is to a retry.
    pub body: String,
    /// The execution the call created, if any.
    pub execution_id: Option<i64>,
}

/// Runs `call` the way a request with an optional Idempotency-Key runs
/// (contract, section 1). Without a key (`scope` `None`): `call` alone,
/// outside a transaction. With one, in one transaction: [`begin`] (lock,
/// look up; a retry of the same normalised `request` gets
/// [`Keyed::Replayed`]), then `call`, then, unless `dry_run`, its answer
/// (made by `answer`) stored with [`finish`].
///
/// Errors: [`KeyError`] (converted into `E`), and whatever `call` or
/// `answer` returns; with a key, nothing is written on any error.
pub fn with_key<T, E>(
    conn: &mut PgConnection,
    scope: Option<KeyScope<'_>>,
    request: &impl Serialize,
    dry_run: bool,
    call: impl FnOnce(&mut PgConnection) -> Result<T, E>,
    answer: impl FnOnce(&T) -> Result<Answer, E>,
) -> Result<Keyed<T>, E>
where
    E: From<KeyError> + From<diesel::result::Error>,
{
    let Some(scope) = scope else {
        return call(conn).map(Keyed::Fresh);
    };
    conn.transaction(|conn| {
        let normalised = serde_json::to_string(request)
            .context("normalising the request")
            .map_err(KeyError::from)?;
        if let Some(replay) = begin(conn, &scope, &normalised)? {
            return Ok(Keyed::Replayed(replay));
        }
        let fresh = call(conn)?;
        if !dry_run {
            let Answer { body, execution_id } = answer(&fresh)?;
            finish(conn, &scope, &normalised, &body, execution_id)?;
        }
        Ok(Keyed::Fresh(fresh))
    })
}

/// Locks the key of `scope` for this transaction and looks it up.
///
/// Returns the stored answer when `normalised` (the request, serialised in a
/// canonical form) equals the one it was first used with; `None` when the
/// key is new or expired (older than the retention). Errors:
/// [`KeyError::InFlight`] while another request holds the key,
/// [`KeyError::Reused`] for another request.
pub fn begin(
    conn: &mut PgConnection,
    scope: &KeyScope<'_>,
    normalised: &str,
) -> Result<Option<Replay>, KeyError> {
    let key = scope.key.as_str();
    if !table::try_lock(conn, scope.subject, key)? {
        return Err(KeyError::InFlight);
    }
    match table::find(conn, scope.subject, key, table::cutoff(scope.retention))? {
        None => Ok(None),
        Some(stored) if stored.request == normalised => Ok(Some(Replay {
            status: u16::try_from(stored.status_code).unwrap_or(500),
            body: stored.response_body,
        })),
        Some(_) => Err(KeyError::Reused),
    }
}

/// Stores the 200 answer `body` of the key of `scope` in the request's
/// transaction.
pub fn finish(
    conn: &mut PgConnection,
    scope: &KeyScope<'_>,
    normalised: &str,
    body: &str,
    execution_id: Option<i64>,
) -> Result<(), KeyError> {
    table::save(
        conn,
        &NewAnswer {
            subject: scope.subject,
            key: scope.key.as_str(),
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
/// Errors: the database is unavailable or the delete failed.
pub async fn delete_expired(db: &Db, retention: Duration) -> anyhow::Result<usize> {
    db.run(move |conn| {
        table::delete_expired(conn, retention).context("deleting expired Idempotency-Keys")
    })
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
