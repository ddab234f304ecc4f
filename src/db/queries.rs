//! The rerun transaction's statements as prepared statements: one round trip
//! each, with constant SQL text so that diesel caches them per connection
//! (a static `QueryId`) and PostgreSQL parses and plans each only once.
//!
//! `bench/rerun-2pair.pgbench` replays the same statements; keep the two in
//! step (see `bench/BENCHMARKS.md`).

use super::models::{KIND_RUN, STATUS_QUEUED, STATUS_RUNNING};
use super::outbox::push_insert_dispatches;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamptz};
use diesel::{QueryResult, QueryableByName, RunQueryDsl};

/// Pushes `'<value>'`: a constant of our own as an SQL literal (a partial
/// index's predicate only matches a literal, never a parameter).
fn push_literal(out: &mut AstPass<'_, '_, Pg>, value: &'static str) {
    out.push_sql("'");
    out.push_sql(value);
    out.push_sql("'");
}

/// Implements `QueryId` with a static id, so diesel caches the prepared statement.
macro_rules! static_query_id {
    ($query:ty, $id:ident) => {
        /// The static query id of a statement, the key of diesel's statement cache.
        pub struct $id;
        impl QueryId for $query {
            type QueryId = $id;
            const HAS_STATIC_QUERY_ID: bool = true;
        }
        impl<Conn> RunQueryDsl<Conn> for $query {}
    };
}

/// Checks plan, user and membership, locks the plan's latest full run
/// (`FOR NO KEY UPDATE`, so reruns of one source run number their attempts
/// one after another) and, when `allocate`, reserves the id of the rerun.
///
/// One row: [`Validation`].
pub struct Validate {
    pub plan_id: i64,
    pub user_id: i64,
    /// Reserve an execution id (not for a dry run).
    pub allocate: bool,
}
static_query_id!(Validate, ValidateId);

/// Who may act on a plan, as the validation statements of a run and a rerun
/// read it: the columns `plan_found`, `user_active` and `member`.
#[derive(QueryableByName, Debug, Clone, Copy)]
pub struct Access {
    /// The plan exists.
    #[diesel(sql_type = Bool)]
    pub plan_found: bool,
    /// The user exists and is active.
    #[diesel(sql_type = Bool)]
    pub user_active: bool,
    /// The user is a member of the plan's project.
    #[diesel(sql_type = Bool)]
    pub member: bool,
}

/// What [`Validate`] found.
#[derive(QueryableByName, Debug)]
pub struct Validation {
    #[diesel(embed)]
    pub access: Access,
    /// The plan's latest full run (locked), if it ever ran.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub source_execution_id: Option<i64>,
    /// The reserved id of the rerun, when asked for.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub execution_id: Option<i64>,
}

impl Query for Validate {
    type SqlType = diesel::sql_types::Untyped;
}

impl QueryFragment<Pg> for Validate {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "SELECT p.project_id IS NOT NULL AS plan_found, \
                    coalesce(u.active, false) AS user_active, \
                    EXISTS (SELECT 1 FROM project_members m \
                             WHERE m.project_id = p.project_id AND m.user_id = r.user_id) AS member, \
                    (SELECT x.id FROM executions x WHERE x.plan_id = r.plan_id AND x.kind = ",
        );
        push_literal(&mut out, KIND_RUN);
        out.push_sql(
            " ORDER BY x.requested_at DESC, x.id DESC LIMIT 1 FOR NO KEY UPDATE) \
                      AS source_execution_id, \
                    CASE WHEN r.allocate THEN nextval('executions_id_seq') END AS execution_id \
               FROM (SELECT ",
        );
        out.push_bind_param::<BigInt, _>(&self.plan_id)?;
        out.push_sql("::bigint AS plan_id, ");
        out.push_bind_param::<BigInt, _>(&self.user_id)?;
        out.push_sql("::bigint AS user_id, ");
        out.push_bind_param::<Bool, _>(&self.allocate)?;
        out.push_sql(
            "::boolean AS allocate) r \
             LEFT JOIN plans p ON p.id = r.plan_id \
             LEFT JOIN users u ON u.id = r.user_id",
        );
        Ok(())
    }
}

