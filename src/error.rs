//! The error answers of the HTTP API and the `{data, result}` envelope.
//!
//! Codes, HTTP statuses and messages come from the error table of
//! `docs/CONTRACT.md`; the texts of 1000, 1002 and 1006 are the original
//! API page's, byte for byte. This is the one place that maps failures to
//! statuses (the `From` impls below, like crates.io's `src/util/errors.rs`):
//! the layers below return their own typed errors, a database that cannot be
//! reached becomes 503 code 1011, anything unexpected an opaque 500 code 1099
//! whose cause is only logged.

use crate::db::catalog::CatalogError;
use crate::db::{staleness, DbUnavailable};
use crate::idempotency::{InvalidKey, KeyError};
use crate::relay::upkeep::OutboxFull;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// The `result` part of every answer: `{"code": 0, "message": "success"}` on success.
#[derive(Debug, Serialize, serde::Deserialize, Clone, PartialEq, utoipa::ToSchema)]
pub struct ApiResult {
    /// 0 on success, else the code of the contract's error table.
    pub code: u16,
    /// `success`, or the error's message.
    pub message: String,
}

/// The body of every answer: `{"data": …, "result": {"code", "message"}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Envelope<T: Serialize> {
    /// The answer; null on errors.
    pub data: Option<T>,
    pub result: ApiResult,
}

impl<T: Serialize> Envelope<T> {
    /// A success envelope (`code` 0, `message` "success") around `data`.
    pub fn success(data: T) -> Self {
        Envelope {
            data: Some(data),
            result: ApiResult {
                code: 0,
                message: "success".to_owned(),
            },
        }
    }
}

