//! Keeping the outbox bounded: published rows are deleted after
//! `OUTBOX_RETENTION_SECS` ([`delete_published_rows`]), and new runs and
//! reruns are refused while the unpublished backlog is past
//! `OUTBOX_MAX_PENDING` ([`OutboxGate`]), so a long broker outage cannot fill
//! the disk.

use crate::db::outbox;
use crate::db::PgPool;
use crate::error::ApiError;
use anyhow::Context;
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

    /// Ok while the backlog is at most `OUTBOX_MAX_PENDING`. Errors: 503 code
    /// 1011 `Service unavailable: outbox` (with `Retry-After`).
    pub fn admit(&self) -> Result<(), ApiError> {
        if self.pending.load(Ordering::Relaxed) > self.max_pending {
            return Err(ApiError::Unavailable("outbox"));
        }
        Ok(())
    }

    /// Counts the backlog every second until `shutdown` turns true; a failed
    /// count keeps the last figure.
    pub async fn watch(self: Arc<Self>, pool: PgPool, mut shutdown: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(COUNT_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.changed() => return,
            }
            let pool = pool.clone();
            let counted = tokio::task::spawn_blocking(move || {
                let mut conn = pool.get().context("no database connection")?;
                outbox::backlog(&mut conn).context("counting the outbox backlog")
            })
            .await;
            match counted {
                Ok(Ok(backlog)) => self.pending.store(backlog.pending, Ordering::Relaxed),
                Ok(Err(e)) => log::debug!("outbox gate: {e:#}"),
                Err(e) => log::warn!("outbox gate: counting task failed: {e}"),
            }
        }
    }
}

/// Deletes rows published more than `retention` ago, in batches of
/// [`DELETE_BATCH`], every minute until `shutdown` turns true.
pub async fn delete_published_rows(
    pool: PgPool,
    retention: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(DELETE_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.changed() => return,
        }
        let pool = pool.clone();
        let deleted = tokio::task::spawn_blocking(move || delete_all_due(&pool, retention)).await;
        match deleted {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => log::info!("outbox: deleted {n} published dispatch rows"),
            Ok(Err(e)) => log::warn!("outbox: deleting published rows failed: {e:#}"),
            Err(e) => log::warn!("outbox: deleting task failed: {e}"),
        }
    }
}

/// Deletes every row published more than `retention` ago, batch by batch;
/// returns how many. Blocking.
pub fn delete_all_due(pool: &PgPool, retention: Duration) -> anyhow::Result<usize> {
    let mut conn = pool.get().context("no database connection")?;
    let mut total = 0;
    loop {
        let deleted = outbox::delete_published(&mut conn, retention, DELETE_BATCH)
            .context("deleting published dispatch rows")?;
        total += deleted;
        if deleted < DELETE_BATCH as usize {
            return Ok(total);
        }
    }
}
