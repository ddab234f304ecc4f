//! Parsing and validating the body of `POST /queue/rerun`.
//!
//! Every rule, code and message comes from section 1 of `docs/CONTRACT.md`;
//! the texts of code 1006 are the original API page's. Checks run in the
//! contract's order: malformed input (1001), then missing fields (1006), then
//! framework type (1003), duplicates (1007) and the pair limit (1008). Checks
//! that need the database (1000, 1002, 1004, 1005, and 1007/1008 after
//! expansion) belong to the rerun service.

use super::retry::RetryFailed;
use crate::error::ApiError;
use crate::rules::PairStatus;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;

/// A positive id of the API (`planId`, `userId`, `scenarioId`, `environmentId`):
/// a JSON integer from 1 to 2^63 − 1. Floats, strings and anything ≤ 0 are 1001.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Id(i64);

impl Id {
    /// `value` as an id, if it is at least 1.
    pub fn new(value: i64) -> Option<Id> {
        (value >= 1).then_some(Id(value))
    }

    /// The id as stored in PostgreSQL (`BIGINT`).
    pub fn get(self) -> i64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an integer id from 1 to 9223372036854775807")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                match i64::try_from(v) {
                    Ok(id) if id >= 1 => Ok(Id(id)),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Id, E> {
                if v >= 1 {
                    Ok(Id(v))
                } else {
                    Err(E::invalid_value(de::Unexpected::Signed(v), &self))
                }
            }
        }
        deserializer.deserialize_any(IdVisitor)
    }
}

