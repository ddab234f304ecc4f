//! The refusals of the server functions `queue_rerun` and `queue_run`
//! (`src/db/functions/`): a failed check comes back as a code of the
//! contract's error table and its arguments, parsed here into one variant
//! per code and worded as the contract's error ([`Refusal::into_error`]; the
//! texts themselves are `ApiError`'s, in `src/error.rs`).
//!
//! A code the SQL can return and this enum does not map fails the test
//! `every_code_the_server_functions_return_is_a_refusal`
//! (`src/db/functions.rs`). Adding a
//! refusal code: see "Adding a refusal code" in `docs/ARCHITECTURE.md`.

use crate::error::ApiError;

/// A check a server function refused, with what the contract's message
/// names. Codes and texts: the contract's error table (1000 to 1008 from
/// the original API page, 1010 to 1019 from the contract's sections 4, 7
/// and 8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 1000: no such plan.
    PlanNotFound,
    /// 1002: no such user, or an inactive one.
    UserNotFound,
    /// 1010: the user is not a member of the plan's project (section 4).
    NotAMember,
    /// 1004: the plan never ran (no source run).
    NoExecutedResults,
    /// 1005: a named pair did not run in the source run; `environment_id`
    /// `None` for a pair without one whose scenario did not run at all.
    PairNotInLastRun {
        scenario_id: i64,
        environment_id: Option<i64>,
    },
    /// 1007: a pair named twice after expansion.
    DuplicatePair {
        scenario_id: i64,
        environment_id: i64,
    },
    /// 1008: more pairs than `MAX_PAIRS`; `count` after expansion.
    TooManyPairs { count: i64 },
    /// 1016: `statuses` select no pair (section 8).
    NoPairWithStatus,
    /// 1014 of a rerun: the pair is in flight in `execution_id` (section 8).
    PairInFlight {
        scenario_id: i64,
        environment_id: i64,
        execution_id: i64,
    },
    /// 1015: the attempt would exceed `MAX_ATTEMPTS` (section 8).
    AttemptLimit {
        scenario_id: i64,
        environment_id: i64,
    },
    /// 1006: neither the body nor the plan names a framework type (section 7).
    FrameworkTypeMissing,
    /// 1003: the plan's framework type is not configured (section 13).
    UnsupportedFrameworkType { framework_type: String },
    /// 1019: a run's subset names a scenario the plan lacks (section 7).
    ScenarioNotInPlan { scenario_id: i64 },
    /// 1019: a run's subset names an environment the plan lacks (section 7).
    EnvironmentNotInPlan { environment_id: i64 },
    /// 1018: the plan has no scenario or no environment to run (section 7).
    NothingToRun,
    /// 1014 of a run: a pair of the plan's results is in flight in
    /// `execution_id` (section 7).
    PlanInFlight { execution_id: i64 },
}

/// The arguments a server function returns with a code (its `error_*`
/// columns); `None` where it returns none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefusalArgs {
    pub scenario_id: Option<i64>,
    pub environment_id: Option<i64>,
    pub execution_id: Option<i64>,
    pub count: Option<i64>,
    /// 1019: `scenario` or `environment`.
    pub subject: Option<String>,
    /// 1019: the id of `subject`.
    pub id: Option<i64>,
    /// 1003: the framework type that is not configured.
    pub framework_type: Option<String>,
}

/// A code no variant of [`Refusal`] stands for: the server functions and
/// this enum disagree (a defect, answered as 500 code 1099).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a server function answered the unknown refusal code {0}")]
pub struct UnknownRefusal(pub i32);

/// What the request said that a refusal's message names.
#[derive(Debug, Clone, Copy)]
pub struct Refused<'a> {
    pub plan_id: i64,
    pub user_id: i64,
    /// `MAX_PAIRS` (1008).
    pub max_pairs: usize,
    /// `MAX_ATTEMPTS` (1015).
    pub max_attempts: i32,
    /// The rerun's `statuses` as asked (1016).
    pub statuses: &'a [String],
}

impl Refusal {
    /// The variant of `code` with its `args`. 1014 is a pair in flight when
    /// the function names the pair (`queue_rerun`), else the plan
    /// (`queue_run`); 1019 names an environment when `subject` says so, else
    /// a scenario. A missing argument reads as 0.
    ///
    /// Errors: [`UnknownRefusal`] for a code no variant stands for.
    pub fn parse(code: i32, args: RefusalArgs) -> Result<Refusal, UnknownRefusal> {
        let scenario_id = args.scenario_id.unwrap_or_default();
        let environment_id = args.environment_id.unwrap_or_default();
        let execution_id = args.execution_id.unwrap_or_default();
        Ok(match code {
            1000 => Refusal::PlanNotFound,
            1002 => Refusal::UserNotFound,
            1010 => Refusal::NotAMember,
            1004 => Refusal::NoExecutedResults,
            1005 => Refusal::PairNotInLastRun {
                scenario_id,
                environment_id: args.environment_id,
            },
            1007 => Refusal::DuplicatePair {
                scenario_id,
                environment_id,
            },
            1008 => Refusal::TooManyPairs {
                count: args.count.unwrap_or_default(),
            },
            1016 => Refusal::NoPairWithStatus,
            1014 if args.scenario_id.is_some() => Refusal::PairInFlight {
                scenario_id,
                environment_id,
                execution_id,
            },
            1014 => Refusal::PlanInFlight { execution_id },
            1015 => Refusal::AttemptLimit {
                scenario_id,
                environment_id,
            },
            1006 => Refusal::FrameworkTypeMissing,
            1003 => Refusal::UnsupportedFrameworkType {
                framework_type: args.framework_type.unwrap_or_default(),
            },
            1019 if args.subject.as_deref() == Some("environment") => {
                Refusal::EnvironmentNotInPlan {
                    environment_id: args.id.unwrap_or_default(),
                }
            }
            1019 => Refusal::ScenarioNotInPlan {
                scenario_id: args.id.unwrap_or_default(),
            },
            1018 => Refusal::NothingToRun,
            other => return Err(UnknownRefusal(other)),
        })
    }

