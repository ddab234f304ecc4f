//! Keeping the outbox bounded: published rows are deleted after
//! `OUTBOX_RETENTION_SECS` ([`delete_published_rows`]), and new runs and
//! reruns are refused while the unpublished backlog is past
//! `OUTBOX_MAX_PENDING` ([`OutboxGate`]), so a long broker outage cannot fill
//! the disk.

use crate::db::outbox;
use crate::db::{with_connection, Db, PgPool};
use anyhow::Context;
use diesel::PgConnection;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Rows deleted per statement: short locks, short transactions.
const DELETE_BATCH: i64 = 1000;
/// How often published rows are looked for.
const DELETE_EVERY: Duration = Duration::from_secs(60);
/// How often the gate re-counts the backlog.
const COUNT_EVERY: Duration = Duration::from_secs(1);

/// The admission check of the outbox: the unpublished backlog as last
/// counted (at most a second old) against `OUTBOX_MAX_PENDING`.
pub struct OutboxGate {
    pending: AtomicI64,
    max_pending: i64,
}

impl OutboxGate {
    /// A gate that refuses past `max_pending` rows; nothing counted yet.
    pub fn new(max_pending: i64) -> Arc<Self> {
        Arc::new(OutboxGate {
            pending: AtomicI64::new(0),
            max_pending,
        })
    }

    /// Ok while the backlog is at most `OUTBOX_MAX_PENDING`. Errors:
    /// [`OutboxFull`] (answered as 503 code 1011 `Service unavailable:
    /// outbox`, with `Retry-After`).
    pub fn admit(&self) -> Result<(), OutboxFull> {
        if self.pending.load(Ordering::Relaxed) > self.max_pending {
            return Err(OutboxFull);
        }
        Ok(())
    }

    /// Counts the backlog every second on `db` until `shutdown` turns true;
    /// a failed count keeps the last figure.
    pub async fn watch(self: Arc<Self>, db: Db, mut shutdown: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(COUNT_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.changed() => return,
            }
            let counted = db
                .run(|conn| outbox::backlog(conn).context("counting the outbox backlog"))
                .await;
            match counted {
                Ok(backlog) => self.pending.store(backlog.pending, Ordering::Relaxed),
                Err(e) => log::debug!("outbox gate: {e:#}"),
            }
        }
    }
}

/// The unpublished backlog is past `OUTBOX_MAX_PENDING`: no new run or
/// rerun until the relay caught up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the outbox backlog is past OUTBOX_MAX_PENDING")]
pub struct OutboxFull;

/// Deletes rows published more than `retention` ago on `db`, in batches of
/// [`DELETE_BATCH`], every minute until `shutdown` turns true.
pub async fn delete_published_rows(
    db: Db,
    retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(DELETE_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.changed() => return,
        }
        match db.run(move |conn| delete_due(conn, retention)).await {
            Ok(0) => {}
            Ok(n) => log::info!("outbox: deleted {n} published dispatch rows"),
            Err(e) => log::warn!("outbox: deleting published rows failed: {e:#}"),
        }
    }
}

/// [`delete_due`] on a connection of `pool`, on the calling thread (it
/// blocks: for a caller already on a blocking thread).
pub fn delete_all_due(pool: &PgPool, retention: Duration) -> anyhow::Result<usize> {
    with_connection(pool, pool.connection_timeout(), |conn| {
        delete_due(conn, retention)
    })
}

/// Deletes every row published more than `retention` ago, batch by batch;
/// returns how many.
fn delete_due(conn: &mut PgConnection, retention: Duration) -> anyhow::Result<usize> {
    let mut total = 0;
    loop {
        let deleted = outbox::delete_published(conn, retention, DELETE_BATCH)
            .context("deleting published dispatch rows")?;
        total += deleted;
        if deleted < DELETE_BATCH as usize {
            return Ok(total);
        }
    }
}
