//! Use cases: the rerun and the run of a whole plan (each one statement,
//! one round trip), and reading executions and results back.

pub mod cancel;
pub mod reads;
pub mod rerun;
pub mod run;

pub use reads::ReadService;

pub use rerun::{QueuedPair, RerunAccepted, RerunContext, RerunOutcome, RerunService, SkippedPair};
pub use run::{RunAccepted, RunOutcome};