/// Every failure the API answers with; see the contract's error table.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401, code 1009. `token_sent` is false when no bearer token came at all.
    #[error("Full authentication is required to access this resource")]
    Unauthorized { token_sent: bool },
    /// 400, code 1001: malformed JSON, wrong type, id ≤ 0, unknown field.
    #[error("Invalid request: {0}")]
    InvalidRequest(String),
    /// 413, code 1001.
    #[error("Invalid request: body larger than {0} bytes")]
    BodyTooLarge(usize),
    /// 415, code 1001.
    #[error("Invalid request: content type must be application/json, got {0}")]
    UnsupportedMediaType(String),
    /// 408, code 1001: the body did not arrive within the read timeout.
    #[error("Invalid request: body not received within {0} ms")]
    BodyTimeout(u128),
    /// 431, code 1001: header names and values over `HEADER_LIMIT_BYTES`.
    #[error("Invalid request: headers larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// 404, code 1001.
    #[error("Invalid request: no resource at {0}")]
    NotFound(String),
    /// 405, code 1001, with `Allow: <allow>` (the methods the resource serves).
    #[error("Invalid request: method {method} is not allowed here")]
    MethodNotAllowed { method: String, allow: &'static str },
    /// 400, code 1006: a mandatory field is missing; the text names it
    /// (original API page).
    #[error("{0}")]
    Mandatory(&'static str),
    /// 400, code 1003.
    #[error("frameworkType {0} is not supported")]
    UnsupportedFrameworkType(String),
    /// 400, code 1007.
    #[error(
        "Duplicate scenarioEnvironmentPair: scenario {scenario_id} on environment {environment_id}"
    )]
    DuplicatePair {
        scenario_id: i64,
        environment_id: i64,
    },
    /// 400, code 1008.
    #[error("Too many scenarioEnvironmentPairs: {count} (limit {max})")]
    TooManyPairs { count: usize, max: usize },
    /// 403, code 1010.
    #[error("Access denied: {0}")]
    AccessDenied(String),
    /// 400, code 1000 (original API page).
    #[error("Plan not found!")]
    PlanNotFound,
    /// 400, code 1002 (original API page): unknown or inactive user.
    #[error("User not found!")]
    UserNotFound,
    /// 400, code 1004.
    #[error("Plan {0} has no executed results to rerun")]
    NoExecutedResults(i64),
    /// 400, code 1005. `environment_id` is `None` for a pair without
    /// `environmentId` whose scenario did not run at all; the text then says "any".
    #[error("Scenario {scenario_id} on environment {} is not in the last executed results of plan {plan_id}",
        environment_id.map_or_else(|| "any".to_owned(), |e| e.to_string()))]
    PairNotInLastRun {
        plan_id: i64,
        scenario_id: i64,
        environment_id: Option<i64>,
    },
    /// 409, code 1014: a run of a plan while a pair of its consolidated
    /// results is in flight, without `force` (contract, section 7).
    #[error("Plan {plan_id} is already running (execution {execution_id})")]
    PlanInFlight { plan_id: i64, execution_id: i64 },
    /// 409, code 1014: a rerun of an in-flight pair with `onInFlight`
    /// `refuse`, or with `skip` when every pair would be skipped (section 8).
    #[error("Scenario {scenario_id} on environment {environment_id} is already queued or running (execution {execution_id})")]
    PairInFlight {
        scenario_id: i64,
        environment_id: i64,
        execution_id: i64,
    },
    /// 400, code 1015: the attempt to queue would exceed `MAX_ATTEMPTS` (section 8).
    #[error("Scenario {scenario_id} on environment {environment_id} reached the limit of {max} attempts")]
    AttemptLimit {
        scenario_id: i64,
        environment_id: i64,
        max: i32,
    },
    /// 400, code 1016: `statuses` selects nothing; `statuses` is the list as
    /// asked, comma-separated (section 8).
    #[error("No pair of the last executed results of plan {plan_id} has status {statuses}")]
    NoPairWithStatus { plan_id: i64, statuses: String },
    /// 404, code 1017 (section 11); also for an execution the caller may not see.
    #[error("Execution {0} not found")]
    ExecutionNotFound(i64),
    /// 400, code 1018: no scenario or no environment to run (section 7).
    #[error("Plan {0} has nothing to run")]
    NothingToRun(i64),
    /// 400, code 1019: a run's subset names a scenario the plan lacks (section 7).
    #[error("Scenario {scenario_id} is not in plan {plan_id}")]
    ScenarioNotInPlan { scenario_id: i64, plan_id: i64 },
    /// 400, code 1019: a run's subset names an environment the plan lacks (section 7).
    #[error("Environment {environment_id} is not in plan {plan_id}")]
    EnvironmentNotInPlan { environment_id: i64, plan_id: i64 },
    /// 400, code 1023: a run or rerun names another framework type than
    /// the plan's own; its messages would reach a queue no runner of the plan
    /// reads (contract, section 20).
    #[error("Plan {plan_id} runs on {plan_framework_type}, not {asked}")]
    FrameworkTypeMismatch {
        plan_id: i64,
        plan_framework_type: String,
        asked: String,
    },
    /// 400, code 1022: a run's or rerun's `callbackUrl` names a host that
    /// `CALLBACK_ALLOWED_HOSTS` does not list (contract, section 21).
    #[error("callbackUrl host {0} is not allowed")]
    CallbackHostNotAllowed(String),
    /// 412, code 1021: a catalogue write's `If-Match` is not the entity's
    /// current version (contract, section 20); nothing changed.
    #[error("Version mismatch: current version is {0}")]
    VersionMismatch(i64),
    /// 404, code 1001: a catalogue entity never written (section 20).
    #[error("Invalid request: {entity} {id} is not in the catalogue")]
    NotInCatalogue { entity: &'static str, id: i64 },
    /// 404, code 1000 (the original API page's text): a plan the read
    /// endpoints do not know, or that the caller may not see (section 11).
    #[error("Plan not found!")]
    PlanNotFoundToRead,
    /// 409, code 1020: a cancel of an execution with nothing in flight
    /// (contract, section 16).
    #[error("Execution {0} is already finished")]
    ExecutionAlreadyFinished(i64),
    /// 409, code 1020: a cancel of a plan with nothing in flight (section 16).
    #[error("Plan {0} has nothing in flight")]
    NothingInFlight(i64),
    /// 422, code 1012.
    #[error("Idempotency-Key reused with a different request")]
    IdempotencyKeyReused,
    /// 409, code 1013.
    #[error("A request with this Idempotency-Key is still being processed")]
    IdempotencyKeyInFlight,
    /// 503, code 1011, with `Retry-After`; the text names the dependency.
    #[error("Service unavailable: {0}")]
    Unavailable(&'static str),
    /// 500, code 1099; the cause is logged, never sent.
    #[error("INTERNAL_SERVER_ERROR")]
    Unexpected(#[from] anyhow::Error),
}

impl ApiError {
    /// 400, code 1006 for a run (or rerun) that names no framework type,
    /// the original API page's text.
    pub fn framework_type_mandatory() -> Self {
        ApiError::Mandatory("frameworkType is mandatory")
    }

    /// 403, code 1010 for a user who is not a member of the plan's project
    /// (contract, section 4).
    pub fn not_a_member(plan_id: i64, user_id: i64) -> Self {
        ApiError::AccessDenied(format!(
            "user {user_id} is not a member of the project of plan {plan_id}"
        ))
    }

    /// The application code of the contract's error table.
    pub fn code(&self) -> u16 {
        use ApiError::*;
        match self {
            Unauthorized { .. } => 1009,
            InvalidRequest(_)
            | BodyTooLarge(_)
            | UnsupportedMediaType(_)
            | BodyTimeout(_)
            | HeadersTooLarge(_)
            | NotFound(_)
            | MethodNotAllowed { .. }
            | NotInCatalogue { .. } => 1001,
            Mandatory(_) => 1006,
            UnsupportedFrameworkType(_) => 1003,
            DuplicatePair { .. } => 1007,
            TooManyPairs { .. } => 1008,
            AccessDenied(_) => 1010,
            PlanNotFound | PlanNotFoundToRead => 1000,
            UserNotFound => 1002,
            NoExecutedResults(_) => 1004,
            PairNotInLastRun { .. } => 1005,
            IdempotencyKeyReused => 1012,
            IdempotencyKeyInFlight => 1013,
            PlanInFlight { .. } | PairInFlight { .. } => 1014,
            AttemptLimit { .. } => 1015,
            NoPairWithStatus { .. } => 1016,
            ExecutionNotFound(_) => 1017,
            NothingToRun(_) => 1018,
            ScenarioNotInPlan { .. } | EnvironmentNotInPlan { .. } => 1019,
            ExecutionAlreadyFinished(_) | NothingInFlight(_) => 1020,
            FrameworkTypeMismatch { .. } => 1023,
            VersionMismatch(_) => 1021,
            CallbackHostNotAllowed(_) => 1022,
            Unavailable(_) => 1011,
            Unexpected(_) => 1099,
        }
    }

    /// The `{data: null, result}` envelope of this error.
    pub fn envelope(&self) -> Envelope<()> {
        Envelope {
            data: None,
            result: ApiResult {
                code: self.code(),
                message: self.to_string(),
            },
        }
    }
}

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECS: u32 = 2;

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        use ApiError::*;
        match self {
            Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            NotFound(_) | ExecutionNotFound(_) | PlanNotFoundToRead | NotInCatalogue { .. } => {
                StatusCode::NOT_FOUND
            }
            VersionMismatch(_) => StatusCode::PRECONDITION_FAILED,
            MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            AccessDenied(_) => StatusCode::FORBIDDEN,
            IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            IdempotencyKeyInFlight | PlanInFlight { .. } | PairInFlight { .. } => {
                StatusCode::CONFLICT
            }
            ExecutionAlreadyFinished(_) | NothingInFlight(_) => StatusCode::CONFLICT,
            Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Unexpected(cause) = self {
            log::error!("internal error: {cause:#}");
        }
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unauthorized { token_sent } => {
                let challenge = if *token_sent {
                    r#"Bearer error="invalid_token""#
                } else {
                    "Bearer"
                };
                response.insert_header((header::WWW_AUTHENTICATE, challenge));
            }
            ApiError::Unavailable(_) => {
                response.insert_header((header::RETRY_AFTER, RETRY_AFTER_SECS.to_string()));
            }
            ApiError::MethodNotAllowed { allow, .. } => {
                response.insert_header((header::ALLOW, *allow));
            }
            _ => {}
        }
        response.json(self.envelope())
    }
}