impl utoipa::PartialSchema for Id {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
            .minimum(Some(1))
            .description(Some(
                "A positive id; 0, negatives, floats and strings are code 1001",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Id {}

/// The body of `POST /queue/rerun` (contract, section 1). Every field is
/// optional in Rust so that a missing or null mandatory field is told apart
/// (1006) from a malformed one (1001); the OpenAPI schema states the valid
/// body (mandatory fields non-null, null only where it means absent).
/// Unknown fields and duplicate keys are refused (1001).
// Public only for the OpenAPI document, where it is `RerunRequestBody`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = RerunRequestBody)]
pub struct RawRerunRequest {
    /// Required (else 1006 `planId is mandatory`).
    #[schema(required = true, nullable = false)]
    plan_id: Option<Id>,
    /// Required (else 1006): the user who triggers the rerun; must be the
    /// token's subject unless the token holds QUEUE_ADMIN.
    #[schema(required = true, nullable = false)]
    user_id: Option<Id>,
    /// Required and not blank (else 1006), case-insensitive, one of the
    /// configured framework types (else 1003); normalised to upper case; the
    /// AMQP routing key.
    #[schema(required = true, nullable = false, pattern = r"\S", example = "APPIUM")]
    framework_type: Option<String>,
    /// At least one pair (else 1006), none twice (1007), at most MAX_PAIRS (1008).
    scenario_environment_pairs: Option<Vec<RawPair>>,
    /// Shorthand for one pair, only when `scenarioEnvironmentPairs` is absent.
    scenario_id: Option<Id>,
    /// With the top-level `scenarioId`: the environment of the one pair.
    /// Absent: every environment the scenario ran on; `null` is 1001.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    environment_id: Option<Id>,
    /// Validate and answer what would be queued (every `messageId` null);
    /// write and publish nothing. Default false; `null` is 1001.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    dry_run: Option<bool>,
    /// Select every pair of the source run whose current status (its latest
    /// attempt's) is one of these, instead of naming pairs (section 8). At
    /// least one; not with `scenarioEnvironmentPairs` or the top-level
    /// `scenarioId` (1001). `null` is 1001.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false, value_type = Option<Vec<CurrentStatus>>, min_items = 1)]
    statuses: Option<Vec<String>>,
    /// What to do with a named pair that is in flight (its latest attempt
    /// `QUEUED` or `RUNNING`): `queue` it again (default), `skip` it (listed
    /// in `data.skipped`; 409 code 1014 when every pair would be skipped) or
    /// `refuse` (409 code 1014). `null` is 1001.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    on_in_flight: Option<OnInFlight>,
    /// Automatic reruns of the execution's `FAILED` and `ERROR` pairs, 0–5
    /// (section 18); wins over the plan's. `null` is 1001.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    retry_failed: Option<RetryFailed>,
    /// Where to POST the `execution.finished` event when the execution
    /// finishes (section 21): `http` or `https`, at most 2048 characters
    /// (else 1001), its host in `CALLBACK_ALLOWED_HOSTS` (else 400 code
    /// 1022). `null` is 1001.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false, example = "https://hooks.example.com/plan-queue")]
    callback_url: Option<String>,
}

/// A terminal status a rerun may select by (`statuses`, section 8).
#[derive(utoipa::ToSchema)]
#[allow(dead_code, clippy::upper_case_acronyms)]
enum CurrentStatus {
    FAILED,
    ERROR,
    ABORTED,
    SKIPPED,
    PASSED,
}

/// The statuses `statuses` may name: the terminal ones (section 8), in the
/// order the error messages list them.
pub const SELECTABLE_STATUSES: [PairStatus; 5] = [
    PairStatus::Failed,
    PairStatus::Error,
    PairStatus::Aborted,
    PairStatus::Skipped,
    PairStatus::Passed,
];

/// What a rerun does with a named pair that is in flight (section 8).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnInFlight {
    /// Queue it again: the behaviour of section 1.
    #[default]
    Queue,
    /// Leave it out and list it in `data.skipped`.
    Skip,
    /// Answer 409 code 1014.
    Refuse,
}

impl OnInFlight {
    fn is_queue(&self) -> bool {
        *self == OnInFlight::Queue
    }
}

/// One `scenarioEnvironmentPairs` item as sent.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = ScenarioEnvironmentPair)]
struct RawPair {
    /// Required (else 1006 `scenarioId is mandatory`).
    #[schema(required = true, nullable = false)]
    scenario_id: Option<Id>,
    /// Absent: every environment the scenario ran on in the source run;
    /// `null` is 1001.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    environment_id: Option<Id>,
}

/// For fields where a `null` would silently widen or commit a request
/// (`environmentId` → every environment, `dryRun` → a real rerun): absent
/// is `None`, a present value must not be `null` (1001, naming the field).
pub(crate) fn not_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// One requested pair; `environment_id: None` means "every environment the
/// scenario ran on in the source run".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestedPair {
    pub scenario_id: i64,
    pub environment_id: Option<i64>,
}

/// A rerun request that passed every check not needing the database.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RerunRequest {
    pub plan_id: i64,
    pub user_id: i64,
    /// Normalised: trimmed and upper-case, one of the configured types.
    pub framework_type: String,
    /// In request order, at least one, none twice, at most `MAX_PAIRS`;
    /// empty when the pairs are selected by `statuses`.
    pub pairs: Vec<RequestedPair>,
    pub dry_run: bool,
    /// Select the source run's pairs whose current status is one of these
    /// (section 8), as asked; empty when pairs are named. Left out of the
    /// normalised form (Idempotency-Key) when empty, so that a request valid
    /// under section 1 normalises as before.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<String>,
    /// What to do with a named pair in flight (section 8).
    #[serde(skip_serializing_if = "OnInFlight::is_queue")]
    pub on_in_flight: OnInFlight,
    /// The body's `retryFailed` (section 18); `None`: the plan's. Left out of
    /// the normalised form when absent, so that an earlier request
    /// normalises as before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_failed: Option<i32>,
    /// The body's `callbackUrl` (section 21), checked by
    /// [`crate::domain::check_callback_url`]; left out of the normalised
    /// form when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callback_url: Option<String>,
}

