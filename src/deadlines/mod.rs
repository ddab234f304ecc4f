//! The deadline sweep (contract, section 15): a background task of `serve`
//! that ends pairs past their deadline — still `QUEUED` `QUEUE_TIMEOUT_SECS`
//! after their execution's `requestedAt` (reason `QUEUE_TIMEOUT`), still
//! `RUNNING` `RUN_TIMEOUT_SECS` (or their plan's `runTimeoutSecs`) after
//! their `startedAt` (reason `RUN_TIMEOUT`) — as `ABORTED` with `finishedAt`
//! the moment it ends them, whether or not any request arrives.
//!
//! Every `DEADLINE_SWEEP_MS` (2 s by default, so a pair ends within about
//! 2 s of its deadline, well inside the contract's 10 s) it ends the due
//! pairs in batches of [`BATCH`], one short transaction each
//! (`db::ends`: `FOR UPDATE SKIP LOCKED`, then the executions through
//! `results::apply::close_pairs`, which writes the `execution.finished` event
//! of each execution this empties). Several instances on one database sweep
//! side by side: a pair locked by one is skipped by the others, and a pair
//! ends only while still in flight, so each pair ends once. Each round also
//! sets the gauge of the oldest in-flight pair's age.

use crate::config::DeadlineConfig;
use crate::db::ends::{self, EndedPair, Ending};
use crate::db::models::{REASON_QUEUE_TIMEOUT, REASON_RUN_TIMEOUT, STATUS_ABORTED};
use crate::db::{staleness, PgPool};
use crate::metrics::Metrics;
use crate::results::apply::{close_pairs, ended, Retries};
use crate::results::event::ExecutionFinished;
use diesel::prelude::*;
use std::sync::Arc;
use tokio::sync::{watch, Notify};

/// Pairs ended per transaction.
pub const BATCH: i64 = 500;

/// What one round ended.
#[derive(Debug, Default)]
pub struct Round {
    /// Pairs ended with reason `QUEUE_TIMEOUT`.
    pub queue_timeouts: usize,
    /// Pairs ended with reason `RUN_TIMEOUT`.
    pub run_timeouts: usize,
    /// The `execution.finished` events written.
    pub finished: Vec<ExecutionFinished>,
    /// Age of the oldest in-flight pair after the round, seconds.
    pub oldest_in_flight: f64,
}

/// The sweep of one service instance.
pub struct DeadlineSweep {
    config: DeadlineConfig,
    pool: PgPool,
    exchange: String,
    relay_wakeup: Arc<Notify>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    /// What the executions it finishes do with their failures (section 18).
    retries: Retries,
}

impl DeadlineSweep {
    /// `pool` is the sweep's own small pool; `exchange` (`AMQP_EXCHANGE`) is
    /// recorded on the events it writes; `relay_wakeup` is notified after a
    /// round that wrote events; it stops when `shutdown` turns true; the
    /// executions it finishes are retried as `retries` says.
    pub fn new(
        config: DeadlineConfig,
        pool: PgPool,
        exchange: &str,
        relay_wakeup: Arc<Notify>,
        metrics: Arc<Metrics>,
        shutdown: watch::Receiver<bool>,
        retries: Retries,
    ) -> Self {
        DeadlineSweep {
            config,
            pool,
            exchange: exchange.to_owned(),
            relay_wakeup,
            metrics,
            shutdown,
            retries,
        }
    }

    /// Sweeps every `DEADLINE_SWEEP_MS` until shutdown. A failed round (the
    /// database unavailable) is logged and the next one tries again.
    pub async fn run(mut self) {
        loop {
            match self.round().await {
                Ok(round) => self.report(round),
                Err(e) => log::warn!("deadline sweep: round failed, retrying: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.sweep_interval) => {}
                _ = self.shutdown.changed() => {}
            }
            if *self.shutdown.borrow() {
                break;
            }
        }
        log::info!("deadline sweep stopped");
    }

    /// One round on the blocking pool.
    pub async fn round(&self) -> anyhow::Result<Round> {
        let (pool, config, exchange, retries) = (
            self.pool.clone(),
            self.config.clone(),
            self.exchange.clone(),
            self.retries,
        );
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get()?;
            sweep(&mut conn, &config, &exchange, retries).map_err(|e| {
                if staleness(&e).is_some() {
                    anyhow::anyhow!("database unavailable: {e}")
                } else {
                    anyhow::anyhow!("{e}")
                }
            })
        })
        .await?
    }

    fn report(&self, round: Round) {
        self.metrics
            .pairs_ended(REASON_QUEUE_TIMEOUT, round.queue_timeouts);
        self.metrics
            .pairs_ended(REASON_RUN_TIMEOUT, round.run_timeouts);
        self.metrics
            .oldest_in_flight_age
            .set(round.oldest_in_flight);
        for event in &round.finished {
            self.metrics.execution_finished(event.flaky.len());
        }
        if round.queue_timeouts + round.run_timeouts > 0 {
            log::info!(
                "deadline sweep: {} pairs past their queue deadline and {} past their run \
                 deadline ended ABORTED, {} executions finished",
                round.queue_timeouts,
                round.run_timeouts,
                round.finished.len()
            );
        }
        if !round.finished.is_empty() {
            self.relay_wakeup.notify_one();
        }
    }
}

/// One round on `conn`: the queue deadlines, then the run deadlines, each in
/// batches of [`BATCH`] pairs, one transaction per batch; the executions it
/// finishes are retried as `retries` says.
pub fn sweep(
    conn: &mut PgConnection,
    config: &DeadlineConfig,
    exchange: &str,
    retries: Retries,
) -> QueryResult<Round> {
    let mut round = Round::default();
    let queue_timeout = config.queue_timeout();
    round.queue_timeouts = in_batches(conn, (exchange, retries), &mut round.finished, |conn| {
        ends::end_past_queue_deadline(conn, queue_timeout, BATCH, ending(REASON_QUEUE_TIMEOUT))
    })?;
    let run_timeout = config.run_timeout();
    round.run_timeouts = in_batches(conn, (exchange, retries), &mut round.finished, |conn| {
        ends::end_past_run_deadline(conn, run_timeout, BATCH, ending(REASON_RUN_TIMEOUT))
    })?;
    round.oldest_in_flight = ends::oldest_in_flight_age(conn)?;
    Ok(round)
}

fn ending(reason: &str) -> Ending<'_> {
    Ending {
        status: STATUS_ABORTED,
        reason,
        detail: None,
    }
}

/// Runs `batch` (which ends up to [`BATCH`] pairs) in transactions, closing
/// the pairs it ended on their executions, until a batch ends fewer; returns
/// how many pairs ended, adding the events written to `finished`.
fn in_batches(
    conn: &mut PgConnection,
    (exchange, retries): (&str, Retries),
    finished: &mut Vec<ExecutionFinished>,
    mut batch: impl FnMut(&mut PgConnection) -> QueryResult<Vec<EndedPair>>,
) -> QueryResult<usize> {
    let mut total = 0;
    loop {
        let (count, events) = conn.transaction(|conn| {
            let pairs = batch(conn)?;
            let events = close_pairs(conn, pairs.iter().map(ended), exchange, retries)?;
            QueryResult::Ok((pairs.len(), events))
        })?;
        total += count;
        finished.extend(events);
        if (count as i64) < BATCH {
            return Ok(total);
        }
    }
}
