//! The refusals of the server functions ([`Refusal`], defined in
//! `crate::rules`) worded as the contract's errors: [`Refused::error`]
//! with what the request said ([`Refused`]); the texts themselves are
//! `ApiError`'s, in `src/error.rs`.

use crate::error::ApiError;
use crate::rules::Refusal;

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
    /// The body's framework type, normalised (1023); `None` when it names none.
    pub framework_type: Option<&'a str>,
}

impl Refused<'_> {
    /// The contract's error for `refusal` of this request: its code, HTTP
    /// status and message (`ApiError`). A method of the request, so that the
    /// wording, which needs `ApiError`, stays in the domain while
    /// [`Refusal`] itself is in `crate::rules`, which uses nothing.
    pub fn error(&self, refusal: Refusal) -> ApiError {
        let request = self;
        let plan_id = request.plan_id;
        match refusal {
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
            Refusal::FrameworkTypeMismatch {
                plan_framework_type,
            } => ApiError::FrameworkTypeMismatch {
                plan_id,
                plan_framework_type,
                asked: request.framework_type.unwrap_or_default().to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{RefusalArgs, UnknownRefusal};
    use std::collections::BTreeSet;

    fn request() -> Refused<'static> {
        Refused {
            plan_id: 614,
            user_id: 13,
            max_pairs: 50,
            max_attempts: 10,
            statuses: &[],
            framework_type: None,
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
        let pair = request().error(Refusal::parse(1014, args).unwrap());
        assert_eq!(
            pair.to_string(),
            "Scenario 111 on environment 223 is already queued or running (execution 5012)"
        );
        let plan = request().error(
            Refusal::parse(
                1014,
                RefusalArgs {
                    execution_id: Some(5012),
                    ..RefusalArgs::default()
                },
            )
            .unwrap(),
        );
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
            request()
                .error(Refusal::parse(1019, environment).unwrap())
                .to_string(),
            "Environment 301 is not in plan 614"
        );
        let unrun = RefusalArgs {
            scenario_id: Some(999),
            ..RefusalArgs::default()
        };
        assert_eq!(
            request()
                .error(Refusal::parse(1005, unrun).unwrap())
                .to_string(),
            "Scenario 999 on environment any is not in the last executed results of plan 614"
        );
    }

    /// Every code of the contract's table (10xx) that the server functions'
    /// SQL spells outside comments: the codes they can return.
    fn codes_in_sql() -> BTreeSet<i32> {
        let mut codes = BTreeSet::new();
        let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/src/db/functions");
        for file in std::fs::read_dir(folder).expect("src/db/functions") {
            let source = std::fs::read_to_string(file.expect("a file").path()).expect("SQL");
            for line in source.lines() {
                let code = line.split("--").next().unwrap_or_default();
                for word in code.split(|c: char| !c.is_ascii_digit()) {
                    if word.len() == 4 && word.starts_with("10") {
                        codes.insert(word.parse().expect("four digits"));
                    }
                }
            }
        }
        codes
    }

    #[test]
    fn every_code_the_server_functions_return_is_a_refusal() {
        let request = Refused {
            plan_id: 614,
            user_id: 13,
            max_pairs: 50,
            max_attempts: 10,
            statuses: &[],
            framework_type: None,
        };
        let codes = codes_in_sql();
        assert!(codes.len() >= 14, "codes found in the SQL: {codes:?}");
        for code in codes {
            let refusal = Refusal::parse(code, RefusalArgs::default())
                .unwrap_or_else(|e| panic!("{e}: add its variant to Refusal"));
            assert_eq!(
                i32::from(request.error(refusal).code()),
                code,
                "code {code} is worded as another code"
            );
        }
    }

    #[test]
    fn every_refusal_is_a_code_the_server_functions_return() {
        let codes = codes_in_sql();
        let both = |subject: &str| RefusalArgs {
            scenario_id: Some(1),
            subject: Some(subject.to_owned()),
            ..RefusalArgs::default()
        };
        for code in 1000..1100 {
            for args in [RefusalArgs::default(), both("environment")] {
                if Refusal::parse(code, args).is_ok() {
                    assert!(codes.contains(&code), "{code} is never returned by the SQL");
                }
            }
        }
    }
}
