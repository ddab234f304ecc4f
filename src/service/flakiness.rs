//! Flakiness over time (contract, section 19): `GET /plans/{planId}/flakiness`
//! figures per pair, per environment (with `suspect`) and per scenario over
//! the plan's last `N` full runs, from the per-pair counts of
//! `db::flakiness`, in one read-only snapshot.
//!
//! Rules, from section 19: `flakeRate` = `flaky` / the (pair, run)
//! combinations counted, rounded to 4 decimals. An environment is `suspect`
//! when its `flaky` is at least 3 and its rate is at least twice the rate of
//! all the plan's other environments together (0 when there are none); the
//! comparison uses the exact rates, not the rounded ones.

use crate::auth::ReadScope;
use crate::db::flakiness::{self, PairFlakiness};
use crate::domain::Id;
use crate::domain::KnownTags;
use crate::error::ApiError;
use crate::service::reads::{Conditional, ReadService, ReadSubject};
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Flaky (pair, run) combinations an environment needs before it can be
/// `suspect` (section 19).
pub const SUSPECT_MIN_FLAKY: i64 = 3;
/// How many times the other environments' rate a `suspect` environment's
/// rate is at least (section 19).
pub const SUSPECT_FACTOR: i64 = 2;

/// One scenario on one environment over the runs looked at.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FlakyPairFigures {
    pub scenario_id: i64,
    pub environment_id: i64,
    /// Runs the pair was part of.
    pub runs: i64,
    /// Runs where its first attempt was `FAILED` or `ERROR`.
    pub failed_first: i64,
    /// Runs where it was flaky: an attempt `FAILED` or `ERROR`, a later one `PASSED`.
    pub flaky: i64,
    /// `flaky` / `runs`, rounded to 4 decimals.
    #[schema(example = 0.3333)]
    pub flake_rate: f64,
}

/// One environment over the runs looked at.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvironmentFigures {
    pub environment_id: i64,
    /// (pair, run) combinations of this environment.
    pub pair_runs: i64,
    pub failed_first: i64,
    pub flaky: i64,
    /// `flaky` / `pairRuns`, rounded to 4 decimals.
    pub flake_rate: f64,
    /// `flaky` ≥ 3 and the rate at least twice that of every other
    /// environment of the plan together: the device or environment, more
    /// than the tests, looks flaky.
    pub suspect: bool,
}

/// One scenario over the runs looked at.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioFigures {
    pub scenario_id: i64,
    /// (pair, run) combinations of this scenario.
    pub pair_runs: i64,
    pub failed_first: i64,
    pub flaky: i64,
    /// `flaky` / `pairRuns`, rounded to 4 decimals.
    pub flake_rate: f64,
}

/// `GET /plans/{planId}/flakiness`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanFlakiness {
    pub plan_id: i64,
    /// Full runs looked at: the plan's last `N`, fewer when it has fewer.
    pub runs: i64,
    /// Ordered by scenario, then environment.
    pub pairs: Vec<FlakyPairFigures>,
    /// Ordered by id.
    pub environments: Vec<EnvironmentFigures>,
    /// Ordered by id.
    pub scenarios: Vec<ScenarioFigures>,
}

impl ReadService {
    /// The plan's flakiness over its last `runs` full runs, or 304 when
    /// `known` names its tag (contract, section 22).
    ///
    /// Errors: 404 code 1000 for a plan that does not exist or `scope` may
    /// not see; 503 code 1011.
    pub async fn plan_flakiness(
        &self,
        scope: ReadScope,
        plan_id: Id,
        runs: i64,
        known: KnownTags,
    ) -> Result<Conditional<PlanFlakiness>, ApiError> {
        let plan_id = plan_id.get();
        let key = format!("f{plan_id}.n{runs}");
        let subject = ReadSubject::Plan(plan_id);
        self.conditional(scope, known, subject, key, move |conn| {
            let (looked_at, pairs) = flakiness::plan_flakiness(conn, plan_id, runs)?;
            Ok(figures(plan_id, looked_at, pairs))
        })
        .await
    }
}

/// `flaky` / `of`, rounded to 4 decimals; 0 when `of` is 0.
fn rate(flaky: i64, of: i64) -> f64 {
    if of == 0 {
        return 0.0;
    }
    (flaky as f64 / of as f64 * 10_000.0).round() / 10_000.0
}

/// Counts summed over pairs.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    pair_runs: i64,
    failed_first: i64,
    flaky: i64,
}

impl Tally {
    fn add(&mut self, pair: &PairFlakiness) {
        self.pair_runs += pair.runs;
        self.failed_first += pair.failed_first;
        self.flaky += pair.flaky;
    }
}

