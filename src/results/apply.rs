//! One batch of results in one transaction (contract, sections 9 and 10):
//! reduce the batch to one update per pair, apply it, tell each result's
//! outcome, record the executions' progress, and write the
//! `execution.finished` event of every execution the batch finished, after
//! queueing its automatic rerun (section 18).

use super::event::ExecutionFinished;
use super::message::{Rejection, RunnerResult};
use crate::db::callbacks;
use crate::db::models::MESSAGE_EXECUTION_FINISHED;
use crate::db::outbox::{self, NewEvent};
use crate::db::reads;
use crate::db::results::{self, ExecutionProgress, PairKey, PairUpdate, TerminalUpdate};
use crate::domain::PairStatus;
use diesel::prelude::*;
use std::collections::{BTreeMap, HashMap, HashSet};

/// What became of one result.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// It changed its pair.
    Applied,
    /// Its pair exists but it changed nothing: a duplicate, a result after
    /// the terminal one, a `RUNNING` of a pair already running.
    Ignored,
    /// Like [`Outcome::Ignored`], for a pair plan-queue itself ended (a
    /// `reason`, contract, section 14): acknowledged and counted late.
    Late,
    /// It names no pair (or the database refused it): reject, no requeue.
    Rejected(Rejection),
}

/// The outcomes of a batch (`outcomes[i]` belongs to `results[i]`) and the
/// events it wrote.
#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    pub outcomes: Vec<Outcome>,
    /// The `execution.finished` events written (for the metrics).
    pub finished: Vec<ExecutionFinished>,
}

/// Applies `results` (in arrival order) in one transaction on `conn`; the
/// `execution.finished` events it writes record `exchange` (`AMQP_EXCHANGE`),
/// and the executions it finishes are retried as `retries` says.
///
/// Errors: any database error; the transaction is rolled back and nothing
/// of the batch is stored.
pub fn apply_batch(
    conn: &mut PgConnection,
    results: &[RunnerResult],
    exchange: &str,
    retries: Retries,
) -> QueryResult<BatchOutcome> {
    let (updates, effective) = reduce(results);
    conn.transaction(|conn| {
        let applied = results::apply(conn, &updates)?;
        let changed: HashSet<PairKey> = applied.iter().map(|a| a.key).collect();
        let unchanged: Vec<uuid::Uuid> = updates
            .iter()
            .filter(|u| !changed.contains(&u.key))
            .map(|u| u.key.message_id)
            .collect();
        let existing: HashMap<PairKey, bool> = if unchanged.is_empty() {
            HashMap::new()
        } else {
            results::pairs_of_messages(conn, &unchanged)?
                .into_iter()
                .map(|p| (p.key, p.reason.is_some()))
                .collect()
        };
        let outcomes = results
            .iter()
            .zip(&effective)
            .map(|(result, effective)| {
                let key = key_of(result);
                if changed.contains(&key) {
                    if *effective {
                        Outcome::Applied
                    } else {
                        Outcome::Ignored
                    }
                } else if let Some(ended_with_reason) = existing.get(&key) {
                    if *ended_with_reason {
                        Outcome::Late
                    } else {
                        Outcome::Ignored
                    }
                } else {
                    Outcome::Rejected(Rejection::NoPair)
                }
            })
            .collect();
        let finished = close_pairs(
            conn,
            applied.iter().map(|pair| PairProgress {
                execution_id: pair.key.execution_id,
                closed: pair.closed,
                started_at: pair.started_at,
            }),
            exchange,
            retries,
        )?;
        Ok(BatchOutcome { outcomes, finished })
    })
}

/// A pair that changed: it turned terminal (`closed`) or started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairProgress {
    pub execution_id: i64,
    /// It turned terminal: its execution has one open pair less.
    pub closed: bool,
    /// Its `started_at` after the change, if any.
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// What finishing an execution does with its failures (contract, section 18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retries {
    /// Queue the automatic rerun of its `FAILED` and `ERROR` pairs when its
    /// retry budget is above 0, leaving out pairs that would pass
    /// `max_attempts` (`MAX_ATTEMPTS`), its messages expiring
    /// `queue_timeout_secs` (`QUEUE_TIMEOUT_SECS`) after it was queued:
    /// results, deadlines, dead letters.
    Queue {
        max_attempts: i32,
        queue_timeout_secs: i32,
    },
    /// A cancel finished it: a cancel also stops retries.
    Stopped,
}

