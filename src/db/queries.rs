//! The calls of the rerun and of the run: one statement each, the server
//! functions `queue_rerun` and `queue_run` (`src/db/functions/`), which check a
//! request in the contract's order and write it, so that each is one round
//! trip and one commit (issue 11). Constant SQL text, so diesel caches each
//! prepared statement per connection (a static `QueryId`).
//!
//! `bench/rerun-2pair.pgbench` replays the rerun's call; keep the two in
//! step (see `bench/BENCHMARKS.md`).

use crate::rules::{Refusal, RefusalArgs, UnknownRefusal};
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text, Timestamptz};
use diesel::{QueryResult, QueryableByName, RunQueryDsl};

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

/// What the calls of a rerun and a run write besides the request: six
/// arguments of `queue_rerun` and `queue_run` in a row, and
/// `p_own_transaction`.
pub struct WriteContext<'a> {
    pub requested_at: chrono::DateTime<chrono::Utc>,
    /// `requested_at` as the message's `requestedAt` (RFC 3339, seconds).
    pub requested_at_text: String,
    /// `X-Request-Id`, the AMQP `correlation_id` of the messages.
    pub correlation_id: Option<&'a str>,
    /// The exchange the dispatch rows record (`AMQP_EXCHANGE`).
    pub exchange: &'a str,
    /// The message id of the first queued pair, kept by the caller: the same
    /// call made again after a lost connection answers what the first wrote
    /// if it committed ([`crate::db::Db::run_replayable`]).
    pub first_message_id: uuid::Uuid,
    /// This call is made again after a lost connection: look for
    /// `first_message_id` first (the first call only writes it).
    pub replay: bool,
    /// The call is its transaction's only statement (no Idempotency-Key):
    /// the server function bumps the plan's `results_version` itself in its
    /// last statement, the commit following at once; `false` (inside the
    /// key's transaction) leaves it to migration 15's deferred triggers at
    /// commit, so the plan's row is never held while a transaction goes on.
    pub own_transaction: bool,
}

impl<'a> WriteContext<'a> {
    /// Requested now; `own_transaction` as the field.
    pub fn now(
        correlation_id: Option<&'a str>,
        exchange: &'a str,
        first_message_id: uuid::Uuid,
        replay: bool,
        own_transaction: bool,
    ) -> Self {
        let requested_at = chrono::Utc::now();
        WriteContext {
            requested_at,
            requested_at_text: requested_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            correlation_id,
            exchange,
            first_message_id,
            replay,
            own_transaction,
        }
    }

    /// Pushes the six arguments, comma-separated.
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_bind_param::<Timestamptz, _>(&self.requested_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&self.requested_at_text)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.correlation_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.exchange)?;
        out.push_sql(", ");
        out.push_bind_param::<diesel::sql_types::Uuid, _>(&self.first_message_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&self.replay)
    }
}

