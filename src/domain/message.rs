//! The AMQP message bodies: one queued pair (contract, section 2) and a
//! runner's result (section 9).

use crate::rules::PairStatus;
use serde::{Deserialize, Deserializer, Serialize};

/// The scenario part of a message: `{"name": …}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioInfo {
    pub name: String,
}

/// The environment part of a message: `{"name", "platform", "version"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentInfo {
    pub name: String,
    pub platform: String,
    pub version: String,
}

/// One message per scenario–environment pair, published with routing key
/// `framework_type`, for a rerun (`type` `scenario.rerun`, section 2) and for a
/// full run (`type` `scenario.run`, `attempt` 1, `source_execution_id` =
/// `execution_id`, section 7). Field names and shape are fixed by the contract; runners
/// de-duplicate on `message_id`, which is also the AMQP `message_id` property.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RerunMessage {
    pub message_id: String,
    pub execution_id: i64,
    pub source_execution_id: i64,
    pub plan_id: i64,
    pub user_id: i64,
    pub framework_type: String,
    pub scenario_id: i64,
    pub environment_id: i64,
    /// 1 + the times this pair has run in the source run's chain; 1 in a full run.
    pub attempt: i32,
    /// RFC 3339 UTC, seconds precision, e.g. `2026-11-30T09:00:00Z`.
    pub requested_at: String,
    pub scenario: ScenarioInfo,
    pub environment: EnvironmentInfo,
    /// RFC 3339: `requestedAt` + the queue timeout; a runner should not start
    /// the pair after it (contract, section 15). Absent in messages written
    /// before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// The body of a runner's result (contract, section 9;
/// `docs/result.schema.json`): what `plan-queue runner` publishes to
/// `<exchange>.results` and the results consumer reads (which then checks
/// what no type can, `results::message::RunnerResult::parse`). Unknown
/// fields are ignored (a tolerant reader); absent optional fields are not
/// sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultMessage {
    /// The `messageId` of the run message (a UUID).
    pub message_id: String,
    pub execution_id: i64,
    pub scenario_id: i64,
    pub environment_id: i64,
    pub attempt: i32,
    /// `RUNNING` or a terminal status, never `QUEUED`.
    #[serde(deserialize_with = "result_status")]
    pub status: PairStatus,
    /// When the status changed, RFC 3339.
    pub at: String,
    /// Milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A result's status: a status name other than `QUEUED` (a runner reports
/// a start or an end, never a queueing).
fn result_status<'de, D: Deserializer<'de>>(d: D) -> Result<PairStatus, D::Error> {
    let text = String::deserialize(d)?;
    match text.parse::<PairStatus>() {
        Ok(status) if status != PairStatus::Queued => Ok(status),
        _ => {
            let expected: Vec<PairStatus> = PairStatus::ALL
                .into_iter()
                .filter(|s| *s != PairStatus::Queued)
                .collect();
            Err(serde::de::Error::custom(format!(
                "unknown status {text:?}, expected {}",
                PairStatus::names(&expected, ", ")
            )))
        }
    }
}
