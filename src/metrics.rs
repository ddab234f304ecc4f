//! Prometheus metrics, served at `GET /metrics` in the text exposition format
//! (through the `prometheus` crate; one registry per [`Metrics`], so several
//! servers in one process — the tests — do not share counters).
//!
//! | metric | type | labels | what |
//! |---|---|---|---|
//! | `plan_queue_http_requests_total` | counter | `method`, `route`, `status` | answered HTTP requests; `route` is the route pattern, `unmatched` for unknown paths |
//! | `plan_queue_http_request_duration_seconds` | histogram | `method`, `route` | time to answer, seconds |
//! | `plan_queue_reruns_accepted_total` | counter | `framework_type` | reruns committed (dry runs and replays not counted) |
//! | `plan_queue_runs_accepted_total` | counter | `framework_type` | full runs of a plan committed (dry runs and replays not counted) |
//! | `plan_queue_pairs_queued_total` | counter | `framework_type` | scenario–environment pairs queued by those reruns and runs |
//! | `plan_queue_publishes_total` | counter | `outcome` | relay publishes: `confirmed`, `returned`, `nacked`, `timed_out`, `failed` (connection) |
//! | `plan_queue_dispatch_pending` | gauge | | unpublished dispatch (outbox) rows, read at scrape time |
//! | `plan_queue_dispatch_oldest_pending_age_seconds` | gauge | | age of the oldest of them, 0 when none |
//! | `plan_queue_db_pool_connections_in_use` | gauge | | request pool connections checked out |
//! | `plan_queue_db_pool_waiting` | gauge | | requests waiting for a connection |
//! | `plan_queue_broker_connected` | gauge | | 1 while the relay holds a RabbitMQ connection, else 0 |
//! | `plan_queue_broker_blocked` | gauge | | 1 while the broker blocks that connection (flow control: memory or disk alarm), else 0 |
//! | `plan_queue_broker_node` | gauge | `connection`, `node` | 1 per connection (`relay`, `results`) and the RabbitMQ node (`host:port` from `AMQP_URL`) it uses now; absent while it has none |
//! | `plan_queue_topology_conflicts` | gauge | `kind`, `name`, `argument` | 1 per queue, exchange or binding the broker refused to declare as configured (e.g. `argument="x-dead-letter-exchange"`) |
//! | `plan_queue_results_applied_total` | counter | | runners' results that changed their pair (contract, section 9) |
//! | `plan_queue_results_ignored_total` | counter | | results of an existing pair that changed nothing (duplicate, after the terminal one) |
//! | `plan_queue_results_rejected_total` | counter | `reason` | results rejected without requeue (dead-lettered): `too_large`, `not_json`, `invalid`, `no_pair`, `refused_by_database` |
//! | `plan_queue_result_lag_seconds` | histogram | | from a result's `at` to its commit, seconds |
//! | `plan_queue_executions_finished_total` | counter | | executions turned `FINISHED` (an `execution.finished` event written) |
//! | `plan_queue_flaky_pairs_found_total` | counter | | flaky pairs listed by those events |
//! | `plan_queue_results_consumer_connected` | gauge | | 1 while the results consumer holds a RabbitMQ connection, else 0 |
//! | `plan_queue_pairs_ended_total` | counter | `reason` | pairs plan-queue itself ended (contract, section 14): `CANCELLED`, `QUEUE_TIMEOUT`, `RUN_TIMEOUT`, `DEAD_LETTERED` |
//! | `plan_queue_results_late_total` | counter | | results for a pair plan-queue had already ended with a reason (acknowledged, changed nothing) |
//! | `plan_queue_callbacks_total` | counter | `outcome` | callback attempts (contract, section 21): `delivered` (a 2xx), `retried` (failed, tried again later), `given_up` (failed past `CALLBACK_RETRY_SECS`) |
//! | `plan_queue_oldest_in_flight_pair_age_seconds` | gauge | | age of the oldest pair still `QUEUED` or `RUNNING` (from its execution's `requestedAt`), 0 when none; set by the deadline sweep |

