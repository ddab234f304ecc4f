//! The query of `GET /plans/{planId}/flakiness` (contract, section 19): per
//! scenario–environment pair, over the plan's last `N` full runs, in how many
//! runs it was present, failed first and was flaky, each run's consolidated
//! results taken as they stand now (section 6, that run as the source).
//!
//! The plan's last runs are the first rows of `executions_latest_run_idx`;
//! each run's pairs are a range of the read model `plan_pair_latest`
//! (migration 17: one row per pair of a chain, with its lowest failing and
//! highest passing attempt, kept by triggers on write), so `runs=100` reads
//! 100 rows per pair, not every attempt (bench/BENCHMARKS.md, issue 22).

use super::models::KIND_RUN;
use diesel::pg::PgConnection;
use diesel::sql_types::BigInt;
use diesel::{QueryResult, QueryableByName, RunQueryDsl};

/// One pair's figures over the runs looked at.
#[derive(QueryableByName, Debug, Clone, PartialEq, Eq)]
pub struct PairFlakiness {
    #[diesel(sql_type = BigInt)]
    pub scenario_id: i64,
    #[diesel(sql_type = BigInt)]
    pub environment_id: i64,
    /// Runs the pair was part of.
    #[diesel(sql_type = BigInt)]
    pub runs: i64,
    /// Runs where its attempt 1 was `FAILED` or `ERROR`.
    #[diesel(sql_type = BigInt)]
    pub failed_first: i64,
    /// Runs where an attempt `FAILED` or `ERROR` came before one `PASSED`.
    #[diesel(sql_type = BigInt)]
    pub flaky: i64,
}

#[derive(QueryableByName)]
struct RunCount {
    #[diesel(sql_type = BigInt)]
    runs: i64,
}

/// The plan's last `runs` full runs' chains, per pair (ordered by scenario,
/// then environment), and how many runs that was (at most `runs`).
pub fn plan_flakiness(
    conn: &mut PgConnection,
    plan_id: i64,
    runs: i64,
) -> QueryResult<(i64, Vec<PairFlakiness>)> {
    let last_runs = format!(
        "SELECT x.id FROM executions x WHERE x.plan_id = $1 AND x.kind = '{KIND_RUN}' \
          ORDER BY x.requested_at DESC, x.id DESC LIMIT $2"
    );
    let looked_at = diesel::sql_query(format!("SELECT count(*) AS runs FROM ({last_runs}) r"))
        .bind::<BigInt, _>(plan_id)
        .bind::<BigInt, _>(runs)
        .get_result::<RunCount>(conn)?
        .runs;
    if looked_at == 0 {
        return Ok((0, Vec::new()));
    }
    // per run, a range of plan_pair_latest's primary key (one row per pair,
    // its first failure and last pass kept on write: migration 17)
    let pairs = diesel::sql_query(format!(
        "WITH runs AS ({last_runs}) \
         SELECT l.scenario_id, l.environment_id, count(*) AS runs, \
                count(*) FILTER (WHERE l.first_failed = 1) AS failed_first, \
                count(*) FILTER (WHERE l.first_failed < l.last_passed) AS flaky \
           FROM runs r JOIN plan_pair_latest l ON l.source_execution_id = r.id \
          GROUP BY l.scenario_id, l.environment_id \
          ORDER BY l.scenario_id, l.environment_id"
    ))
    .bind::<BigInt, _>(plan_id)
    .bind::<BigInt, _>(runs)
    .load(conn)?;
    Ok((looked_at, pairs))
}
