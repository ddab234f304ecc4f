//! Bench load driver for `POST /queue/rerun`, run by `bench/run.sh`.
//!
//! Spreads requests over the seeded bench plans (`bench/seed.sql`), or over
//! the pairs of one plan (`--target`), and
//! consumes the framework queue itself, so a request counts only when every
//! one of its messages has been consumed.
//!
//! Modes (first argument):
//! - `closed`: `--connections C` workers send back to back for `--secs T`;
//!   prints HTTP and end-to-end throughput (saturation).
//! - `open`: requests start at fixed times, `--rate R` per second for
//!   `--secs T`, whatever the answers do; latency is measured from the
//!   scheduled start (the wrk2 / `oha --latency-correction` way, so
//!   coordinated omission does not hide queueing).
//! - `single`: one request for every pair of the big plan (1000 pairs):
//!   time to the 200 and until all its messages are consumed.
//! - `get`: `GET --path P` (relative to the service, e.g.
//!   `/plans/501/results`) at a fixed `--rate R` per second for `--secs T`,
//!   open loop like `open`; prints its latency percentiles and how many
//!   answers were 304. `--if-none-match T` sends that `If-None-Match`
//!   (`current`: the `ETag` of one GET made first). It does not consume
//!   the framework queue, so it can run beside an `open` load.
//!
//! Which pairs a rerun names (`--target`, for `closed` and `open`):
//! - `spread` (default): a random plan of the `--plans`, `--pairs / 2`
//!   distinct scenarios of it on environments 1 and 2;
//! - `one-plan`: the big plan only (1 000 pairs), each request the next
//!   `--pairs` pairs in turn, so concurrent requests name disjoint pairs;
//! - `same-pair`: the big plan's first `--pairs` pairs, every time.
//!
//! Output: `result <name> <value>` lines for `run.sh`. Environment:
//! `BENCH_URL`, `BENCH_TOKEN`, `AMQP_URL`, `BENCH_QUEUE`.

use futures_util::StreamExt;
use lapin::Connection;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;

struct Args {
    mode: String,
    plans: u64,
    scenarios: u64,
    pairs: u64,
    connections: usize,
    rate: f64,
    secs: f64,
    path: String,
    /// `get`: the `If-None-Match` to send; `current`: the `ETag` of a first
    /// GET of the path (so every timed answer should be a 304).
    if_none_match: Option<String>,
    target: Target,
}

/// Which pairs the reruns name (see the module doc).
#[derive(Clone, Copy, PartialEq)]
enum Target {
    Spread,
    OnePlan,
    SamePair,
}