use crate::amqp::{PublishOutcome, TopologyConflict};
use anyhow::Context;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The `outcome` label of `plan_queue_publishes_total`: `confirmed`,
/// `returned`, `nacked`, `timed_out`, `failed`.
fn outcome_label(outcome: PublishOutcome) -> &'static str {
    match outcome {
        PublishOutcome::Confirmed => "confirmed",
        PublishOutcome::Returned => "returned",
        PublishOutcome::Nacked => "nacked",
        PublishOutcome::TimedOut => "timed_out",
        PublishOutcome::Failed => "failed",
    }
}

/// Every metric of one service instance; see the module doc for names and units.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    reruns_accepted: IntCounterVec,
    runs_accepted: IntCounterVec,
    pairs_queued: IntCounterVec,
    publishes: IntCounterVec,
    /// Unpublished dispatch rows (set at scrape time).
    pub dispatch_pending: IntGauge,
    /// Age of the oldest unpublished dispatch row, seconds (set at scrape time).
    pub dispatch_oldest_age: Gauge,
    /// Request pool connections in use (set at scrape time).
    pub db_pool_in_use: IntGauge,
    /// Requests waiting for a database connection (set at scrape time).
    pub db_pool_waiting: IntGauge,
    /// 1 while the relay holds a broker connection (set at scrape time).
    pub broker_connected: IntGauge,
    /// 1 while the broker blocks the relay's connection (set at scrape time).
    pub broker_blocked: IntGauge,
    topology_conflicts: IntGaugeVec,
    broker_node: IntGaugeVec,
    results_applied: IntCounter,
    results_ignored: IntCounter,
    results_rejected: IntCounterVec,
    result_lag: Histogram,
    executions_finished: IntCounter,
    flaky_pairs_found: IntCounter,
    /// 1 while the results consumer holds a broker connection.
    pub results_consumer_connected: IntGauge,
    pairs_ended: IntCounterVec,
    results_late: IntCounter,
    callbacks: IntCounterVec,
    /// Age of the oldest in-flight pair, seconds (set by the deadline sweep).
    pub oldest_in_flight_age: Gauge,
}