/// Parses and checks a request body against the contract.
///
/// `framework_types` are the configured (upper-case) types; `max_pairs` is
/// `MAX_PAIRS`. Errors: 1001 for bad JSON or types (and for a bad
/// `statuses`, section 8), 1006 for a missing field, 1003, 1007, 1008 — in
/// that order.
pub fn parse_rerun_request(
    body: &[u8],
    framework_types: &[String],
    max_pairs: usize,
) -> Result<RerunRequest, ApiError> {
    let raw: RawRerunRequest = parse_object(body, pairs_are_objects)?;
    let statuses = checked_statuses(&raw)?;
    let (plan_id, user_id) = mandatory_ids(raw.plan_id, raw.user_id)?;
    let framework_type = normalised_framework_type(raw.framework_type.as_deref())
        .ok_or_else(ApiError::framework_type_mandatory)?;
    let pairs = if statuses.is_empty() {
        requested_pairs(&raw)?
    } else {
        Vec::new()
    };
    if !framework_types.contains(&framework_type) {
        return Err(ApiError::UnsupportedFrameworkType(framework_type));
    }
    check_explicit_duplicates(&pairs)?;
    if pairs.len() > max_pairs {
        return Err(ApiError::TooManyPairs {
            count: pairs.len(),
            max: max_pairs,
        });
    }
    Ok(RerunRequest {
        plan_id,
        user_id,
        framework_type,
        pairs,
        dry_run: raw.dry_run.unwrap_or(false),
        statuses,
        on_in_flight: raw.on_in_flight.unwrap_or_default(),
        retry_failed: raw.retry_failed.map(RetryFailed::get),
        callback_url: raw.callback_url,
    })
}

/// `planId` and `userId`, else 1006 naming the first missing one.
pub(crate) fn mandatory_ids(
    plan_id: Option<Id>,
    user_id: Option<Id>,
) -> Result<(i64, i64), ApiError> {
    let plan_id = plan_id.ok_or(ApiError::Mandatory("planId is mandatory"))?;
    let user_id = user_id.ok_or(ApiError::Mandatory("userId is mandatory"))?;
    Ok((plan_id.get(), user_id.get()))
}

/// A framework type trimmed and in upper case; `None` when absent or blank.
pub(crate) fn normalised_framework_type(given: Option<&str>) -> Option<String> {
    given
        .map(|t| t.trim().to_ascii_uppercase())
        .filter(|t| !t.is_empty())
}

/// The rerun's shape check before types: every `scenarioEnvironmentPairs`
/// item is an object.
fn pairs_are_objects(object: &serde_json::Map<String, serde_json::Value>) -> Result<(), ApiError> {
    if let Some(serde_json::Value::Array(items)) = object.get("scenarioEnvironmentPairs") {
        if let Some(index) = items.iter().position(|item| !item.is_object()) {
            return Err(ApiError::InvalidRequest(format!(
                "scenarioEnvironmentPairs[{index}]: must be an object {{scenarioId, environmentId?}}"
            )));
        }
    }
    Ok(())
}

/// `statuses` as asked (empty when absent): 1001 when it is combined with
/// named pairs or the top-level shorthand, empty, or names a status that is
/// not terminal (`QUEUED`, `RUNNING`: in flight) or not a status at all
/// (section 8).
fn checked_statuses(raw: &RawRerunRequest) -> Result<Vec<String>, ApiError> {
    let Some(statuses) = &raw.statuses else {
        return Ok(Vec::new());
    };
    let invalid = |what: String| Err(ApiError::InvalidRequest(what));
    if raw.scenario_environment_pairs.is_some()
        || raw.scenario_id.is_some()
        || raw.environment_id.is_some()
    {
        return invalid(
            "statuses cannot be combined with scenarioEnvironmentPairs or the top-level scenarioId/environmentId".to_owned(),
        );
    }
    if statuses.is_empty() {
        return invalid("statuses: at least one status is required".to_owned());
    }
    for (index, status) in statuses.iter().enumerate() {
        if statuses[..index].contains(status) {
            return invalid(format!("statuses[{index}]: {status} is named twice"));
        }
        let selectable = PairStatus::names(&SELECTABLE_STATUSES, ", ");
        return match status.parse::<PairStatus>() {
            Ok(named) if SELECTABLE_STATUSES.contains(&named) => continue,
            Ok(_) => invalid(format!(
                "statuses[{index}]: {status} is in flight, not a result; select by {selectable} (and see onInFlight)"
            )),
            Err(_) => invalid(format!(
                "statuses[{index}]: unknown status {status:?}, expected one of {selectable}"
            )),
        };
    }
    Ok(statuses.clone())
}

