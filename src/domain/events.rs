//! The events of part three that runners and other consumers read from
//! `<exchange>.events` (contract, sections 16 and 17); the
//! `execution.finished` event is `crate::results::event`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// RFC 3339 in UTC with `Z` and milliseconds.
fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A pair a cancel ended, as an `execution.cancelled` event lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelledMessage {
    /// The `messageId` of the pair's run message.
    pub message_id: Uuid,
    pub scenario_id: i64,
    pub environment_id: i64,
    pub attempt: i32,
}

/// The body of an `execution.cancelled` event (contract, section 16), one
/// per cancel request and execution, published to `<exchange>.events` with
/// routing key `execution.cancelled.<frameworkType>`
/// (`docs/execution-cancelled.schema.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionCancelled {
    /// Unique per event; also the AMQP `message_id`.
    pub event_id: Uuid,
    pub execution_id: i64,
    pub plan_id: i64,
    pub framework_type: String,
    /// The user id of the token that cancelled (its subject); null for a
    /// subject that is not a user id.
    pub cancelled_by: Option<i64>,
    /// RFC 3339, UTC.
    pub cancelled_at: String,
    /// The cancelled pairs that have a run message.
    pub pairs: Vec<CancelledMessage>,
}

impl ExecutionCancelled {
    /// A new event (fresh `eventId`) of `pairs` of an execution.
    pub fn new(
        execution_id: i64,
        plan_id: i64,
        framework_type: &str,
        cancelled_by: Option<i64>,
        cancelled_at: DateTime<Utc>,
        pairs: Vec<CancelledMessage>,
    ) -> Self {
        ExecutionCancelled {
            event_id: Uuid::new_v4(),
            execution_id,
            plan_id,
            framework_type: framework_type.to_owned(),
            cancelled_by,
            cancelled_at: rfc3339(cancelled_at),
            pairs,
        }
    }

    /// `execution.cancelled.<frameworkType>`.
    pub fn routing_key(&self) -> String {
        format!("execution.cancelled.{}", self.framework_type)
    }
}

/// The body of a `result.rejected` event (contract, section 17): a result
/// message the results consumer rejected, so runner authors see why.
/// Routing key `result.rejected.<frameworkType>` (the framework type of the
/// execution the result names, `UNKNOWN` when it names none)
/// (`docs/result-rejected.schema.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultRejected {
    /// Unique per event; also the AMQP `message_id`.
    pub event_id: Uuid,
    /// The body's `messageId` (the run message the result is about); null
    /// when the body has none that can be read.
    pub message_id: Option<String>,
    /// The AMQP `message_id` of the rejected result message; null without one.
    pub result_message_id: Option<String>,
    /// Why, the same text as the log line.
    pub reason: String,
    /// RFC 3339, UTC: when it was rejected.
    pub at: String,
}

impl ResultRejected {
    /// A new event (fresh `eventId`, `at` now).
    pub fn new(
        message_id: Option<String>,
        result_message_id: Option<String>,
        reason: String,
    ) -> Self {
        ResultRejected {
            event_id: Uuid::new_v4(),
            message_id,
            result_message_id,
            reason,
            at: rfc3339(Utc::now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_event_is_routed_by_framework_type_and_names_its_pairs_in_camel_case() {
        let at = DateTime::parse_from_rfc3339("2026-11-30T09:05:00Z")
            .unwrap()
            .to_utc();
        let event = ExecutionCancelled::new(
            5012,
            614,
            "APPIUM",
            Some(13),
            at,
            vec![CancelledMessage {
                message_id: Uuid::nil(),
                scenario_id: 111,
                environment_id: 222,
                attempt: 2,
            }],
        );
        assert_eq!(event.routing_key(), "execution.cancelled.APPIUM");
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["cancelledAt"], "2026-11-30T09:05:00.000Z");
        assert_eq!(json["pairs"][0]["environmentId"], 222);
        assert_eq!(json["cancelledBy"], 13);
    }
}