impl Metrics {
    /// Creates and registers every metric. Errors only on a programming
    /// mistake (a name registered twice), so start-up may fail on it.
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| -> anyhow::Result<IntCounterVec> {
            let metric = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let int_gauge = |name: &str, help: &str| -> anyhow::Result<IntGauge> {
            let metric = IntGauge::new(name, help)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "plan_queue_http_request_duration_seconds",
                "Time to answer an HTTP request, seconds.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["method", "route"],
        )?;
        registry.register(Box::new(http_duration.clone()))?;
        let dispatch_oldest_age = Gauge::new(
            "plan_queue_dispatch_oldest_pending_age_seconds",
            "Age of the oldest unpublished dispatch row, seconds; 0 when none.",
        )?;
        registry.register(Box::new(dispatch_oldest_age.clone()))?;
        let topology_conflicts = IntGaugeVec::new(
            Opts::new(
                "plan_queue_topology_conflicts",
                "1 per queue, exchange or binding RabbitMQ refused to declare as configured, by the differing argument.",
            ),
            &["kind", "name", "argument"],
        )?;
        registry.register(Box::new(topology_conflicts.clone()))?;
        let broker_node = IntGaugeVec::new(
            Opts::new(
                "plan_queue_broker_node",
                "1 per broker connection (relay, results) and the RabbitMQ node (host:port) it uses now.",
            ),
            &["connection", "node"],
        )?;
        registry.register(Box::new(broker_node.clone()))?;
        let plain_counter = |name: &str, help: &str| -> anyhow::Result<IntCounter> {
            let metric = IntCounter::new(name, help)?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        };
        let result_lag = Histogram::with_opts(
            HistogramOpts::new(
                "plan_queue_result_lag_seconds",
                "From a result's `at` to its commit, seconds.",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
            ]),
        )?;
        registry.register(Box::new(result_lag.clone()))?;
        let oldest_in_flight_age = Gauge::new(
            "plan_queue_oldest_in_flight_pair_age_seconds",
            "Age of the oldest QUEUED or RUNNING pair (from its execution's requestedAt), seconds; 0 when none.",
        )?;
        registry.register(Box::new(oldest_in_flight_age.clone()))?;
        Ok(Metrics {
            pairs_ended: counter(
                "plan_queue_pairs_ended_total",
                "Pairs plan-queue itself ended, by reason: CANCELLED, QUEUE_TIMEOUT, RUN_TIMEOUT, DEAD_LETTERED.",
                &["reason"],
            )?,
            results_late: plain_counter(
                "plan_queue_results_late_total",
                "Results for a pair plan-queue had already ended with a reason (acknowledged, changed nothing).",
            )?,
            callbacks: counter(
                "plan_queue_callbacks_total",
                "Callback attempts by outcome: delivered, retried, given_up.",
                &["outcome"],
            )?,
            oldest_in_flight_age,
            results_applied: plain_counter(
                "plan_queue_results_applied_total",
                "Runners' results that changed their pair.",
            )?,
            results_ignored: plain_counter(
                "plan_queue_results_ignored_total",
                "Results of an existing pair that changed nothing (duplicate, after the terminal one).",
            )?,
            results_rejected: counter(
                "plan_queue_results_rejected_total",
                "Results rejected without requeue (dead-lettered), by reason.",
                &["reason"],
            )?,
            result_lag,
            executions_finished: plain_counter(
                "plan_queue_executions_finished_total",
                "Executions turned FINISHED (execution.finished events written).",
            )?,
            flaky_pairs_found: plain_counter(
                "plan_queue_flaky_pairs_found_total",
                "Flaky pairs listed by execution.finished events.",
            )?,
            results_consumer_connected: int_gauge(
                "plan_queue_results_consumer_connected",
                "1 while the results consumer holds a RabbitMQ connection, else 0.",
            )?,
            http_requests: counter(
                "plan_queue_http_requests_total",
                "Answered HTTP requests by method, route pattern and status.",
                &["method", "route", "status"],
            )?,
            http_duration,
            reruns_accepted: counter(
                "plan_queue_reruns_accepted_total",
                "Reruns committed, by framework type.",
                &["framework_type"],
            )?,
            runs_accepted: counter(
                "plan_queue_runs_accepted_total",
                "Full runs of a plan committed, by framework type.",
                &["framework_type"],
            )?,
            pairs_queued: counter(
                "plan_queue_pairs_queued_total",
                "Scenario-environment pairs queued, by framework type.",
                &["framework_type"],
            )?,
            publishes: counter(
                "plan_queue_publishes_total",
                "Relay publishes by outcome: confirmed, returned, nacked, timed_out, failed.",
                &["outcome"],
            )?,
            dispatch_pending: int_gauge(
                "plan_queue_dispatch_pending",
                "Unpublished dispatch (outbox) rows.",
            )?,
            dispatch_oldest_age,
            db_pool_in_use: int_gauge(
                "plan_queue_db_pool_connections_in_use",
                "Request pool database connections checked out.",
            )?,
            db_pool_waiting: int_gauge(
                "plan_queue_db_pool_waiting",
                "Requests waiting for a database connection.",
            )?,
            broker_connected: int_gauge(
                "plan_queue_broker_connected",
                "1 while the relay holds a RabbitMQ connection, else 0.",
            )?,
            broker_blocked: int_gauge(
                "plan_queue_broker_blocked",
                "1 while RabbitMQ blocks the relay's connection (memory or disk alarm), else 0.",
            )?,
            topology_conflicts,
            broker_node,
            registry,
        })
    }

    /// Counts one answered request; `route` is the matched pattern or `unmatched`.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.http_requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.http_duration
            .with_label_values(&[method, route])
            .observe(seconds);
    }

    /// Counts one committed rerun of `framework_type` with `pairs` queued pairs.
    pub fn rerun_accepted(&self, framework_type: &str, pairs: usize) {
        self.reruns_accepted
            .with_label_values(&[framework_type])
            .inc();
        self.pairs_queued
            .with_label_values(&[framework_type])
            .inc_by(pairs as u64);
    }

    /// Counts one committed full run of `framework_type` with `pairs` queued pairs.
    pub fn run_accepted(&self, framework_type: &str, pairs: usize) {
        self.runs_accepted
            .with_label_values(&[framework_type])
            .inc();
        self.pairs_queued
            .with_label_values(&[framework_type])
            .inc_by(pairs as u64);
    }

    /// Counts one relay publish by its outcome.
    pub fn publish(&self, outcome: PublishOutcome) {
        self.publishes
            .with_label_values(&[outcome_label(outcome)])
            .inc();
    }

    /// Shows exactly `conflicts` (set at scrape time; resolved ones vanish).
    pub fn set_topology_conflicts(&self, conflicts: &[TopologyConflict]) {
        self.topology_conflicts.reset();
        for c in conflicts {
            self.topology_conflicts
                .with_label_values(&[c.kind.as_str(), c.name.as_str(), c.argument.as_str()])
                .set(1);
        }
    }

    /// Replaces the `plan_queue_broker_node` series: one per connection
    /// name that has a node (`host:port`), none for those without.
    pub fn set_broker_nodes(&self, nodes: &[(&str, Option<String>)]) {
        self.broker_node.reset();
        for (connection, node) in nodes {
            if let Some(node) = node {
                self.broker_node
                    .with_label_values(&[connection, node.as_str()])
                    .set(1);
            }
        }
    }

    /// Counts one result that changed its pair, `lag_seconds` after its `at`.
    pub fn result_applied(&self, lag_seconds: f64) {
        self.results_applied.inc();
        self.result_lag.observe(lag_seconds.max(0.0));
    }

    /// Counts `pairs` that plan-queue ended with `reason` (section 14).
    pub fn pairs_ended(&self, reason: &str, pairs: usize) {
        self.pairs_ended
            .with_label_values(&[reason])
            .inc_by(pairs as u64);
    }

    /// Counts one result that came after plan-queue ended its pair.
    pub fn result_late(&self) {
        self.results_late.inc();
    }

    /// Counts one callback attempt's `outcome`: `delivered`, `retried` or
    /// `given_up` (a label of `plan_queue_callbacks_total`, section 21).
    pub fn callback(&self, outcome: &str) {
        self.callbacks.with_label_values(&[outcome]).inc();
    }

    /// Counts one result that changed nothing.
    pub fn result_ignored(&self) {
        self.results_ignored.inc();
    }

    /// Counts one result rejected for `reason` (a label of `plan_queue_results_rejected_total`).
    pub fn result_rejected(&self, reason: &str) {
        self.results_rejected.with_label_values(&[reason]).inc();
    }

    /// Counts one execution turned `FINISHED` with `flaky` flaky pairs.
    pub fn execution_finished(&self, flaky: usize) {
        self.executions_finished.inc();
        self.flaky_pairs_found.inc_by(flaky as u64);
    }

    /// Every metric in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> anyhow::Result<String> {
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .context("encoding metrics")?;
        String::from_utf8(text).context("metrics are not UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_appear_in_the_text_format_with_their_labels() {
        let metrics = Metrics::new().unwrap();
        metrics.rerun_accepted("APPIUM", 3);
        metrics.publish(PublishOutcome::Returned);
        metrics.observe_request("POST", "/queue/rerun", 200, 0.02);
        let text = metrics.render().unwrap();
        assert!(text.contains(r#"plan_queue_pairs_queued_total{framework_type="APPIUM"} 3"#));
        assert!(text.contains(r#"plan_queue_publishes_total{outcome="returned"} 1"#));
        assert!(text.contains(
            r#"plan_queue_http_requests_total{method="POST",route="/queue/rerun",status="200"} 1"#
        ));
    }
}