/// Records `pairs` (changed in the caller's transaction) on their
/// executions — `open_pairs`, `started_at`, `finished_at` — and, for each
/// execution that this turned `FINISHED`, queues its automatic rerun as
/// `retries` says (`db::results::queue_retry`) and writes its
/// `execution.finished` event (contract, sections 10 and 18), recording
/// `exchange` (`AMQP_EXCHANGE`) on the dispatch rows. Returns those events.
///
/// The one way every path that ends pairs finishes executions: results,
/// cancels, deadlines and dead letters (sections 9, 14–17). Executions are
/// updated in id order, after their pairs, so those paths lock alike. An
/// execution turns `FINISHED` once (its `open_pairs` reaches 0 under its row
/// lock), so its retry is queued once, however often its results arrive.
pub fn close_pairs(
    conn: &mut PgConnection,
    pairs: impl IntoIterator<Item = PairProgress>,
    exchange: &str,
    retries: Retries,
) -> QueryResult<Vec<ExecutionFinished>> {
    let mut progress: BTreeMap<i64, ExecutionProgress> = BTreeMap::new();
    for pair in pairs {
        let entry = progress
            .entry(pair.execution_id)
            .or_insert(ExecutionProgress {
                execution_id: pair.execution_id,
                closed: 0,
                first_start: None,
            });
        entry.closed += i32::from(pair.closed);
        entry.first_start = match (entry.first_start, pair.started_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let progress: Vec<ExecutionProgress> = progress.into_values().collect();
    let mut finished = Vec::new();
    if !progress.is_empty() {
        for execution_id in results::record_progress(conn, &progress)? {
            let retry = match retries {
                Retries::Queue {
                    max_attempts,
                    queue_timeout_secs,
                } => results::queue_retry(
                    conn,
                    execution_id,
                    max_attempts,
                    queue_timeout_secs,
                    exchange,
                )?,
                Retries::Stopped => None,
            };
            finished.push(write_event(conn, execution_id, exchange, retry)?);
        }
    }
    Ok(finished)
}

/// A pair plan-queue ended with a reason (`crate::db::ends`), as
/// [`close_pairs`] records it: closed, with the start it had.
pub fn ended(pair: &crate::db::ends::EndedPair) -> PairProgress {
    PairProgress {
        execution_id: pair.execution_id,
        closed: true,
        started_at: pair.started_at,
    }
}

fn key_of(result: &RunnerResult) -> PairKey {
    PairKey {
        message_id: result.message_id,
        execution_id: result.execution_id,
        scenario_id: result.scenario_id,
        environment_id: result.environment_id,
        attempt: result.attempt,
    }
}

/// One update per pair named (by `messageId` and the four ids), as if the
/// results were applied one after another: the first `RUNNING` before any
/// terminal result, and the first terminal result. Also tells, per result,
/// whether it takes part in its pair's update.
fn reduce(results: &[RunnerResult]) -> (Vec<PairUpdate>, Vec<bool>) {
    let mut updates: Vec<PairUpdate> = Vec::new();
    let mut index: HashMap<PairKey, usize> = HashMap::new();
    let mut effective = Vec::with_capacity(results.len());
    for result in results {
        let key = key_of(result);
        let i = *index.entry(key).or_insert_with(|| {
            updates.push(PairUpdate {
                key,
                running_at: None,
                terminal: None,
            });
            updates.len() - 1
        });
        let update = &mut updates[i];
        let takes_part = match result.status {
            _ if update.terminal.is_some() => false,
            PairStatus::Running if update.running_at.is_some() => false,
            PairStatus::Running => {
                update.running_at = Some(result.at);
                true
            }
            // terminal: a parsed result is never QUEUED
            status => {
                update.terminal = Some(TerminalUpdate {
                    status: status.as_str(),
                    finished_at: result.at,
                    implied_start: result.started_from_duration().unwrap_or(result.at),
                    duration_ms: result.duration_ms,
                    report_url: result.report_url.clone(),
                    detail: result.detail.clone(),
                });
                true
            }
        };
        effective.push(takes_part);
    }
    (updates, effective)
}

/// Reads what the event of the finished execution says and writes its
/// dispatch row; `retry` is the automatic rerun its finish queued.
fn write_event(
    conn: &mut PgConnection,
    execution_id: i64,
    exchange: &str,
    retry: Option<i64>,
) -> QueryResult<ExecutionFinished> {
    let execution =
        reads::execution(conn, execution_id, None)?.ok_or(diesel::result::Error::NotFound)?;
    let flaky = results::flaky_pairs(
        conn,
        execution_id,
        PairStatus::Passed.as_str(),
        &PairStatus::FLAKY_FAILURES.map(PairStatus::as_str),
    )?;
    let event = ExecutionFinished::new(&execution, &flaky, retry);
    let body = serde_json::to_string(&event)
        .map_err(|e| diesel::result::Error::SerializationError(Box::new(e)))?;
    outbox::insert_event(
        conn,
        &NewEvent {
            execution_id,
            message_id: event.event_id,
            routing_key: &event.routing_key(),
            message_type: MESSAGE_EXECUTION_FINISHED,
            body: &body,
            exchange,
        },
    )?;
    // the callback, if the execution has one (section 21): the same bytes
    callbacks::insert_for_event(conn, event.event_id, execution_id, &body)?;
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn result(status: PairStatus, second: u32) -> RunnerResult {
        RunnerResult {
            message_id: uuid::Uuid::nil(),
            execution_id: 1,
            scenario_id: 2,
            environment_id: 3,
            attempt: 1,
            status,
            at: Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, second).unwrap(),
            duration_ms: None,
            report_url: None,
            detail: None,
        }
    }

    #[test]
    fn a_batch_reduces_to_the_first_running_and_the_first_terminal_result() {
        let failed = PairStatus::Failed;
        let passed = PairStatus::Passed;
        let batch = [
            result(PairStatus::Running, 1),
            result(PairStatus::Running, 2),
            result(failed, 3),
            result(passed, 4),
            result(PairStatus::Running, 5),
        ];
        let (updates, effective) = reduce(&batch);
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].running_at, Some(batch[0].at));
        let terminal = updates[0].terminal.as_ref().unwrap();
        assert_eq!(
            (terminal.status, terminal.finished_at),
            ("FAILED", batch[2].at)
        );
        assert_eq!(effective, [true, false, true, false, false]);
    }

    #[test]
    fn a_result_with_other_ids_is_another_update() {
        let mut other = result(PairStatus::Running, 1);
        other.attempt = 2;
        let (updates, _) = reduce(&[result(PairStatus::Running, 1), other]);
        assert_eq!(updates.len(), 2);
    }
}
