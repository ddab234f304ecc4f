//! Use cases: the rerun and the run of a whole plan (each one statement,
//! one round trip), and reading executions and results back.

pub mod plans;
pub mod reads;
pub mod rerun;
pub mod run;

pub use reads::ReadService;

use crate::error::ApiError;

/// 1010 for a user who is not a member of the plan's project (section 4).
fn not_a_member(plan_id: i64, user_id: i64) -> ApiError {
    ApiError::AccessDenied(format!(
        "user {user_id} is not a member of the project of plan {plan_id}"
    ))
}
pub use rerun::{QueuedPair, RerunAccepted, RerunContext, RerunOutcome, RerunService, SkippedPair};
pub use run::{RunAccepted, RunOutcome};
