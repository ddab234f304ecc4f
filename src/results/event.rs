//! The `execution.finished` event (contract, section 10).

use crate::db::reads::ExecutionRow;
use crate::db::results::ScenarioEnvironment;
use crate::domain::PairStatus;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use uuid::Uuid;

/// The body of an `execution.finished` event, published to
/// `<exchange>.events` with routing key `execution.finished.<frameworkType>`
/// (see `docs/event.schema.json`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionFinished {
    /// Unique per event; also the AMQP `message_id`.
    pub event_id: Uuid,
    pub execution_id: i64,
    pub plan_id: i64,
    /// `RUN` or `RERUN`.
    pub kind: String,
    /// The source run; a full run's own id.
    pub source_execution_id: i64,
    /// `USER` or `RETRY` (contract, section 18).
    pub trigger: String,
    /// The execution an automatic rerun retries; null for `USER`.
    pub retry_of: Option<i64>,
    /// The automatic rerun this execution's finish queued, or null.
    pub retry_execution_id: Option<i64>,
    /// The execution's framework type (`UNKNOWN` for a fixture execution
    /// without one, which no result can finish).
    pub framework_type: String,
    pub requested_by: i64,
    /// RFC 3339, UTC.
    pub requested_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub counts: Counts,
    /// The pairs of this execution that are flaky after it (section 6).
    pub flaky: Vec<FlakyPair>,
}

/// Pairs per terminal status; serialised with the statuses' names as keys,
/// in the contract's order (`PairStatus::TERMINAL`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub passed: i64,
    pub failed: i64,
    pub error: i64,
    pub skipped: i64,
    pub aborted: i64,
}

impl Counts {
    /// The pairs of terminal `status`.
    fn of(&self, status: PairStatus) -> i64 {
        match status {
            PairStatus::Passed => self.passed,
            PairStatus::Failed => self.failed,
            PairStatus::Error => self.error,
            PairStatus::Skipped => self.skipped,
            PairStatus::Aborted => self.aborted,
            PairStatus::Queued | PairStatus::Running => 0,
        }
    }
}

impl Serialize for Counts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(PairStatus::TERMINAL.len()))?;
        for status in PairStatus::TERMINAL {
            map.serialize_entry(status.as_str(), &self.of(status))?;
        }
        map.end()
    }
}

/// A flaky scenario–environment pair.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FlakyPair {
    pub scenario_id: i64,
    pub environment_id: i64,
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

impl ExecutionFinished {
    /// The event of `execution` (read with its pairs counted by status), its
    /// flaky pairs, and the automatic rerun its finish queued, if any.
    pub fn new(
        execution: &ExecutionRow,
        flaky: &[ScenarioEnvironment],
        retry_execution_id: Option<i64>,
    ) -> Self {
        let counts = &execution.counts;
        let tally = Counts {
            passed: counts.passed,
            failed: counts.failed,
            error: counts.error,
            skipped: counts.skipped,
            aborted: counts.aborted,
        };
        ExecutionFinished {
            event_id: Uuid::new_v4(),
            execution_id: execution.execution_id,
            plan_id: execution.plan_id,
            kind: execution.kind.clone(),
            source_execution_id: execution.source_execution_id,
            trigger: execution.trigger.clone(),
            retry_of: execution.retry_of,
            retry_execution_id,
            framework_type: execution
                .framework_type
                .clone()
                .unwrap_or_else(|| "UNKNOWN".to_owned()),
            requested_by: execution.requested_by,
            requested_at: rfc3339(execution.requested_at),
            started_at: execution.started_at.map(rfc3339),
            finished_at: execution.finished_at.map(rfc3339),
            counts: tally,
            flaky: flaky
                .iter()
                .map(|p| FlakyPair {
                    scenario_id: p.scenario_id,
                    environment_id: p.environment_id,
                })
                .collect(),
        }
    }

    /// `execution.finished.<frameworkType>`.
    pub fn routing_key(&self) -> String {
        crate::amqp::event_routing_key(&self.framework_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_counts_each_terminal_status_by_its_name_in_order() {
        let counts = Counts {
            passed: 1,
            failed: 2,
            error: 3,
            skipped: 4,
            aborted: 5,
        };
        assert_eq!(
            serde_json::to_string(&counts).unwrap(),
            r#"{"PASSED":1,"FAILED":2,"ERROR":3,"SKIPPED":4,"ABORTED":5}"#
        );
    }
}