/// The database is unreachable, its pool exhausted or closed: 503 code
/// 1011, logged at warn.
impl From<DbUnavailable> for ApiError {
    fn from(e: DbUnavailable) -> Self {
        log::warn!("{e}");
        ApiError::Unavailable("database")
    }
}

/// A stale connection ([`staleness`]: lost, read-only, a changed result
/// type) is the database's failure, 503 code 1011; any other failure is
/// 500 code 1099.
impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        if staleness(&e).is_some() {
            // logged by `with_connection`, which discards the connection
            ApiError::Unavailable("database")
        } else {
            ApiError::Unexpected(anyhow::Error::new(e).context("database query failed"))
        }
    }
}

/// A catalogue refusal (contract, section 20): 412 code 1021 for a stale
/// version, 400 code 1001 naming the entity and id for any other; the
/// database's failure as any query's.
impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::VersionMismatch(current) => ApiError::VersionMismatch(current),
            CatalogError::Database(e) => e.into(),
            refused => ApiError::InvalidRequest(refused.to_string()),
        }
    }
}

/// 400 code 1001 with the key's rule.
impl From<InvalidKey> for ApiError {
    fn from(e: InvalidKey) -> Self {
        ApiError::InvalidRequest(e.to_string())
    }
}

/// 409 code 1013 while the key is held, 422 code 1012 for another request.
impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::InFlight => ApiError::IdempotencyKeyInFlight,
            KeyError::Reused => ApiError::IdempotencyKeyReused,
            KeyError::Database(e) => e.into(),
            KeyError::Unexpected(e) => ApiError::Unexpected(e),
        }
    }
}

