//! Use cases: the rerun, in one database transaction.

pub mod rerun;

pub use rerun::{QueuedPair, RerunAccepted, RerunContext, RerunOutcome, RerunService};
