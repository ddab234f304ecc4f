//! The query of `GET /plans/{planId}/flakiness` (contract, section 19): per
//! scenario–environment pair, over the plan's last `N` full runs, in how many
//! runs it was present, failed first and was flaky, each run's consolidated
//! results taken as they stand now (section 6, that run as the source).
//!
//! No summary table: the plan's last runs are the first rows of
//! `executions_latest_run_idx`, and each run's chain (every attempt of every
//! pair, with its status) is a range of `execution_pairs_chain_idx`, which
//! covers the status since migration 7: an index-only scan, nothing written
//! on the results path (bench/BENCHMARKS.md, "Flakiness over time").

use super::models::{KIND_RUN, STATUS_ERROR, STATUS_FAILED, STATUS_PASSED};
use diesel::pg::PgConnection;
use diesel::sql_types::{BigInt, Text};
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
    let failing = format!("('{STATUS_FAILED}', '{STATUS_ERROR}')");
    // per run, a GroupAggregate over its chain in index order (no hash of
    // runs x pairs groups, which spilled to disk: bench/BENCHMARKS.md)
    let pairs = diesel::sql_query(format!(
        "WITH runs AS ({last_runs}) \
         SELECT pr.scenario_id, pr.environment_id, count(*) AS runs, \
                count(*) FILTER (WHERE pr.failed_first) AS failed_first, \
                count(*) FILTER (WHERE pr.flaky) AS flaky \
           FROM runs r CROSS JOIN LATERAL ( \
                SELECT p.scenario_id, p.environment_id, \
                       bool_or(p.attempt = 1 AND p.status IN {failing}) AS failed_first, \
                       coalesce(min(p.attempt) FILTER (WHERE p.status IN {failing}) \
                                < max(p.attempt) FILTER (WHERE p.status = $3), false) AS flaky \
                  FROM execution_pairs p WHERE p.source_execution_id = r.id \
                 GROUP BY p.scenario_id, p.environment_id) pr \
          GROUP BY pr.scenario_id, pr.environment_id \
          ORDER BY pr.scenario_id, pr.environment_id"
    ))
    .bind::<BigInt, _>(plan_id)
    .bind::<BigInt, _>(runs)
    .bind::<Text, _>(STATUS_PASSED)
    .load(conn)?;
    Ok((looked_at, pairs))
}
