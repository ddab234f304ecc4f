//! The values the schema's `CHECK` constraints allow, named once: SQL text
//! and Rust code use these constants, never the bare strings. The schema
//! itself spells them out: the `CHECK` constraints, and the server functions
//! of `src/db/functions/`, which write them. The pair statuses are
//! [`PairStatus`]'s names (the constants below are its names, for SQL text).

use super::PairStatus;

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
/// `dispatches.message_type` (and AMQP `type`) of the event of a cancel (contract, section 16).
pub const MESSAGE_EXECUTION_CANCELLED: &str = "execution.cancelled";
/// `dispatches.message_type` (and AMQP `type`) of the event of a result the consumer rejected (contract, section 17).
pub const MESSAGE_RESULT_REJECTED: &str = "result.rejected";
/// `execution_pairs.reason` of a pair a user cancelled (`ABORTED`; contract, section 14).
pub const REASON_CANCELLED: &str = "CANCELLED";
/// `execution_pairs.reason` of a pair still `QUEUED` at its queue deadline (`ABORTED`; section 15).
pub const REASON_QUEUE_TIMEOUT: &str = "QUEUE_TIMEOUT";
/// `execution_pairs.reason` of a pair still `RUNNING` at its run deadline (`ABORTED`; section 15).
pub const REASON_RUN_TIMEOUT: &str = "RUN_TIMEOUT";
/// `execution_pairs.reason` of a pair whose run message was dead-lettered (`ERROR`; section 17).
pub const REASON_DEAD_LETTERED: &str = "DEAD_LETTERED";
/// `executions.trigger` of an execution a user asked for (contract, section 18).
pub const TRIGGER_USER: &str = "USER";
/// `executions.trigger` of an automatic rerun of an execution's failures (section 18).
pub const TRIGGER_RETRY: &str = "RETRY";
/// The largest `retryFailed` of a plan or a request body (section 18).
pub const MAX_RETRY_FAILED: i32 = 5;
