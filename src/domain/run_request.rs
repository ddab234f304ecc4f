//! Parsing and validating the body of `POST /queue/run` (contract, section 7).
//!
//! Checks that need no database, in the contract's order: malformed input
//! and unknown fields (1001), `planId` and `userId` (1006), a given but
//! unsupported `frameworkType` (1003). A missing `frameworkType` is only an
//! error once the plan is known to have none (1006, in the run service),
//! like the subsets' checks (1019, 1018) and the pair limit (1008).

use super::request::{mandatory_ids, normalised_framework_type, not_null, parse_object, Id};
use super::retry::RetryFailed;
use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The body of `POST /queue/run` as sent (section 7). Unknown fields and
/// duplicate keys are refused (1001).
// Public only for the OpenAPI document, where it is `RunRequestBody`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(as = RunRequestBody)]
pub struct RawRunRequest {
    /// Required (else 1006 `planId is mandatory`).
    #[schema(required = true, nullable = false)]
    plan_id: Option<Id>,
    /// Required (else 1006): the user who runs the plan; must be the token's
    /// subject unless the token holds QUEUE_ADMIN.
    #[schema(required = true, nullable = false)]
    user_id: Option<Id>,
    /// Case-insensitive, one of the configured framework types (else 1003);
    /// the AMQP routing key. Optional when the plan has a framework type
    /// (absent, null or blank means the plan's); else 1006
    /// `frameworkType is mandatory`.
    #[schema(example = "APPIUM")]
    framework_type: Option<String>,
    /// Run only these scenarios of the plan (each in the plan, else 1019;
    /// none twice, else 1001). Absent: all of them. `null` is 1001.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    scenario_ids: Option<Vec<Id>>,
    /// Run only on these environments of the plan (each in the plan, else
    /// 1019; none twice, else 1001). Absent: all of them. `null` is 1001.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    environment_ids: Option<Vec<Id>>,
    /// Run even while a pair of the plan's consolidated results is in flight
    /// (else 409 code 1014). Default false; `null` is 1001.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    force: Option<bool>,
    /// Validate and answer what would be queued (every `messageId` and the
    /// `executionId` null); write and publish nothing. Default false; `null` is 1001.
    #[serde(default, deserialize_with = "not_null")]
    #[schema(nullable = false)]
    dry_run: Option<bool>,
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

/// A run request that passed every check not needing the database. Its JSON
/// form (with `"operation": "run"`) is the normalised request an
/// Idempotency-Key is checked against.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRequest {
    /// Always `run`: keeps a run and a rerun with one key apart.
    operation: &'static str,
    pub plan_id: i64,
    pub user_id: i64,
    /// Normalised (trimmed, upper case, configured); `None`: the plan's.
    pub framework_type: Option<String>,
    /// The scenario subset in request order, none twice; `None`: all.
    pub scenario_ids: Option<Vec<i64>>,
    /// The environment subset in request order, none twice; `None`: all.
    pub environment_ids: Option<Vec<i64>>,
    pub force: bool,
    pub dry_run: bool,
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

/// Parses and checks a run body against section 7.
///
/// `framework_types` are the configured (upper-case) types. Errors: 1001 for
/// bad JSON, types, unknown fields or an id named twice in a subset; 1006 for
/// a missing `planId` or `userId`; 1003 for a given framework type that is
/// not configured — in that order.
pub fn parse_run_request(body: &[u8], framework_types: &[String]) -> Result<RunRequest, ApiError> {
    let raw: RawRunRequest = parse_object(body, |_| Ok(()))?;
    let scenario_ids = distinct("scenarioIds", raw.scenario_ids)?;
    let environment_ids = distinct("environmentIds", raw.environment_ids)?;
    let (plan_id, user_id) = mandatory_ids(raw.plan_id, raw.user_id)?;
    let framework_type = normalised_framework_type(raw.framework_type.as_deref());
    if let Some(framework_type) = &framework_type {
        if !framework_types.contains(framework_type) {
            return Err(ApiError::UnsupportedFrameworkType(framework_type.clone()));
        }
    }
    Ok(RunRequest {
        operation: "run",
        plan_id,
        user_id,
        framework_type,
        scenario_ids,
        environment_ids,
        force: raw.force.unwrap_or(false),
        dry_run: raw.dry_run.unwrap_or(false),
        retry_failed: raw.retry_failed.map(RetryFailed::get),
        callback_url: raw.callback_url,
    })
}

/// The ids of a subset as plain numbers; 1001 naming `field` and the id when
/// one comes twice.
fn distinct(field: &str, ids: Option<Vec<Id>>) -> Result<Option<Vec<i64>>, ApiError> {
    let Some(ids) = ids else {
        return Ok(None);
    };
    let mut seen = HashSet::with_capacity(ids.len());
    for id in &ids {
        if !seen.insert(*id) {
            return Err(ApiError::InvalidRequest(format!(
                "{field}: {} is named twice",
                id.get()
            )));
        }
    }
    Ok(Some(ids.into_iter().map(Id::get).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types() -> Vec<String> {
        vec!["APPIUM".to_owned(), "JUNIT".to_owned()]
    }

    fn err(body: &str) -> (u16, String) {
        let e = parse_run_request(body.as_bytes(), &types()).unwrap_err();
        (e.code(), e.to_string())
    }

    #[test]
    fn a_minimal_run_needs_only_the_plan_and_the_user() {
        let r = parse_run_request(br#"{"planId":614,"userId":13}"#, &types()).unwrap();
        assert_eq!((r.plan_id, r.user_id), (614, 13));
        assert_eq!(r.framework_type, None);
        assert_eq!((r.scenario_ids, r.environment_ids), (None, None));
        assert!(!r.force && !r.dry_run);
    }

    #[test]
    fn every_field_is_read_and_the_framework_type_normalised() {
        let r = parse_run_request(
            br#"{"planId":1,"userId":2,"frameworkType":" junit ","scenarioIds":[5,3],"environmentIds":[],"force":true,"dryRun":true}"#,
            &types(),
        )
        .unwrap();
        assert_eq!(r.framework_type.as_deref(), Some("JUNIT"));
        assert_eq!(r.scenario_ids, Some(vec![5, 3]));
        assert_eq!(r.environment_ids, Some(vec![]));
        assert!(r.force && r.dry_run);
        let blank = parse_run_request(br#"{"planId":1,"userId":2,"frameworkType":"  "}"#, &types());
        assert_eq!(
            blank.unwrap().framework_type,
            None,
            "blank means the plan's"
        );
    }

    #[test]
    fn malformed_input_is_1001_before_missing_fields() {
        for (body, needle) in [
            ("{", "malformed JSON"),
            ("[]", "JSON object"),
            (
                r#"{"planId":1,"userId":1,"scenarioEnvironmentPairs":[]}"#,
                "scenarioEnvironmentPairs",
            ),
            (r#"{"scenarioIds":[0]}"#, "scenarioIds[0]"),
            (r#"{"scenarioIds":null}"#, "scenarioIds"),
            (
                r#"{"environmentIds":[1,1]}"#,
                "environmentIds: 1 is named twice",
            ),
            (r#"{"force":"yes"}"#, "force"),
            (r#"{"dryRun":null}"#, "dryRun"),
        ] {
            let (code, message) = err(body);
            assert_eq!(code, 1001, "{body}");
            assert!(message.contains(needle), "{body} → {message}");
        }
    }

    #[test]
    fn missing_ids_are_1006_then_an_unknown_framework_type_1003() {
        assert_eq!(err("{}"), (1006, "planId is mandatory".into()));
        assert_eq!(err(r#"{"planId":1}"#), (1006, "userId is mandatory".into()));
        assert_eq!(
            err(r#"{"planId":1,"userId":1,"frameworkType":"cypress"}"#),
            (1003, "frameworkType CYPRESS is not supported".into())
        );
    }
}
