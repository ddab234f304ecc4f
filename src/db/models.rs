//! The values the schema's `CHECK` constraints allow, named once: SQL text
//! and Rust code use these constants, never the bare strings.

/// `executions.kind` of a full run of a plan.
pub const KIND_RUN: &str = "RUN";
/// `executions.kind` of a rerun made from a source run.
pub const KIND_RERUN: &str = "RERUN";
/// `execution_pairs.status` of a pair written and not yet started.
pub const STATUS_QUEUED: &str = "QUEUED";
