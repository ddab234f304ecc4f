//! Use cases: the rerun and the run of a whole plan, siblings on
//! [`QueueService`] (each one statement, one round trip; `queue.rs` holds
//! what they share), and reading executions and results back.

pub mod cancel;
pub mod catalog;
pub mod flakiness;
pub mod plans;
pub mod queue;
pub mod reads;
pub mod rerun;
pub mod run;

pub use reads::ReadService;

pub use queue::{QueueContext, QueueOutcome, QueueService, QueuedPair};
pub use rerun::{RerunAccepted, RerunOutcome, SkippedPair};
pub use run::{RunAccepted, RunOutcome};
