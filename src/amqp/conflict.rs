//! What the broker refused of the topology: the conflicts that
//! [`super::topology`] reports and [`super::BrokerStatus`] shows.

/// A part of the topology the broker refused to declare as configured
/// (a channel-level error such as `PRECONDITION_FAILED` or `ACCESS_REFUSED`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopologyConflict {
    /// `queue`, `exchange` or `binding`.
    #[schema(example = "queue")]
    pub kind: String,
    /// The queue or exchange, e.g. `scenario-runs.JUNIT`.
    #[schema(example = "scenario-runs.JUNIT")]
    pub name: String,
    /// The argument that differs (from `inequivalent arg '…'`), else the
    /// broker's error name, e.g. `ACCESS_REFUSED`.
    #[schema(example = "x-dead-letter-exchange")]
    pub argument: String,
    /// The broker's reply text.
    pub reason: String,
    /// Routing keys whose dispatch rows wait until the conflict is resolved.
    pub held_back: Vec<String>,
}
