//! The refusals of the server functions `queue_rerun` and `queue_run`
//! (`src/db/functions/`): a failed check comes back as a code of the
//! contract's error table and its arguments, parsed here into one variant
//! per code. Its wording as the contract's error is
//! `crate::domain::refusal` (`Refused::error`; the texts themselves are
//! `ApiError`'s, in `src/error.rs`).
//!
//! A code the SQL can return and this enum does not map fails the test
//! `every_code_the_server_functions_return_is_a_refusal`
//! (`src/domain/refusal.rs`). Adding a
//! refusal code: see "Adding a refusal code" in `docs/ARCHITECTURE.md`.

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
    /// 1023: the request names another framework type than the plan's own,
    /// `plan_framework_type` (section 20).
    FrameworkTypeMismatch { plan_framework_type: String },
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
    /// 1003: the framework type that is not configured; 1023: the plan's.
    pub framework_type: Option<String>,
}

/// A code no variant of [`Refusal`] stands for: the server functions and
/// this enum disagree (a defect, answered as 500 code 1099).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a server function answered the unknown refusal code {0}")]
pub struct UnknownRefusal(pub i32);

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
            1023 => Refusal::FrameworkTypeMismatch {
                plan_framework_type: args.framework_type.unwrap_or_default(),
            },
            other => return Err(UnknownRefusal(other)),
        })
    }
}
