//! Use cases, each in one database transaction: the rerun, the run of a
//! whole plan, and reading executions and results back.

pub mod reads;
pub mod rerun;
pub mod run;

pub use reads::ReadService;

use crate::db::queries::Access;
use crate::error::ApiError;

/// The checks of a run and a rerun after the token's (contract, sections 1
/// and 7, in this order): 1000 unknown plan, 1002 unknown or inactive user,
/// 1010 user not a member of the plan's project.
fn check_access(access: Access, plan_id: i64, user_id: i64) -> Result<(), ApiError> {
    if !access.plan_found {
        return Err(ApiError::PlanNotFound);
    }
    if !access.user_active {
        return Err(ApiError::UserNotFound);
    }
    if !access.member {
        return Err(ApiError::AccessDenied(format!(
            "user {user_id} is not a member of the project of plan {plan_id}"
        )));
    }
    Ok(())
}
pub use rerun::{QueuedPair, RerunAccepted, RerunContext, RerunOutcome, RerunService, SkippedPair};
pub use run::{RunAccepted, RunOutcome};