    /// The contract's error for this refusal of `request`: its code, HTTP
    /// status and message (`ApiError`).
    pub fn into_error(self, request: &Refused) -> ApiError {
        let plan_id = request.plan_id;
        match self {
            Refusal::PlanNotFound => ApiError::PlanNotFound,
            Refusal::UserNotFound => ApiError::UserNotFound,
            Refusal::NotAMember => ApiError::not_a_member(plan_id, request.user_id),
            Refusal::NoExecutedResults => ApiError::NoExecutedResults(plan_id),
            Refusal::PairNotInLastRun {
                scenario_id,
                environment_id,
            } => ApiError::PairNotInLastRun {
                plan_id,
                scenario_id,
                environment_id,
            },
            Refusal::DuplicatePair {
                scenario_id,
                environment_id,
            } => ApiError::DuplicatePair {
                scenario_id,
                environment_id,
            },
            Refusal::TooManyPairs { count } => ApiError::TooManyPairs {
                count: usize::try_from(count).unwrap_or_default(),
                max: request.max_pairs,
            },
            Refusal::NoPairWithStatus => ApiError::NoPairWithStatus {
                plan_id,
                statuses: request.statuses.join(","),
            },
            Refusal::PairInFlight {
                scenario_id,
                environment_id,
                execution_id,
            } => ApiError::PairInFlight {
                scenario_id,
                environment_id,
                execution_id,
            },
            Refusal::AttemptLimit {
                scenario_id,
                environment_id,
            } => ApiError::AttemptLimit {
                scenario_id,
                environment_id,
                max: request.max_attempts,
            },
            Refusal::FrameworkTypeMissing => ApiError::framework_type_mandatory(),
            Refusal::UnsupportedFrameworkType { framework_type } => {
                ApiError::UnsupportedFrameworkType(framework_type)
            }
            Refusal::ScenarioNotInPlan { scenario_id } => ApiError::ScenarioNotInPlan {
                scenario_id,
                plan_id,
            },
            Refusal::EnvironmentNotInPlan { environment_id } => ApiError::EnvironmentNotInPlan {
                environment_id,
                plan_id,
            },
            Refusal::NothingToRun => ApiError::NothingToRun(plan_id),
            Refusal::PlanInFlight { execution_id } => ApiError::PlanInFlight {
                plan_id,
                execution_id,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Refused<'static> {
        Refused {
            plan_id: 614,
            user_id: 13,
            max_pairs: 50,
            max_attempts: 10,
            statuses: &[],
        }
    }

    #[test]
    fn an_unknown_code_is_not_a_refusal() {
        assert_eq!(
            Refusal::parse(1099, RefusalArgs::default()),
            Err(UnknownRefusal(1099))
        );
    }

    #[test]
    fn the_arguments_reach_the_contract_s_message() {
        let args = RefusalArgs {
            scenario_id: Some(111),
            environment_id: Some(223),
            execution_id: Some(5012),
            ..RefusalArgs::default()
        };
        let pair = Refusal::parse(1014, args).unwrap().into_error(&request());
        assert_eq!(
            pair.to_string(),
            "Scenario 111 on environment 223 is already queued or running (execution 5012)"
        );
        let plan = Refusal::parse(
            1014,
            RefusalArgs {
                execution_id: Some(5012),
                ..RefusalArgs::default()
            },
        )
        .unwrap()
        .into_error(&request());
        assert_eq!(
            plan.to_string(),
            "Plan 614 is already running (execution 5012)"
        );
        let environment = RefusalArgs {
            subject: Some("environment".to_owned()),
            id: Some(301),
            ..RefusalArgs::default()
        };
        assert_eq!(
            Refusal::parse(1019, environment)
                .unwrap()
                .into_error(&request())
                .to_string(),
            "Environment 301 is not in plan 614"
        );
        let unrun = RefusalArgs {
            scenario_id: Some(999),
            ..RefusalArgs::default()
        };
        assert_eq!(
            Refusal::parse(1005, unrun)
                .unwrap()
                .into_error(&request())
                .to_string(),
            "Scenario 999 on environment any is not in the last executed results of plan 614"
        );
    }
}