/// The pairs of a source run for some scenarios (`scenario_ids`, or all when
/// `None`), with what their messages need and each pair's latest attempt in
/// the source run's chain (the run and every rerun made from it): its number,
/// status and execution, ordered by scenario then environment. Attempts in a
/// chain are consecutive, so the latest attempt is also how many times the
/// pair ran: one probe of `execution_pairs_chain_idx`, whatever the chain's
/// length.
///
/// No rows when `source_execution_id` is no longer the plan's latest full run
/// (a run of the plan committed while this transaction waited for the lock
/// on it): the caller then takes the new source run ([`LatestRun`]).
///
/// Rows: [`SourcePair`].
pub struct SourcePairs<'a> {
    pub plan_id: i64,
    pub source_execution_id: i64,
    pub scenario_ids: Option<&'a [i64]>,
}
static_query_id!(SourcePairs<'_>, SourcePairsId);

/// A pair of the source run with what its message needs and its latest attempt.
#[derive(QueryableByName, Debug, Clone)]
pub struct SourcePair {
    #[diesel(sql_type = BigInt)]
    pub scenario_id: i64,
    #[diesel(sql_type = BigInt)]
    pub environment_id: i64,
    #[diesel(sql_type = Text)]
    pub scenario_name: String,
    #[diesel(sql_type = Text)]
    pub environment_name: String,
    #[diesel(sql_type = Text)]
    pub platform: String,
    #[diesel(sql_type = Text)]
    pub version: String,
    /// Times the pair ran in the source run's chain (its highest attempt).
    #[diesel(sql_type = Integer)]
    pub runs: i32,
    /// The status of that latest attempt: the pair's current status (section 6).
    #[diesel(sql_type = Text)]
    pub current_status: String,
    /// The execution holding that latest attempt.
    #[diesel(sql_type = BigInt)]
    pub current_execution_id: i64,
}

impl SourcePair {
    /// In flight: the latest attempt is `QUEUED` or `RUNNING` (section 6).
    pub fn in_flight(&self) -> bool {
        self.current_status == STATUS_QUEUED || self.current_status == STATUS_RUNNING
    }
}

impl Query for SourcePairs<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl QueryFragment<Pg> for SourcePairs<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH r AS (SELECT ");
        out.push_bind_param::<BigInt, _>(&self.source_execution_id)?;
        out.push_sql("::bigint AS source, ");
        out.push_bind_param::<BigInt, _>(&self.plan_id)?;
        out.push_sql("::bigint AS plan_id, ");
        out.push_bind_param::<Nullable<Array<BigInt>>, _>(&self.scenario_ids)?;
        out.push_sql(
            "::bigint[] AS scenarios) \
             SELECT sp.scenario_id, sp.environment_id, s.name AS scenario_name, \
                    e.name AS environment_name, e.platform, e.version, \
                    l.attempt AS runs, l.status AS current_status, \
                    l.execution_id AS current_execution_id \
               FROM r \
               JOIN execution_pairs sp \
                 ON sp.execution_id = r.source \
                AND (r.scenarios IS NULL OR sp.scenario_id = ANY (r.scenarios)) \
              CROSS JOIN LATERAL \
                    (SELECT p.attempt, p.status, p.execution_id FROM execution_pairs p \
                      WHERE p.source_execution_id = r.source \
                        AND p.scenario_id = sp.scenario_id AND p.environment_id = sp.environment_id \
                      ORDER BY p.attempt DESC LIMIT 1) l \
               JOIN scenarios s ON s.id = sp.scenario_id \
               JOIN environments e ON e.id = sp.environment_id \
              WHERE r.source = ",
        );
        push_latest_run(&mut out, "r.plan_id");
        out.push_sql(" ORDER BY sp.scenario_id, sp.environment_id");
        Ok(())
    }
}

/// Pushes `(SELECT …)`: the id of the latest full run of the plan whose id is
/// the SQL expression `plan_id` (section 1: most recent `requested_at`, then
/// highest id; one probe of `executions_latest_run_idx`).
fn push_latest_run(out: &mut AstPass<'_, '_, Pg>, plan_id: &'static str) {
    out.push_sql("(SELECT x.id FROM executions x WHERE x.plan_id = ");
    out.push_sql(plan_id);
    out.push_sql(" AND x.kind = ");
    push_literal(out, KIND_RUN);
    out.push_sql(" ORDER BY x.requested_at DESC, x.id DESC LIMIT 1)");
}

/// The plan's latest full run as of this statement, if it ever ran, locked
/// (`FOR NO KEY UPDATE`, the lock reruns of that source run take).
///
/// One row: [`LatestRunRow`].
pub struct LatestRun {
    pub plan_id: i64,
}
static_query_id!(LatestRun, LatestRunId);

