//! The values the schema's `CHECK` constraints allow, named once: SQL text
//! and Rust code use these constants, never the bare strings. The schema
//! itself spells them out: the `CHECK` constraints, and the server functions
//! of `src/db/functions/`, which write them. The pair statuses are
//! [`PairStatus`]'s names (the constants below are its names, for SQL text).

use crate::domain::PairStatus;

/// `executions.kind` of a full run of a plan.
pub const KIND_RUN: &str = "RUN";
/// `executions.kind` of a rerun made from a source run.
pub const KIND_RERUN: &str = "RERUN";
/// `execution_pairs.status` of a pair written and not yet started.
pub const STATUS_QUEUED: &str = PairStatus::Queued.as_str();
/// `execution_pairs.status` of a pair a runner said it started.
pub const STATUS_RUNNING: &str = PairStatus::Running.as_str();
/// `dispatches.message_type` (and AMQP `type`) of a pair of a rerun (contract, section 2).
pub const MESSAGE_RERUN: &str = "scenario.rerun";
/// `dispatches.message_type` (and AMQP `type`) of a pair of a full run (contract, section 7).
pub const MESSAGE_RUN: &str = "scenario.run";
/// `dispatches.message_type` (and AMQP `type`) of the event of a finished execution (contract, section 10).
pub const MESSAGE_EXECUTION_FINISHED: &str = "execution.finished";
/// `execution_pairs.status` of a pair that passed (terminal).
pub const STATUS_PASSED: &str = PairStatus::Passed.as_str();
/// `execution_pairs.status` of a pair that failed (terminal).
pub const STATUS_FAILED: &str = PairStatus::Failed.as_str();
/// `execution_pairs.status` of a pair that could not run properly (terminal).
pub const STATUS_ERROR: &str = PairStatus::Error.as_str();
/// `execution_pairs.status` of a pair the runner skipped (terminal).
pub const STATUS_SKIPPED: &str = PairStatus::Skipped.as_str();
/// `execution_pairs.status` of a pair stopped before its end (terminal).
pub const STATUS_ABORTED: &str = PairStatus::Aborted.as_str();