/// JSON syntax and shape first (object at the top, then `shape`'s check of
/// the object), then types, unknown fields and duplicate keys, each error
/// naming its field (1001).
pub(crate) fn parse_object<T: serde::de::DeserializeOwned>(
    body: &[u8],
    shape: impl FnOnce(&serde_json::Map<String, serde_json::Value>) -> Result<(), ApiError>,
) -> Result<T, ApiError> {
    let invalid = |what: String| ApiError::InvalidRequest(what);
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("malformed JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| invalid("the body must be a JSON object".to_owned()))?;
    if let Some(path) = nul_in(&value, "") {
        return Err(invalid(format!(
            "{path}: text must not contain the NUL character (\\u0000)"
        )));
    }
    shape(object)?;
    let deserializer = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        if path == "." || path.is_empty() {
            invalid(e.inner().to_string())
        } else {
            invalid(format!("{path}: {}", e.inner()))
        }
    })
}

/// The path (`.field`, `[index]`) of the first string or key of `value`
/// holding the NUL character, which PostgreSQL's `text` cannot store: such a
/// body is a client's mistake (1001), never a failed statement (500).
pub(crate) fn nul_in(value: &serde_json::Value, path: &str) -> Option<String> {
    match value {
        serde_json::Value::String(text) if text.contains('\0') => Some(display_path(path)),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_in(item, &format!("{path}[{i}]"))),
        serde_json::Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let path = format!("{path}.{key}");
            if key.contains('\0') {
                Some(display_path(&path))
            } else {
                nul_in(item, &path)
            }
        }),
        _ => None,
    }
}

fn display_path(path: &str) -> String {
    path.strip_prefix('.').unwrap_or(path).to_owned()
}

fn requested_pairs(raw: &RawRerunRequest) -> Result<Vec<RequestedPair>, ApiError> {
    let at_least_one = ApiError::Mandatory("At least one scenarioEnvironmentPair is required");
    match &raw.scenario_environment_pairs {
        Some(list) => {
            if raw.scenario_id.is_some() || raw.environment_id.is_some() {
                return Err(ApiError::InvalidRequest(
                    "top-level scenarioId/environmentId cannot be combined with scenarioEnvironmentPairs".to_owned(),
                ));
            }
            if list.is_empty() {
                return Err(at_least_one);
            }
            list.iter()
                .map(|pair| {
                    Ok(RequestedPair {
                        scenario_id: pair
                            .scenario_id
                            .ok_or(ApiError::Mandatory("scenarioId is mandatory"))?
                            .get(),
                        environment_id: pair.environment_id.map(Id::get),
                    })
                })
                .collect()
        }
        None => match raw.scenario_id {
            Some(scenario_id) => Ok(vec![RequestedPair {
                scenario_id: scenario_id.get(),
                environment_id: raw.environment_id.map(Id::get),
            }]),
            None => Err(at_least_one),
        },
    }
}

