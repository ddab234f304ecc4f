//! Use cases, each in one database transaction: the rerun, and the run of a
//! whole plan.

pub mod rerun;
pub mod run;

pub use rerun::{QueuedPair, RerunAccepted, RerunContext, RerunOutcome, RerunService, SkippedPair};
pub use run::{RunAccepted, RunOutcome};