/// 503 code 1011 `Service unavailable: outbox`.
impl From<OutboxFull> for ApiError {
    fn from(_: OutboxFull) -> Self {
        ApiError::Unavailable("outbox")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_idempotency_key_is_code_1001() {
        let err = ApiError::from(InvalidKey);
        assert_eq!(err.code(), 1001);
        assert_eq!(
            err.to_string(),
            "Invalid request: Idempotency-Key must be 1 to 255 printable ASCII characters"
        );
    }

    #[test]
    fn original_api_texts_are_kept_byte_for_byte() {
        assert_eq!(ApiError::PlanNotFound.to_string(), "Plan not found!");
        assert_eq!(ApiError::UserNotFound.to_string(), "User not found!");
        assert_eq!(
            ApiError::Mandatory("frameworkType is mandatory").to_string(),
            "frameworkType is mandatory"
        );
    }

    #[test]
    fn a_pair_without_environment_says_any() {
        let err = ApiError::PairNotInLastRun {
            plan_id: 614,
            scenario_id: 999,
            environment_id: None,
        };
        assert_eq!(
            err.to_string(),
            "Scenario 999 on environment any is not in the last executed results of plan 614"
        );
        assert_eq!(err.code(), 1005);
    }

    #[test]
    fn internal_errors_never_show_their_cause() {
        let err = ApiError::from(anyhow::anyhow!("relation \"plans\" does not exist"));
        let body = serde_json::to_string(&err.envelope()).unwrap();
        assert!(!body.contains("relation"), "{body}");
        assert_eq!(err.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
