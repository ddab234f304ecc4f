//! The AMQP message body of one queued pair (contract, section 2).

use serde::{Deserialize, Serialize};

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
