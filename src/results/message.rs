//! The body of a runner's result (contract, section 9), parsed and checked
//! before any database work, so that a bad message is rejected on its own and
//! never fails the batch it arrived in.
//!
//! Unknown fields are ignored (a tolerant reader: a runner may add its own
//! fields, e.g. a runner id, without its results being dead-lettered; a
//! misspelled optional field is therefore dropped, not refused).

use crate::domain::{PairStatus, ResultMessage};
use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

/// Largest result body accepted, bytes: far above the largest valid result
/// (a 2048-character `reportUrl` and a 4096-character `detail` of 4-byte
/// characters take under 25 KiB).
pub const MAX_RESULT_BYTES: usize = 64 * 1024;
/// Longest `reportUrl`, characters (contract, section 9).
pub const MAX_REPORT_URL_CHARS: usize = 2048;
/// Longest `detail`, characters (contract, section 9).
pub const MAX_DETAIL_CHARS: usize = 4096;

/// A valid result: ids positive, `at` an instant, the optional fields
/// within their limits.
#[derive(Clone, Debug, PartialEq)]
pub struct RunnerResult {
    /// The `messageId` of the `scenario.run` / `scenario.rerun` message.
    pub message_id: Uuid,
    pub execution_id: i64,
    pub scenario_id: i64,
    pub environment_id: i64,
    pub attempt: i32,
    /// `RUNNING` or a terminal status.
    pub status: PairStatus,
    /// When the status changed (RFC 3339 in the body).
    pub at: DateTime<Utc>,
    /// Milliseconds, ≥ 0.
    pub duration_ms: Option<i64>,
    pub report_url: Option<String>,
    pub detail: Option<String>,
}

impl RunnerResult {
    /// Parses a result body.
    ///
    /// Errors: a reason for the log line and the rejection metric — too
    /// large, not JSON (or a field of the wrong type, named with its path),
    /// or a rule of section 9 broken.
    pub fn parse(body: &[u8]) -> Result<RunnerResult, Rejection> {
        if body.len() > MAX_RESULT_BYTES {
            return Err(Rejection::TooLarge(body.len()));
        }
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| Rejection::NotJson(format!("not JSON: {e}")))?;
        let wire: ResultMessage = serde_path_to_error::deserialize(value)
            .map_err(|e| Rejection::Invalid(format!("field {}: {}", e.path(), e.inner())))?;
        let invalid = |reason: String| Err(Rejection::Invalid(reason));
        let message_id = match Uuid::parse_str(&wire.message_id) {
            Ok(id) => id,
            Err(e) => return invalid(format!("field messageId: {e}")),
        };
        for (name, id) in [
            ("executionId", wire.execution_id),
            ("scenarioId", wire.scenario_id),
            ("environmentId", wire.environment_id),
            ("attempt", i64::from(wire.attempt)),
        ] {
            if id < 1 {
                return invalid(format!("{name} must be at least 1, got {id}"));
            }
        }
        let Ok(at) = DateTime::parse_from_rfc3339(&wire.at) else {
            return invalid(format!("at is not an RFC 3339 date-time: {:?}", wire.at));
        };
        let duration_ms = match wire.duration_ms.map(i64::try_from) {
            None => None,
            Some(Ok(ms)) => Some(ms),
            Some(Err(_)) => return invalid("durationMs is too large".to_owned()),
        };
        if let Some(url) = &wire.report_url {
            check_report_url(url).map_err(Rejection::Invalid)?;
        }
        if let Some(detail) = &wire.detail {
            if detail.chars().count() > MAX_DETAIL_CHARS {
                return invalid(format!(
                    "detail is longer than {MAX_DETAIL_CHARS} characters"
                ));
            }
        }
        let result = RunnerResult {
            message_id,
            execution_id: wire.execution_id,
            scenario_id: wire.scenario_id,
            environment_id: wire.environment_id,
            attempt: wire.attempt,
            status: wire.status,
            at: at.with_timezone(&Utc),
            duration_ms,
            report_url: wire.report_url,
            detail: wire.detail.map(storable_text),
        };
        if result.started_from_duration().is_none() {
            return invalid("durationMs reaches back before any date".to_owned());
        }
        Ok(result)
    }

    /// The start a terminal result implies when the pair never reported one:
    /// `at` minus `durationMs`, or `at` (contract, section 9). `None` when
    /// that instant is out of range.
    pub fn started_from_duration(&self) -> Option<DateTime<Utc>> {
        match self.duration_ms {
            None => Some(self.at),
            Some(ms) => self.at.checked_sub_signed(TimeDelta::try_milliseconds(ms)?),
        }
    }
}

/// `text` as PostgreSQL can store it: a `TEXT` value cannot hold U+0000,
/// which JSON allows (`\u0000`) and a test's output may contain, so each is
/// replaced by U+FFFD (the replacement character). The length in
/// characters stays the same.
pub fn storable_text(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

fn check_report_url(url: &str) -> Result<(), String> {
    if url.chars().count() > MAX_REPORT_URL_CHARS {
        return Err(format!(
            "reportUrl is longer than {MAX_REPORT_URL_CHARS} characters"
        ));
    }
    if url.chars().any(char::is_control) {
        return Err("reportUrl holds a control character".to_owned());
    }
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => Ok(()),
        _ => Err(format!("reportUrl is not an http or https URL: {url:?}")),
    }
}

