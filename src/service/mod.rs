//! Use cases: the rerun, in one database transaction; reading executions and
//! results back.

pub mod reads;
pub mod rerun;

pub use reads::ReadService;
pub use rerun::{QueuedPair, RerunAccepted, RerunContext, RerunOutcome, RerunService};