fn check_explicit_duplicates(pairs: &[RequestedPair]) -> Result<(), ApiError> {
    let mut seen = HashSet::with_capacity(pairs.len());
    for pair in pairs {
        if let Some(environment_id) = pair.environment_id {
            if !seen.insert((pair.scenario_id, environment_id)) {
                return Err(ApiError::DuplicatePair {
                    scenario_id: pair.scenario_id,
                    environment_id,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types() -> Vec<String> {
        vec!["APPIUM".to_owned(), "JUNIT".to_owned()]
    }

    fn parse(body: &str) -> Result<RerunRequest, ApiError> {
        parse_rerun_request(body.as_bytes(), &types(), 3)
    }

    fn err(body: &str) -> (u16, String) {
        let e = parse(body).unwrap_err();
        (e.code(), e.to_string())
    }

    #[test]
    fn a_valid_request_is_normalised() {
        let r = parse(r#"{"planId":614,"userId":13,"frameworkType":" appium ","scenarioEnvironmentPairs":[{"scenarioId":111,"environmentId":222},{"scenarioId":112}]}"#).unwrap();
        assert_eq!(r.framework_type, "APPIUM");
        assert_eq!(r.pairs.len(), 2);
        assert_eq!(r.pairs[1].environment_id, None);
        assert!(!r.dry_run);
    }

    #[test]
    fn the_top_level_shorthand_makes_one_pair() {
        let r = parse(r#"{"planId":1,"userId":2,"frameworkType":"JUNIT","scenarioId":5,"environmentId":6,"dryRun":true}"#).unwrap();
        assert_eq!(
            r.pairs,
            vec![RequestedPair {
                scenario_id: 5,
                environment_id: Some(6)
            }]
        );
        assert!(r.dry_run);
    }

    #[test]
    fn malformed_input_is_1001_naming_the_problem() {
        for (body, needle) in [
            ("{", "malformed JSON"),
            ("[1,2]", "JSON object"),
            (r#"{"planId":"614"}"#, "planId"),
            (r#"{"planId":0}"#, "planId"),
            (r#"{"planId":-3}"#, "planId"),
            (r#"{"planId":1.5}"#, "planId"),
            (r#"{"planId":1.0}"#, "planId"),
            (r#"{"planId":99999999999999999999999}"#, "planId"),
            (r#"{"planId":1,"planId":2}"#, "duplicate field"),
            (r#"{"planId":1,"rerunAll":true}"#, "rerunAll"),
            (
                r#"{"planId":1,"scenarioEnvironmentPairs":[{"scenarioId":1,"env":2}]}"#,
                "env",
            ),
            (
                r#"{"planId":1,"scenarioEnvironmentPairs":[[1,2]]}"#,
                "scenarioEnvironmentPairs[0]",
            ),
            (r#"{"dryRun":"yes"}"#, "dryRun"),
            (r#"{"dryRun":null}"#, "dryRun"),
            (r#"{"planId":1,"environmentId":null}"#, "environmentId"),
            (
                r#"{"planId":1,"scenarioEnvironmentPairs":[{"scenarioId":1,"environmentId":null}]}"#,
                "scenarioEnvironmentPairs[0].environmentId",
            ),
        ] {
            let (code, message) = err(body);
            assert_eq!(code, 1001, "{body}");
            assert!(message.starts_with("Invalid request: "), "{message}");
            assert!(message.contains(needle), "{body} → {message}");
        }
        assert_eq!(
            parse_rerun_request(b"{\"planId\":\xff}", &types(), 3)
                .unwrap_err()
                .code(),
            1001
        );
    }

    #[test]
    fn missing_fields_are_1006_in_contract_order() {
        assert_eq!(err("{}"), (1006, "planId is mandatory".into()));
        assert_eq!(
            err(r#"{"planId":null,"userId":1}"#),
            (1006, "planId is mandatory".into())
        );
        assert_eq!(err(r#"{"planId":1}"#), (1006, "userId is mandatory".into()));
        assert_eq!(
            err(r#"{"planId":1,"userId":1,"frameworkType":"  "}"#),
            (1006, "frameworkType is mandatory".into())
        );
        let none = (
            1006,
            "At least one scenarioEnvironmentPair is required".into(),
        );
        assert_eq!(err(r#"{"planId":1,"userId":1,"frameworkType":"X"}"#), none);
        assert_eq!(
            err(r#"{"planId":1,"userId":1,"frameworkType":"X","scenarioEnvironmentPairs":[]}"#),
            none
        );
        assert_eq!(
            err(r#"{"planId":1,"userId":1,"frameworkType":"X","environmentId":3}"#),
            none
        );
        assert_eq!(
            err(
                r#"{"planId":1,"userId":1,"frameworkType":"X","scenarioEnvironmentPairs":[{"environmentId":2}]}"#
            ),
            (1006, "scenarioId is mandatory".into())
        );
    }

    #[test]
    fn an_unknown_framework_type_is_1003_after_the_mandatory_checks() {
        assert_eq!(
            err(r#"{"planId":1,"userId":1,"frameworkType":"cypress","scenarioId":3}"#),
            (1003, "frameworkType CYPRESS is not supported".into())
        );
    }

    #[test]
    fn duplicates_and_the_pair_limit() {
        assert_eq!(
            err(
                r#"{"planId":1,"userId":1,"frameworkType":"APPIUM","scenarioEnvironmentPairs":[{"scenarioId":3,"environmentId":4},{"scenarioId":3,"environmentId":4}]}"#
            ),
            (
                1007,
                "Duplicate scenarioEnvironmentPair: scenario 3 on environment 4".into()
            )
        );
        assert_eq!(
            err(
                r#"{"planId":1,"userId":1,"frameworkType":"APPIUM","scenarioEnvironmentPairs":[{"scenarioId":1},{"scenarioId":2},{"scenarioId":3},{"scenarioId":4}]}"#
            ),
            (
                1008,
                "Too many scenarioEnvironmentPairs: 4 (limit 3)".into()
            )
        );
    }

    #[test]
    fn statuses_replace_the_pairs_and_on_in_flight_is_read() {
        let r = parse(r#"{"planId":1,"userId":2,"frameworkType":"APPIUM","statuses":["FAILED","ERROR"],"onInFlight":"skip"}"#).unwrap();
        assert!(r.pairs.is_empty());
        assert_eq!(r.statuses, vec!["FAILED", "ERROR"]);
        assert_eq!(r.on_in_flight, OnInFlight::Skip);
        let r = parse(r#"{"planId":1,"userId":2,"frameworkType":"APPIUM","scenarioId":3,"onInFlight":"refuse"}"#).unwrap();
        assert_eq!(r.on_in_flight, OnInFlight::Refuse);
    }

    #[test]
    fn a_request_of_section_1_normalises_as_before() {
        let r =
            parse(r#"{"planId":1,"userId":2,"frameworkType":"APPIUM","scenarioId":3}"#).unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"planId":1,"userId":2,"frameworkType":"APPIUM","pairs":[{"scenarioId":3,"environmentId":null}],"dryRun":false}"#
        );
    }

    #[test]
    fn bad_statuses_and_on_in_flight_are_1001_before_missing_fields() {
        for (body, needle) in [
            (r#"{"statuses":[]}"#, "at least one status"),
            (r#"{"statuses":null}"#, "statuses"),
            (r#"{"statuses":["BROKEN"]}"#, "unknown status \"BROKEN\""),
            (r#"{"statuses":["failed"]}"#, "unknown status"),
            (
                r#"{"statuses":["FAILED","QUEUED"]}"#,
                "statuses[1]: QUEUED is in flight",
            ),
            (r#"{"statuses":["RUNNING"]}"#, "RUNNING is in flight"),
            (
                r#"{"statuses":["SKIPPED","ABORTED","SKIPPED"]}"#,
                "statuses[2]: SKIPPED is named twice",
            ),
            (
                r#"{"statuses":["FAILED"],"scenarioId":3}"#,
                "cannot be combined",
            ),
            (
                r#"{"statuses":["FAILED"],"scenarioEnvironmentPairs":[{"scenarioId":3}]}"#,
                "cannot be combined",
            ),
            (r#"{"onInFlight":"wait"}"#, "onInFlight"),
            (r#"{"onInFlight":null}"#, "onInFlight"),
        ] {
            let (code, message) = err(body);
            assert_eq!(code, 1001, "{body}");
            assert!(message.contains(needle), "{body} → {message}");
        }
        assert_eq!(
            err(r#"{"planId":1,"userId":1,"frameworkType":"X","statuses":["FAILED"]}"#),
            (1003, "frameworkType X is not supported".into()),
            "with statuses no pair is mandatory"
        );
    }

    #[test]
    fn combining_the_shorthand_with_the_list_is_refused() {
        assert_eq!(
            err(r#"{"planId":1,"userId":1,"frameworkType":"APPIUM","scenarioId":9,"scenarioEnvironmentPairs":[{"scenarioId":3}]}"#).0,
            1001
        );
    }
}

/// Property tests over [`parse_rerun_request`]: any body, bytes or JSON-shaped,
/// either parses into a request that keeps the contract's rules or gets an
/// error of the contract's table for body checks (400 with code 1001, 1006,
/// 1003, 1007 or 1008 and its documented message) — never a panic.
///
/// Fixed budget (README, "Security"):
/// `PROPTEST_CASES=20000 cargo test --lib domain::request::fuzz`.
#[cfg(test)]
mod fuzz {
    use super::*;
    use actix_web::ResponseError;
    use proptest::prelude::*;

    const MAX_PAIRS: usize = 5;

    fn types() -> Vec<String> {
        vec!["APPIUM".to_owned(), "JUNIT".to_owned()]
    }

    /// The texts of code 1006 (original API page).
    const MANDATORY: [&str; 5] = [
        "planId is mandatory",
        "userId is mandatory",
        "frameworkType is mandatory",
        "At least one scenarioEnvironmentPair is required",
        "scenarioId is mandatory",
    ];

    fn check(body: &[u8]) {
        match parse_rerun_request(body, &types(), MAX_PAIRS) {
            Ok(request) => {
                assert!(request.plan_id >= 1 && request.user_id >= 1);
                assert!(types().contains(&request.framework_type));
                if request.statuses.is_empty() {
                    assert!((1..=MAX_PAIRS).contains(&request.pairs.len()));
                } else {
                    assert!(request.pairs.is_empty());
                    assert!(request
                        .statuses
                        .iter()
                        .all(|s| s.parse().is_ok_and(|s| SELECTABLE_STATUSES.contains(&s))));
                }
                for pair in &request.pairs {
                    assert!(pair.scenario_id >= 1);
                    assert!(pair.environment_id.is_none_or(|e| e >= 1));
                }
                assert!(check_explicit_duplicates(&request.pairs).is_ok());
            }
            Err(e) => {
                assert_eq!(e.status_code().as_u16(), 400, "{e}");
                let message = e.to_string();
                let in_table = match e.code() {
                    1001 => message.starts_with("Invalid request: "),
                    1006 => MANDATORY.contains(&message.as_str()),
                    1003 => {
                        message.starts_with("frameworkType ")
                            && message.ends_with(" is not supported")
                    }
                    1007 => message.starts_with("Duplicate scenarioEnvironmentPair: scenario "),
                    1008 => message.starts_with("Too many scenarioEnvironmentPairs: "),
                    _ => false,
                };
                assert!(
                    in_table,
                    "code {} {message:?} is not in the contract's table",
                    e.code()
                );
            }
        }
    }

    /// JSON number texts, ordinary and hostile.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            (1i64..1000).prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:?}")),
            "-?[0-9]{19,40}",
            "-?[0-9]{1,3}(\\.[0-9]{1,3})?([eE][+-]?[0-9]{1,4})?",
            Just("-0".to_owned()),
        ]
    }

    /// JSON value texts: numbers, strings, literals, pairs and nested junk.
    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            number(),
            Just("null".to_owned()),
            Just("true".to_owned()),
            "\"[ a-zA-Z]{0,8}\"",
            prop_oneof![
                Just("appium"),
                Just(" JUnit "),
                Just("APPIUM"),
                Just("cypress")
            ]
            .prop_map(|s| format!("\"{s}\"")),
            "\"(\\\\u[dD][89aAbB][0-9a-f]{2}|\\\\[nt\"\\\\]|[^\"\\\\])*\"",
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key(), inner), 0..4).prop_map(|fields| object(&fields)),
            ]
        })
    }

    /// Field names: the contract's, near misses and junk.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "planId",
                "userId",
                "frameworkType",
                "scenarioEnvironmentPairs",
                "scenarioId",
                "environmentId",
                "dryRun",
                "statuses",
                "onInFlight",
                "planid",
                "rerunAll",
            ])
            .prop_map(str::to_owned),
            "[a-zA-Z]{0,6}",
        ]
    }

    fn object(fields: &[(String, String)]) -> String {
        let inner: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(k.as_str())))
            .collect();
        format!("{{{}}}", inner.join(","))
    }

    /// An id: mostly a small valid one, sometimes any value text.
    fn id() -> impl Strategy<Value = String> {
        prop_oneof![6 => (1i64..5).prop_map(|n| n.to_string()), 1 => value()]
    }

    fn framework_type() -> impl Strategy<Value = String> {
        let named = prop::sample::select(vec!["APPIUM", "appium", " JUnit ", "cypress", " "]);
        prop_oneof![6 => named.prop_map(|s| format!("\"{s}\"")), 1 => value()]
    }

    fn pairs() -> impl Strategy<Value = String> {
        let pair = (
            prop::option::weighted(0.9, id()),
            prop::option::weighted(0.6, id()),
            prop::option::weighted(0.05, (key(), value())),
        )
            .prop_map(|(scenario, environment, extra)| {
                let mut fields = Vec::new();
                fields.extend(scenario.map(|v| ("scenarioId".to_owned(), v)));
                fields.extend(environment.map(|v| ("environmentId".to_owned(), v)));
                fields.extend(extra);
                object(&fields)
            });
        prop_oneof![
            8 => prop::collection::vec(pair, 0..8).prop_map(|p| format!("[{}]", p.join(","))),
            1 => value(),
        ]
    }

    /// Bodies shaped like the contract's: each field mostly present and
    /// mostly valid, sometimes junk, an unknown field or a key twice.
    fn body() -> impl Strategy<Value = String> {
        (
            prop::option::weighted(0.95, id()),
            prop::option::weighted(0.95, id()),
            prop::option::weighted(0.9, framework_type()),
            prop::option::weighted(0.7, pairs()),
            prop::option::weighted(0.25, id()),
            prop::option::weighted(0.15, id()),
            prop::option::weighted(0.3, prop_oneof![Just("true".to_owned()), value()]),
            prop::option::weighted(0.1, (key(), value())),
        )
            .prop_map(
                |(plan, user, framework, pairs, scenario, environment, dry_run, extra)| {
                    let named = [
                        ("planId", plan),
                        ("userId", user),
                        ("frameworkType", framework),
                        ("scenarioEnvironmentPairs", pairs),
                        ("scenarioId", scenario),
                        ("environmentId", environment),
                        ("dryRun", dry_run),
                    ];
                    let mut fields: Vec<(String, String)> = named
                        .into_iter()
                        .filter_map(|(k, v)| Some((k.to_owned(), v?)))
                        .collect();
                    fields.extend(extra);
                    object(&fields)
                },
            )
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_get_a_contract_error(body in prop::collection::vec(any::<u8>(), 0..256)) {
            check(&body);
        }

        #[test]
        fn any_json_shaped_body_parses_or_gets_a_contract_error(body in body()) {
            check(body.as_bytes());
        }

        #[test]
        fn a_mutated_valid_body_parses_or_gets_a_contract_error(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)
        ) {
            let mut body = br#"{"planId":614,"userId":13,"frameworkType":"appium","scenarioEnvironmentPairs":[{"scenarioId":111,"environmentId":222},{"scenarioId":112}],"dryRun":false}"#.to_vec();
            for (at, byte) in edits {
                let i = at.index(body.len());
                body[i] = byte;
            }
            check(&body);
        }
    }
}