/// What [`LatestRun`] found.
#[derive(QueryableByName, Debug)]
pub struct LatestRunRow {
    #[diesel(sql_type = Nullable<BigInt>)]
    pub source_execution_id: Option<i64>,
}

impl Query for LatestRun {
    type SqlType = diesel::sql_types::Untyped;
}

impl QueryFragment<Pg> for LatestRun {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT (SELECT x.id FROM executions x WHERE x.plan_id = ");
        out.push_bind_param::<BigInt, _>(&self.plan_id)?;
        out.push_sql(" AND x.kind = ");
        push_literal(&mut out, KIND_RUN);
        out.push_sql(
            " ORDER BY x.requested_at DESC, x.id DESC LIMIT 1 FOR NO KEY UPDATE) \
             AS source_execution_id",
        );
        Ok(())
    }
}

/// Writes an execution in one statement: the execution (`kind` `RUN` or
/// `RERUN`, with its count of open pairs), its pairs (status `QUEUED`, each
/// with its message id) and one dispatch row per pair (`message_type`
/// `scenario.run` or `scenario.rerun`). The per-pair columns are parallel
/// slices of equal length, so the SQL text is the same for any number of
/// pairs; kind and message type are parameters for the same reason (one
/// cached statement).
pub struct WriteExecution<'a> {
    pub execution_id: i64,
    pub plan_id: i64,
    /// `KIND_RUN` or `KIND_RERUN`.
    pub kind: &'a str,
    /// The source run of a rerun; `None` for a full run (its own source).
    pub source_execution_id: Option<i64>,
    pub requested_by: i64,
    pub framework_type: &'a str,
    pub requested_at: chrono::DateTime<chrono::Utc>,
    /// The AMQP `type` of the messages.
    pub message_type: &'a str,
    pub correlation_id: Option<&'a str>,
    pub scenario_ids: &'a [i64],
    pub environment_ids: &'a [i64],
    pub attempts: &'a [i32],
    pub message_ids: &'a [uuid::Uuid],
    pub bodies: &'a [String],
}
static_query_id!(WriteExecution<'_>, WriteExecutionId);

impl QueryFragment<Pg> for WriteExecution<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH r AS (SELECT ");
        out.push_bind_param::<BigInt, _>(&self.execution_id)?;
        out.push_sql("::bigint AS id, ");
        out.push_bind_param::<Text, _>(self.framework_type)?;
        out.push_sql("::text AS routing_key, ");
        out.push_bind_param::<Text, _>(self.message_type)?;
        out.push_sql("::text AS message_type, ");
        out.push_bind_param::<Nullable<Text>, _>(&self.correlation_id)?;
        out.push_sql("::text AS correlation_id, ");
        out.push_bind_param::<Nullable<BigInt>, _>(&self.source_execution_id)?;
        out.push_sql(
            "::bigint AS source), \
             new_execution AS (INSERT INTO executions (id, plan_id, kind, source_execution_id, \
                                       requested_by, framework_type, requested_at, open_pairs) \
                               SELECT r.id, ",
        );
        out.push_bind_param::<BigInt, _>(&self.plan_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.kind)?;
        out.push_sql(", r.source, ");
        out.push_bind_param::<BigInt, _>(&self.requested_by)?;
        out.push_sql(", r.routing_key, ");
        out.push_bind_param::<Timestamptz, _>(&self.requested_at)?;
        out.push_sql(", cardinality(t.m) FROM r, (SELECT ");
        out.push_bind_param::<Array<diesel::sql_types::Uuid>, _>(self.message_ids)?;
        out.push_sql(
            "::uuid[] AS m) t), \
             new_pairs AS (INSERT INTO execution_pairs (execution_id, scenario_id, \
                                   environment_id, status, attempt, source_execution_id, message_id) \
                           SELECT r.id, t.s, t.e, ",
        );
        push_literal(&mut out, STATUS_QUEUED);
        // the chain's source, given: a trigger could not see the execution
        // inserted by a sibling of this statement
        out.push_sql(", t.a, coalesce(r.source, r.id), t.m FROM r, unnest(");
        out.push_bind_param::<Array<BigInt>, _>(self.scenario_ids)?;
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<BigInt>, _>(self.environment_ids)?;
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<Integer>, _>(self.attempts)?;
        out.push_sql("::integer[], ");
        out.push_bind_param::<Array<diesel::sql_types::Uuid>, _>(self.message_ids)?;
        out.push_sql("::uuid[]) AS t(s, e, a, m)) ");
        push_insert_dispatches(&mut out, "r", self.message_ids, self.bodies)
    }
}