/// A rerun in one statement: the server function `queue_rerun`
/// (`src/db/functions/queue_rerun.sql`) checks the request against the
/// database in the contract's order and, unless it is a dry run and every
/// check passed, writes the rerun, its pairs and one dispatch row per pair
/// (with the message body of section 2). Called outside a transaction it is
/// one round trip and one commit.
///
/// It locks the plan shared (a run of the plan takes it exclusively) and each
/// selected pair of the source run, not the source run: reruns of disjoint
/// pairs of one plan do not wait for each other, and the attempts of one pair
/// are numbered one after another.
///
/// One row: [`QueueRerunRow`].
pub struct QueueRerun<'a> {
    pub plan_id: i64,
    pub user_id: i64,
    /// Normalised; the routing key and the message's `frameworkType`.
    pub framework_type: &'a str,
    /// The named pairs in request order (empty with `statuses`); an
    /// environment `None` expands to every environment of the scenario in
    /// the source run.
    pub scenario_ids: &'a [i64],
    pub environment_ids: &'a [Option<i64>],
    /// Select the source run's pairs by current status instead (section 8).
    pub statuses: &'a [String],
    /// `queue`, `skip` or `refuse` (section 8).
    pub on_in_flight: &'a str,
    pub max_pairs: i32,
    pub max_attempts: i32,
    pub dry_run: bool,
    /// When, by whom traced, to which exchange, and the first message id.
    pub write: &'a WriteContext<'a>,
    /// `QUEUE_TIMEOUT_SECS`: each message's `expiresAt` is `requestedAt` +
    /// it (contract, section 15).
    pub queue_timeout_secs: i32,
    /// The body's `retryFailed` (contract, section 18), stored as the
    /// execution's retry budget; `None`: the plan's.
    pub retry_failed: Option<i32>,
    /// The body's checked `callbackUrl` (contract, section 21), stored on
    /// the execution; `None`: no callback.
    pub callback_url: Option<&'a str>,
}
static_query_id!(QueueRerun<'_>, QueueRerunId);

/// What `queue_rerun` answered: a failed check with its arguments, or the
/// rerun with its queued and skipped pairs (parallel arrays, in answer order).
#[derive(QueryableByName, Debug)]
pub struct QueueRerunRow {
    /// The contract's code of the first check that failed; `None` when accepted.
    #[diesel(sql_type = Nullable<Integer>)]
    pub error_code: Option<i32>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub error_scenario_id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub error_environment_id: Option<i64>,
    /// 1014: the execution holding the pair in flight.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub error_execution_id: Option<i64>,
    /// 1008: the number of pairs after expansion.
    #[diesel(sql_type = Nullable<Integer>)]
    pub error_count: Option<i32>,
    /// 1019: `scenario` or `environment` (section 20).
    #[diesel(sql_type = Nullable<Text>)]
    pub error_subject: Option<String>,
    /// 1019: the id that left the plan.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub error_id: Option<i64>,
    /// 1023: the plan's framework type.
    #[diesel(sql_type = Nullable<Text>)]
    pub error_framework_type: Option<String>,
    /// The rerun written; `None` for a dry run.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub new_execution_id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    pub source_id: Option<i64>,
    #[diesel(sql_type = Nullable<Array<BigInt>>)]
    pub queued_scenario_ids: Option<Vec<i64>>,
    #[diesel(sql_type = Nullable<Array<BigInt>>)]
    pub queued_environment_ids: Option<Vec<i64>>,
    #[diesel(sql_type = Nullable<Array<Integer>>)]
    pub queued_attempts: Option<Vec<i32>>,
    /// `None` for a dry run.
    #[diesel(sql_type = Nullable<Array<diesel::sql_types::Uuid>>)]
    pub queued_message_ids: Option<Vec<uuid::Uuid>>,
    #[diesel(sql_type = Nullable<Array<BigInt>>)]
    pub skipped_scenario_ids: Option<Vec<i64>>,
    #[diesel(sql_type = Nullable<Array<BigInt>>)]
    pub skipped_environment_ids: Option<Vec<i64>>,
    #[diesel(sql_type = Nullable<Array<BigInt>>)]
    pub skipped_execution_ids: Option<Vec<i64>>,
    #[diesel(sql_type = Nullable<Array<Integer>>)]
    pub skipped_attempts: Option<Vec<i32>>,
    #[diesel(sql_type = Nullable<Array<Text>>)]
    pub skipped_statuses: Option<Vec<String>>,
}

impl QueueRerunRow {
    /// The check that failed, with its arguments; `None` when accepted.
    ///
    /// Errors: [`UnknownRefusal`] for a code [`Refusal`] does not map.
    pub fn refusal(&self) -> Result<Option<Refusal>, UnknownRefusal> {
        self.error_code
            .map(|code| {
                Refusal::parse(
                    code,
                    RefusalArgs {
                        scenario_id: self.error_scenario_id,
                        environment_id: self.error_environment_id,
                        execution_id: self.error_execution_id,
                        count: self.error_count.map(i64::from),
                        subject: self.error_subject.clone(),
                        id: self.error_id,
                        framework_type: self.error_framework_type.clone(),
                    },
                )
            })
            .transpose()
    }
}

impl Query for QueueRerun<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl QueryFragment<Pg> for QueueRerun<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT * FROM queue_rerun(");
        out.push_bind_param::<BigInt, _>(&self.plan_id)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.user_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.framework_type)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(self.scenario_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(self.environment_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(self.statuses)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(self.on_in_flight)?;
        out.push_sql(", ");
        out.push_bind_param::<Integer, _>(&self.max_pairs)?;
        out.push_sql(", ");
        out.push_bind_param::<Integer, _>(&self.max_attempts)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&self.dry_run)?;
        out.push_sql(", ");
        self.write.push(&mut out)?;
        out.push_sql(", ");
        out.push_bind_param::<Integer, _>(&self.queue_timeout_secs)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Integer>, _>(&self.retry_failed)?;
        out.push_sql(", p_callback_url => ");
        out.push_bind_param::<Nullable<Text>, _>(&self.callback_url)?;
        out.push_sql(", p_own_transaction => ");
        out.push_bind_param::<Bool, _>(&self.write.own_transaction)?;
        out.push_sql(")");
        Ok(())
    }
}

