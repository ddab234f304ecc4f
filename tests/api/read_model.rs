//! The read model of the consolidated results (`plan_pair_latest`,
//! migration 17): whatever writes the pairs — a rerun through the API, SQL
//! the way results and ends apply, a terminal status changed, executions
//! deleted — it holds, per pair of a chain, exactly what the chain itself
//! gives: latest attempt, its execution, status and reason, attempt count,
//! first failing and last passing attempt.

use crate::helpers::{spawn_app, valid_rerun, TestApp};

/// Pairs whose read-model row differs from their chain (or is missing or extra).
const DISAGREEING: &str = "\
    WITH chain AS ( \
      SELECT p.source_execution_id, p.scenario_id, p.environment_id, max(p.attempt) AS a, \
             (array_agg(p.execution_id ORDER BY p.attempt DESC))[1] AS x, \
             (array_agg(p.status ORDER BY p.attempt DESC))[1] AS st, \
             (array_agg(p.reason ORDER BY p.attempt DESC))[1] AS r, \
             count(*)::int AS c, \
             min(p.attempt) FILTER (WHERE p.status IN ('FAILED', 'ERROR')) AS ff, \
             max(p.attempt) FILTER (WHERE p.status = 'PASSED') AS lp \
        FROM execution_pairs p GROUP BY 1, 2, 3) \
    SELECT count(*) AS n FROM chain c FULL JOIN plan_pair_latest l \
     USING (source_execution_id, scenario_id, environment_id) \
     WHERE (c.a, c.x, c.st, c.r, c.c, c.ff, c.lp) IS DISTINCT FROM \
           (l.attempt, l.execution_id, l.status, l.reason, l.attempt_count, l.first_failed, \
            l.last_passed)";

impl TestApp {
    async fn assert_read_model_agrees(&self, after: &str) {
        assert_eq!(self.count_sql(DISAGREEING).await, 0, "after {after}");
    }
}

#[tokio::test]
async fn the_read_model_agrees_with_the_chains_after_reruns_results_ends_and_deletes() {
    let app = spawn_app().await;
    app.assert_read_model_agrees("the fixture").await;
    for _ in 0..3 {
        let (status, body) = app.rerun(&valid_rerun(false)).await;
        assert_eq!(status, 200, "{body}");
    }
    app.assert_read_model_agrees("three reruns").await;
    app.sql(
        "UPDATE execution_pairs SET status = 'RUNNING' WHERE status = 'QUEUED'; \
         UPDATE execution_pairs SET status = CASE WHEN attempt % 2 = 0 THEN 'FAILED' ELSE 'PASSED' END \
          WHERE status = 'RUNNING' AND attempt < 4",
    )
    .await;
    app.assert_read_model_agrees("results").await;
    app.sql(
        "UPDATE execution_pairs SET status = 'ABORTED', reason = 'CANCELLED' \
          WHERE status IN ('QUEUED', 'RUNNING')",
    )
    .await;
    app.assert_read_model_agrees("a cancel").await;
    app.sql("UPDATE execution_pairs SET status = 'QUEUED', reason = NULL WHERE status = 'PASSED'")
        .await;
    app.assert_read_model_agrees("passed pairs set back to QUEUED")
        .await;
    app.sql(
        "DELETE FROM executions WHERE id = (SELECT max(id) FROM executions WHERE kind = 'RERUN')",
    )
    .await;
    app.assert_read_model_agrees("the last rerun deleted").await;
}