/// The answer from the per-pair counts (ordered by scenario, environment).
fn figures(plan_id: i64, runs: i64, pairs: Vec<PairFlakiness>) -> PlanFlakiness {
    let mut environments: BTreeMap<i64, Tally> = BTreeMap::new();
    let mut scenarios: BTreeMap<i64, Tally> = BTreeMap::new();
    let mut total = Tally::default();
    for pair in &pairs {
        environments
            .entry(pair.environment_id)
            .or_default()
            .add(pair);
        scenarios.entry(pair.scenario_id).or_default().add(pair);
        total.add(pair);
    }
    PlanFlakiness {
        plan_id,
        runs,
        environments: environments
            .into_iter()
            .map(|(environment_id, t)| EnvironmentFigures {
                environment_id,
                pair_runs: t.pair_runs,
                failed_first: t.failed_first,
                flaky: t.flaky,
                flake_rate: rate(t.flaky, t.pair_runs),
                suspect: suspect(t, total),
            })
            .collect(),
        scenarios: scenarios
            .into_iter()
            .map(|(scenario_id, t)| ScenarioFigures {
                scenario_id,
                pair_runs: t.pair_runs,
                failed_first: t.failed_first,
                flaky: t.flaky,
                flake_rate: rate(t.flaky, t.pair_runs),
            })
            .collect(),
        pairs: pairs
            .into_iter()
            .map(|p| FlakyPairFigures {
                flake_rate: rate(p.flaky, p.runs),
                scenario_id: p.scenario_id,
                environment_id: p.environment_id,
                runs: p.runs,
                failed_first: p.failed_first,
                flaky: p.flaky,
            })
            .collect(),
    }
}

/// Section 19's rule for the environment `env` among `total` (every
/// environment): `flaky` ≥ 3 and `flaky / pairRuns` ≥ 2 × the others'
/// `flaky / pairRuns` (0 without others), compared exactly by cross
/// multiplication.
fn suspect(env: Tally, total: Tally) -> bool {
    let other_runs = total.pair_runs - env.pair_runs;
    let other_flaky = total.flaky - env.flaky;
    env.flaky >= SUSPECT_MIN_FLAKY
        && (other_runs == 0
            || i128::from(env.flaky) * i128::from(other_runs)
                >= i128::from(SUSPECT_FACTOR) * i128::from(other_flaky) * i128::from(env.pair_runs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(scenario_id: i64, environment_id: i64, runs: i64, flaky: i64) -> PairFlakiness {
        PairFlakiness {
            scenario_id,
            environment_id,
            runs,
            failed_first: flaky,
            flaky,
        }
    }

    #[test]
    fn rates_are_rounded_to_four_decimals() {
        assert_eq!(rate(1, 3), 0.3333);
        assert_eq!(rate(2, 3), 0.6667);
        assert_eq!(rate(0, 0), 0.0);
        assert_eq!(rate(5, 5), 1.0);
    }

    #[test]
    fn an_environment_is_suspect_with_three_flaky_runs_at_twice_the_others_rate() {
        // env 1: 3 flaky of 6 (0.5); env 2: 1 flaky of 4 (0.25): exactly twice
        let answer = figures(1, 2, vec![pair(10, 1, 6, 3), pair(10, 2, 4, 1)]);
        assert!(answer.environments[0].suspect);
        assert!(!answer.environments[1].suspect, "one flaky run is too few");
        // env 1: 3 flaky of 6 (0.5); env 2: 2 flaky of 7 (0.2857 > 0.25)
        let answer = figures(1, 2, vec![pair(10, 1, 6, 3), pair(10, 2, 7, 2)]);
        assert!(!answer.environments[0].suspect);
        // no other environment: their rate is 0
        let answer = figures(1, 3, vec![pair(10, 1, 3, 3)]);
        assert!(answer.environments[0].suspect);
        let answer = figures(1, 3, vec![pair(10, 1, 3, 2)]);
        assert!(!answer.environments[0].suspect);
    }

    #[test]
    fn scenarios_and_environments_sum_their_pairs_in_id_order() {
        let answer = figures(
            1,
            3,
            vec![pair(10, 2, 3, 1), pair(10, 1, 3, 0), pair(11, 2, 2, 2)],
        );
        let environments: Vec<(i64, i64, i64)> = answer
            .environments
            .iter()
            .map(|e| (e.environment_id, e.pair_runs, e.flaky))
            .collect();
        assert_eq!(environments, [(1, 3, 0), (2, 5, 3)]);
        let scenarios: Vec<(i64, i64, i64, f64)> = answer
            .scenarios
            .iter()
            .map(|s| (s.scenario_id, s.pair_runs, s.flaky, s.flake_rate))
            .collect();
        assert_eq!(scenarios, [(10, 6, 1, 0.1667), (11, 2, 2, 1.0)]);
    }
}
