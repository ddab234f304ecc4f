//! Rows read and written by the rerun service and the relay.

use super::schema::{dispatches, execution_pairs, executions};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

/// A new execution: kind `RERUN` made from `source_execution_id`.
#[derive(Insertable)]
#[diesel(table_name = executions)]
pub struct NewExecution<'a> {
    pub plan_id: i64,
    pub kind: &'a str,
    pub source_execution_id: Option<i64>,
    pub requested_by: i64,
    pub framework_type: Option<&'a str>,
    pub requested_at: DateTime<Utc>,
}

/// One scenario–environment pair of an execution.
#[derive(Insertable)]
#[diesel(table_name = execution_pairs)]
pub struct NewExecutionPair<'a> {
    pub execution_id: i64,
    pub scenario_id: i64,
    pub environment_id: i64,
    pub status: &'a str,
    pub attempt: i32,
}

/// A dispatch (outbox) row: one message for the relay to publish.
#[derive(Insertable)]
#[diesel(table_name = dispatches)]
pub struct NewDispatch<'a> {
    pub message_id: Uuid,
    pub execution_id: i64,
    pub routing_key: &'a str,
    pub body: String,
    pub correlation_id: Option<&'a str>,
}

/// A dispatch row claimed by the relay.
#[derive(Queryable, QueryableByName, Debug, Clone)]
#[diesel(table_name = dispatches)]
pub struct ClaimedDispatch {
    pub id: i64,
    pub message_id: Uuid,
    pub routing_key: String,
    pub body: String,
    pub correlation_id: Option<String>,
}