/// Why a result is rejected without requeue (and so dead-lettered).
#[derive(Clone, Debug, PartialEq)]
pub enum Rejection {
    /// The body is larger than [`MAX_RESULT_BYTES`] (its size in bytes).
    TooLarge(usize),
    /// The body is not JSON.
    NotJson(String),
    /// A field is missing, of the wrong type, or breaks a rule of section 9.
    Invalid(String),
    /// No pair has this `messageId` with these four ids.
    NoPair,
    /// The database refused to store it (a constraint), though it answers.
    Refused(String),
}

impl Rejection {
    /// The `reason` label of `plan_queue_results_rejected_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::TooLarge(_) => "too_large",
            Rejection::NotJson(_) => "not_json",
            Rejection::Invalid(_) => "invalid",
            Rejection::NoPair => "no_pair",
            Rejection::Refused(_) => "refused_by_database",
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejection::TooLarge(n) => {
                write!(f, "body of {n} bytes is larger than {MAX_RESULT_BYTES}")
            }
            Rejection::NotJson(reason) | Rejection::Invalid(reason) => f.write_str(reason),
            Rejection::NoPair => f.write_str(
                "names no pair: no pair has this messageId with this executionId, \
                 scenarioId, environmentId and attempt",
            ),
            Rejection::Refused(reason) => write!(f, "refused by the database: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> serde_json::Value {
        json!({"messageId": "6f1c1b9e-3f5a-4c39-9a43-2b1f0a7d5e11", "executionId": 5012,
               "scenarioId": 111, "environmentId": 222, "attempt": 2, "status": "FAILED",
               "at": "2026-11-30T09:03:10Z", "durationMs": 41250,
               "reportUrl": "https://reports.example/5012/111/222", "detail": "Expected 42"})
    }

    fn parse(value: serde_json::Value) -> Result<RunnerResult, Rejection> {
        RunnerResult::parse(value.to_string().as_bytes())
    }

    #[test]
    fn the_contract_example_parses_and_implies_its_start() {
        let result = parse(body()).unwrap();
        assert_eq!(result.status, PairStatus::Failed);
        assert_eq!(
            result.started_from_duration().unwrap().to_rfc3339(),
            "2026-11-30T09:02:28.750+00:00"
        );
    }

    #[test]
    fn running_and_optional_nulls_and_unknown_fields_are_accepted() {
        let mut b = body();
        b["status"] = json!("RUNNING");
        b["durationMs"] = json!(null);
        b["runner"] = json!("farm-3");
        let result = parse(b).unwrap();
        assert_eq!(result.status, PairStatus::Running);
        assert_eq!(result.duration_ms, None);
    }

    #[test]
    fn each_broken_rule_is_a_rejection_with_its_reason() {
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("status", json!("QUEUED"), "field status"),
            ("status", json!("passed"), "field status"),
            ("executionId", json!("5012"), "field executionId"),
            ("attempt", json!(0), "attempt must be at least 1"),
            ("at", json!("yesterday"), "RFC 3339"),
            ("durationMs", json!(-1), "field durationMs"),
            ("durationMs", json!(1.5), "field durationMs"),
            ("durationMs", json!(u64::MAX), "too large"),
            ("reportUrl", json!("ftp://x/y"), "http or https"),
            (
                "reportUrl",
                json!(format!("https://x/{}", "a".repeat(2048))),
                "longer",
            ),
            ("detail", json!("é".repeat(4097)), "longer than 4096"),
            ("messageId", json!("not-a-uuid"), "field messageId"),
        ];
        for (field, value, reason) in cases {
            let mut b = body();
            b[field] = value;
            match parse(b) {
                Err(Rejection::Invalid(got)) => assert!(got.contains(reason), "{field}: {got}"),
                other => panic!("{field}: {other:?}"),
            }
        }
        let mut b = body();
        b.as_object_mut().unwrap().remove("at");
        assert!(matches!(parse(b), Err(Rejection::Invalid(_))));
        assert_eq!(RunnerResult::parse(b"{").unwrap_err().label(), "not_json");
        let big = vec![b' '; MAX_RESULT_BYTES + 1];
        assert_eq!(RunnerResult::parse(&big).unwrap_err().label(), "too_large");
    }

    #[test]
    fn a_nul_in_detail_is_stored_as_a_replacement_character_and_a_nul_in_report_url_is_refused() {
        let mut b = body();
        b["detail"] = json!("before\u{0}after");
        let parsed = RunnerResult::parse(b.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.detail.as_deref(), Some("before\u{FFFD}after"));
        let mut b = body();
        b["reportUrl"] = json!("https://reports.example/\u{0}");
        let refused = RunnerResult::parse(b.to_string().as_bytes()).unwrap_err();
        assert!(
            format!("{refused:?}").contains("control character"),
            "{refused:?}"
        );
    }

    #[test]
    fn a_detail_of_exactly_4096_characters_is_accepted() {
        let mut b = body();
        b["detail"] = json!("é".repeat(4096));
        assert!(parse(b).is_ok());
    }
}