/// A run of a plan in one statement: the server function `queue_run`
/// (`src/db/functions/queue_run.sql`) checks the request in the contract's
/// order (section 7), takes the plan's lock exclusively (it waits for the
/// plan's reruns in progress, see [`QueueRerun`]), applies the in-flight
/// guard and, unless a dry run, writes the run, its pairs and one dispatch
/// row per pair.
///
/// One row: [`QueueRunRow`].
pub struct QueueRun<'a> {
    pub plan_id: i64,
    pub user_id: i64,
    /// The body's framework type, normalised and checked; `None`: the plan's.
    pub framework_type: Option<&'a str>,
    /// The configured framework types, for the plan's own.
    pub framework_types: &'a [String],
    /// The subsets in request order; `None`: all of the plan's.
    pub scenario_ids: Option<&'a [i64]>,
    pub environment_ids: Option<&'a [i64]>,
    pub force: bool,
    pub max_pairs: i32,
    pub dry_run: bool,
    /// When, by whom traced, to which exchange, and the first message id.
    pub write: &'a WriteContext<'a>,
    /// `QUEUE_TIMEOUT_SECS`: each message's `expiresAt` is `requestedAt` +
    /// it (contract, section 15).
    pub queue_timeout_secs: i32,
    /// The body's `retryFailed` (contract, section 18), stored as the
    /// execution's retry budget; `None`: the plan's.
    pub retry_failed: Option<i32>,
    /// The body's checked `callbackUrl` (contract, section 21), stored on
    /// the execution; `None`: no callback.
    pub callback_url: Option<&'a str>,
}
static_query_id!(QueueRun<'_>, QueueRunId);

/// What `queue_run` answered: a failed check with its arguments, or the run
/// with its pairs (parallel arrays, by scenario then environment).
#[derive(QueryableByName, Debug)]
pub struct QueueRunRow {
    /// The contract's code of the first check that failed; `None` when accepted.
    #[diesel(sql_type = Nullable<Integer>)]
    pub error_code: Option<i32>,
    /// 1019: `scenario` or `environment`.
    #[diesel(sql_type = Nullable<Text>)]
    pub error_subject: Option<String>,
    /// 1019: the id not in the plan.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub error_id: Option<i64>,
    /// 1008: scenarios x environments.
    #[diesel(sql_type = Nullable<Integer>)]
    pub error_count: Option<i32>,
    /// 1014: the execution holding the first pair in flight.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub error_execution_id: Option<i64>,
    /// The run's framework type (1003: the plan's, not configured).
    #[diesel(sql_type = Nullable<Text>)]
    pub framework_type_used: Option<String>,
    /// The run written; `None` for a dry run.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub new_execution_id: Option<i64>,
    #[diesel(sql_type = Nullable<Array<BigInt>>)]
    pub queued_scenario_ids: Option<Vec<i64>>,
    #[diesel(sql_type = Nullable<Array<BigInt>>)]
    pub queued_environment_ids: Option<Vec<i64>>,
    /// `None` for a dry run.
    #[diesel(sql_type = Nullable<Array<diesel::sql_types::Uuid>>)]
    pub queued_message_ids: Option<Vec<uuid::Uuid>>,
}

impl QueueRunRow {
    /// The check that failed, with its arguments; `None` when accepted.
    ///
    /// Errors: [`UnknownRefusal`] for a code [`Refusal`] does not map.
    pub fn refusal(&self) -> Result<Option<Refusal>, UnknownRefusal> {
        self.error_code
            .map(|code| {
                Refusal::parse(
                    code,
                    RefusalArgs {
                        execution_id: self.error_execution_id,
                        count: self.error_count.map(i64::from),
                        subject: self.error_subject.clone(),
                        id: self.error_id,
                        framework_type: self.framework_type_used.clone(),
                        ..RefusalArgs::default()
                    },
                )
            })
            .transpose()
    }
}

impl Query for QueueRun<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl QueryFragment<Pg> for QueueRun<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT * FROM queue_run(");
        out.push_bind_param::<BigInt, _>(&self.plan_id)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.user_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&self.framework_type)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(self.framework_types)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Array<BigInt>>, _>(&self.scenario_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Array<BigInt>>, _>(&self.environment_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&self.force)?;
        out.push_sql(", ");
        out.push_bind_param::<Integer, _>(&self.max_pairs)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&self.dry_run)?;
        out.push_sql(", ");
        self.write.push(&mut out)?;
        out.push_sql(", ");
        out.push_bind_param::<Integer, _>(&self.queue_timeout_secs)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Integer>, _>(&self.retry_failed)?;
        out.push_sql(", p_callback_url => ");
        out.push_bind_param::<Nullable<Text>, _>(&self.callback_url)?;
        out.push_sql(", p_own_transaction => ");
        out.push_bind_param::<Bool, _>(&self.write.own_transaction)?;
        out.push_sql(")");
        Ok(())
    }
}