fn parse_args() -> Args {
    let mut argv = std::env::args().skip(1);
    let mut args = Args {
        mode: argv.next().expect("mode: closed | open | single | get"),
        plans: 500,
        scenarios: 15,
        pairs: 2,
        connections: 16,
        rate: 100.0,
        secs: 5.0,
        path: "/health".to_owned(),
        if_none_match: None,
        target: Target::Spread,
    };
    while let Some(flag) = argv.next() {
        let value = argv.next().expect("flag value");
        match flag.as_str() {
            "--plans" => args.plans = value.parse().expect("--plans"),
            "--scenarios" => args.scenarios = value.parse().expect("--scenarios"),
            "--pairs" => args.pairs = value.parse().expect("--pairs"),
            "--connections" => args.connections = value.parse().expect("--connections"),
            "--rate" => args.rate = value.parse().expect("--rate"),
            "--secs" => args.secs = value.parse().expect("--secs"),
            "--path" => args.path = value,
            "--if-none-match" => args.if_none_match = Some(value),
            "--target" => {
                args.target = match value.as_str() {
                    "spread" => Target::Spread,
                    "one-plan" => Target::OnePlan,
                    "same-pair" => Target::SamePair,
                    other => panic!("--target spread | one-plan | same-pair, not {other}"),
                }
            }
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        args.pairs.is_multiple_of(2) && args.pairs / 2 <= args.scenarios,
        "--pairs must be even and at most 2 x --scenarios"
    );
    args
}

/// A request whose messages are being counted.
#[derive(Default)]
struct Track {
    expected: Option<usize>,
    seen: usize,
    sent: Option<Instant>,
}

/// Messages consumed per execution, and when each request completed.
#[derive(Default)]
struct Tracker {
    open: Mutex<HashMap<i64, Track>>,
    /// (completion instant, end-to-end latency) per completed request.
    done: Mutex<Vec<(Instant, Duration)>>,
    consumed: AtomicU64,
}

impl Tracker {
    fn update(&self, execution_id: i64, change: impl FnOnce(&mut Track)) {
        let mut open = self.open.lock().unwrap();
        let track = open.entry(execution_id).or_default();
        change(track);
        if track.expected == Some(track.seen) {
            let sent = track.sent.unwrap_or_else(Instant::now);
            open.remove(&execution_id);
            let now = Instant::now();
            self.done.lock().unwrap().push((now, now - sent));
        }
    }

    fn register(&self, execution_id: i64, pairs: usize, sent: Instant) {
        self.update(execution_id, |t| {
            t.expected = Some(pairs);
            t.sent = Some(sent);
        });
    }

    fn completed(&self) -> usize {
        self.done.lock().unwrap().len()
    }
}

/// Purges the queue, then consumes it (no-ack) into `tracker`.
async fn start_consumer(tracker: Arc<Tracker>) -> Connection {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let queue = std::env::var("BENCH_QUEUE").unwrap_or_else(|_| "bench-runs.APPIUM".to_owned());
    let (connection, mut consumer) = common::consume(&url, &queue, "bench-load", true).await;
    tokio::spawn(async move {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Body {
            execution_id: i64,
        }
        while let Some(Ok(delivery)) = consumer.next().await {
            tracker.consumed.fetch_add(1, Ordering::Relaxed);
            if let Ok(body) = serde_json::from_slice::<Body>(&delivery.data) {
                tracker.update(body.execution_id, |t| t.seen += 1);
            }
        }
    });
    connection
}

/// xorshift64*: a tiny deterministic generator, enough to spread load.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Requests made so far with `--target one-plan`: the next one takes the
/// pairs after theirs.
static TURN: AtomicU64 = AtomicU64::new(0);

/// A request body for `args.target`.
fn body(args: &Args, rng: &mut Rng) -> String {
    match args.target {
        Target::Spread => spread_body(args, rng),
        Target::OnePlan => {
            let turn = TURN.fetch_add(1, Ordering::Relaxed);
            big_plan_body(args, turn * args.pairs)
        }
        Target::SamePair => big_plan_body(args, 0),
    }
}

/// `args.pairs` pairs of the big plan (100 scenarios x 10 environments),
/// from the `first`-th pair on (modulo 1 000), by scenario then environment.
fn big_plan_body(args: &Args, first: u64) -> String {
    let plan = args.plans + 1;
    let pairs: Vec<String> = (first..first + args.pairs)
        .map(|n| {
            let n = n % 1000;
            let (s, e) = (plan * 1000 + 1 + n / 10, 1 + n % 10);
            format!(r#"{{"scenarioId":{s},"environmentId":{e}}}"#)
        })
        .collect();
    format!(
        r#"{{"planId":{plan},"userId":1,"frameworkType":"APPIUM","scenarioEnvironmentPairs":[{}]}}"#,
        pairs.join(",")
    )
}

/// A request body: a random plan, `pairs / 2` distinct scenarios of it on
/// both environments 1 and 2.
fn spread_body(args: &Args, rng: &mut Rng) -> String {
    let plan = 1 + rng.below(args.plans);
    let wanted = (args.pairs / 2) as usize;
    let mut scenarios: Vec<u64> = Vec::with_capacity(wanted);
    while scenarios.len() < wanted {
        let s = 1 + rng.below(args.scenarios);
        if !scenarios.contains(&s) {
            scenarios.push(s);
        }
    }
    let pairs: Vec<String> = scenarios
        .iter()
        .flat_map(|s| {
            let id = plan * 1000 + s;
            [1, 2].map(|e| format!(r#"{{"scenarioId":{id},"environmentId":{e}}}"#))
        })
        .collect();
    format!(
        r#"{{"planId":{plan},"userId":1,"frameworkType":"APPIUM","scenarioEnvironmentPairs":[{}]}}"#,
        pairs.join(",")
    )
}

/// The 1000-pair request: every scenario of the big plan, on every environment.
fn big_body(args: &Args) -> String {
    let plan = args.plans + 1;
    let pairs: Vec<String> = (1..=100)
        .map(|s| format!(r#"{{"scenarioId":{}}}"#, plan * 1000 + s))
        .collect();
    format!(
        r#"{{"planId":{plan},"userId":1,"frameworkType":"APPIUM","scenarioEnvironmentPairs":[{}]}}"#,
        pairs.join(",")
    )
}

struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Client {
    fn new() -> Self {
        Client {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(4096)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            url: std::env::var("BENCH_URL")
                .unwrap_or_else(|_| "http://127.0.0.1:18080/queue/rerun".to_owned()),
            token: std::env::var("BENCH_TOKEN").expect("BENCH_TOKEN"),
        }
    }

    /// Sends one rerun; `Some((executionId, pairs))` on a 200.
    async fn rerun(&self, body: String) -> Option<(i64, usize)> {
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            eprintln!("bench: {status} {text}");
            return None;
        }
        let answer: serde_json::Value = response.json().await.ok()?;
        let data = &answer["data"];
        Some((
            data["executionId"].as_i64()?,
            data["queued"].as_array()?.len(),
        ))
    }
}

impl Client {
    /// `GET path` against the service `BENCH_URL` names, with
    /// `If-None-Match: tag` when given; the status when it is a 200 whose
    /// body was read in full or a 304, else `None`; and the answer's `ETag`.
    async fn get(&self, path: &str, tag: Option<&str>) -> Option<(u16, Option<String>)> {
        let base = self.url.trim_end_matches("/queue/rerun");
        let mut request = self
            .http
            .get(format!("{base}{path}"))
            .bearer_auth(&self.token);
        if let Some(tag) = tag {
            request = request.header("if-none-match", tag);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() || response.status() == 304 => {
                let status = response.status().as_u16();
                let etag = response
                    .headers()
                    .get("etag")
                    .and_then(|t| t.to_str().ok())
                    .map(str::to_owned);
                response.bytes().await.ok().map(|_| (status, etag))
            }
            Ok(response) => {
                eprintln!("bench: GET {path}: {}", response.status());
                None
            }
            Err(e) => {
                eprintln!("bench: GET {path}: {e}");
                None
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// Waits until every accepted request is consumed, or 60 s.
async fn drain(tracker: &Tracker, accepted: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tracker.completed() < accepted && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if tracker.completed() < accepted {
        eprintln!(
            "bench: only {} of {accepted} requests fully consumed after 60 s",
            tracker.completed()
        );
    }
}

async fn closed(args: Args, client: Arc<Client>, tracker: Arc<Tracker>) {
    let args = Arc::new(args);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.secs);
    let errors = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..args.connections)
        .map(|worker| {
            let (args, client, tracker, errors) = (
                args.clone(),
                client.clone(),
                tracker.clone(),
                errors.clone(),
            );
            tokio::spawn(async move {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((worker as u64 + 1) * 7919));
                let mut ok = 0usize;
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match client.rerun(body(&args, &mut rng)).await {
                        Some((id, n)) => {
                            tracker.register(id, n, sent);
                            ok += 1;
                        }
                        None => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for worker in workers {
        ok += worker.await.expect("worker");
    }
    let http_secs = start.elapsed().as_secs_f64();
    drain(&tracker, ok).await;
    let done = tracker.done.lock().unwrap();
    let last = done.iter().map(|(at, _)| *at).max().unwrap_or(start);
    let e2e_secs = (last - start).as_secs_f64();
    println!("result requests {ok}");
    println!("result errors {}", errors.load(Ordering::Relaxed));
    println!("result http_rps {:.1}", ok as f64 / http_secs);
    println!("result e2e_rps {:.1}", done.len() as f64 / e2e_secs);
    println!(
        "result messages_per_s {:.1}",
        tracker.consumed.load(Ordering::Relaxed) as f64 / e2e_secs
    );
}

async fn open(args: Args, client: Arc<Client>, tracker: Arc<Tracker>) {
    let args = Arc::new(args);
    let total = (args.rate * args.secs).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let errors = Arc::new(AtomicU64::new(0));
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled).await;
        let (client, tracker, latencies, errors) = (
            client.clone(),
            tracker.clone(),
            latencies.clone(),
            errors.clone(),
        );
        let body = body(&args, &mut rng);
        tasks.push(tokio::spawn(async move {
            let scheduled = scheduled.into_std();
            match client.rerun(body).await {
                Some((id, n)) => {
                    latencies.lock().unwrap().push(scheduled.elapsed());
                    tracker.register(id, n, scheduled);
                }
                None => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("request task");
    }
    let accepted = latencies.lock().unwrap().len();
    drain(&tracker, accepted).await;
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort_unstable();
    let mut e2e: Vec<Duration> = tracker.done.lock().unwrap().iter().map(|d| d.1).collect();
    e2e.sort_unstable();
    println!("result requests {accepted}");
    println!("result errors {}", errors.load(Ordering::Relaxed));
    for (name, p) in [("p50", 50.0), ("p99", 99.0), ("p999", 99.9)] {
        println!("result latency_{name}_ms {:.2}", percentile(&latencies, p));
    }
    for (name, p) in [("p50", 50.0), ("p99", 99.0)] {
        println!("result consumed_{name}_ms {:.2}", percentile(&e2e, p));
    }
}

async fn single(args: Args, client: Arc<Client>, tracker: Arc<Tracker>) {
    let sent = Instant::now();
    let (id, n) = client
        .rerun(big_body(&args))
        .await
        .expect("the 1000-pair request is accepted");
    let answered = sent.elapsed();
    tracker.register(id, n, sent);
    drain(&tracker, 1).await;
    let consumed = tracker.done.lock().unwrap().first().map(|d| d.1);
    println!("result execution_id {id}");
    println!("result pairs {n}");
    println!("result answered_ms {:.1}", answered.as_secs_f64() * 1000.0);
    println!(
        "result consumed_ms {:.1}",
        consumed.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    );
}

/// Open-loop reads: latency from each request's scheduled start.
async fn get(args: Args, client: Arc<Client>) {
    let total = (args.rate * args.secs).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let errors = Arc::new(AtomicU64::new(0));
    let not_modified = Arc::new(AtomicU64::new(0));
    let tag = match args.if_none_match.as_deref() {
        Some("current") => client.get(&args.path, None).await.and_then(|(_, tag)| tag),
        other => other.map(str::to_owned),
    };
    let tag = Arc::new(tag);
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = Vec::with_capacity(total as usize);
    let path = Arc::new(args.path);
    for i in 0..total {
        let scheduled = start + interval * i as u32;
        tokio::time::sleep_until(scheduled).await;
        let (client, latencies, errors, not_modified, path, tag) = (
            client.clone(),
            latencies.clone(),
            errors.clone(),
            not_modified.clone(),
            path.clone(),
            tag.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let scheduled = scheduled.into_std();
            match client.get(&path, tag.as_deref()).await {
                Some((status, _)) => {
                    latencies.lock().unwrap().push(scheduled.elapsed());
                    if status == 304 {
                        not_modified.fetch_add(1, Ordering::Relaxed);
                    }
                }
                None => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("request task");
    }
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort_unstable();
    println!("result requests {}", latencies.len());
    println!(
        "result not_modified {}",
        not_modified.load(Ordering::Relaxed)
    );
    println!("result errors {}", errors.load(Ordering::Relaxed));
    for (name, p) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("max", 100.0)] {
        println!("result latency_{name}_ms {:.2}", percentile(&latencies, p));
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    if args.mode == "get" {
        return get(args, Arc::new(Client::new())).await;
    }
    let tracker = Arc::new(Tracker::default());
    let _consumer = start_consumer(tracker.clone()).await;
    let client = Arc::new(Client::new());
    match args.mode.as_str() {
        "closed" => closed(args, client, tracker).await,
        "open" => open(args, client, tracker).await,
        "single" => single(args, client, tracker).await,
        other => panic!("unknown mode {other}"),
    }
}
