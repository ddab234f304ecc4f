//! What the node-loss tests share: the private cluster of
//! `tests/cluster/start.sh` (its nodes killed and started again through
//! `tests/cluster/node.sh`), `plan-queue serve` instances as real child
//! processes, a database per scenario cloned from the seeded one, the
//! ledger consumer that survives the loss of its node, and the outbox
//! sampler that measures how long publishing stalled.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::Connection as _;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The secret the instances verify tokens with.
pub const JWT_SECRET: &str = "node-loss-secret";
/// The framework type every scenario reruns.
pub const FRAMEWORK_TYPE: &str = "APPIUM";
/// The six pairs of plan 614's last full run (execution 4980, demo fixture).
pub const DEMO_PAIRS: [(i64, i64); 6] = [
    (111, 222),
    (111, 223),
    (112, 222),
    (112, 223),
    (113, 223),
    (113, 224),
];

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run tests/cluster/node-loss.sh"))
}

/// The `rabbitmqctl` name of node `n` (1..=3).
pub fn node_name(n: usize) -> String {
    format!("pq-cluster-{n}@localhost")
}

/// The private three-node cluster (`PQ_CLUSTER_DIR`, `PQ_CLUSTER_PORT`).
#[derive(Clone)]
pub struct Cluster {
    /// The AMQP URL of each node, node 1 first.
    pub urls: Vec<String>,
}

impl Cluster {
    /// The cluster `tests/cluster/node-loss.sh` started.
    pub fn from_env() -> Cluster {
        let dir = env("PQ_CLUSTER_DIR");
        let text = std::fs::read_to_string(format!("{dir}/amqp_url"))
            .expect("the cluster's amqp_url file (start.sh writes it)");
        Cluster {
            urls: text.trim().split(',').map(str::to_owned).collect(),
        }
    }

    /// An `AMQP_URL` listing every node, starting at node `first` (1..=3).
    pub fn url_from(&self, first: usize) -> String {
        self.order_from(first).join(",")
    }

    /// The nodes' URLs starting at node `first` (1..=3).
    pub fn order_from(&self, first: usize) -> Vec<String> {
        let n = self.urls.len();
        (0..n)
            .map(|i| self.urls[(first - 1 + i) % n].clone())
            .collect()
    }

    /// Runs `tests/cluster/node.sh args…`; its stdout, or a panic with stderr.
    pub async fn node_sh(args: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let output = Command::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/cluster/node.sh"
            ))
            .args(&args)
            .output()
            .expect("run tests/cluster/node.sh");
            assert!(
                output.status.success(),
                "node.sh {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        })
        .await
        .unwrap()
    }

    /// SIGKILLs node `n`'s Erlang VM and waits until it is gone.
    pub async fn kill(&self, n: usize) {
        Self::node_sh(&["kill", &n.to_string()]).await;
    }

    /// Starts node `n` again (it rejoins with its data) and waits until it booted.
    pub async fn start(&self, n: usize) {
        Self::node_sh(&["start", &n.to_string()]).await;
    }

    /// The node (1..=3) that leads each quorum queue whose name starts with
    /// `prefix`, as node `ask` sees it (`rabbitmqctl list_queues name leader`);
    /// `None` when the node does not answer within 10 s.
    pub async fn leaders(&self, ask: usize, prefix: &str) -> Option<HashMap<String, usize>> {
        let ask = ask.to_string();
        let call = Self::try_node_sh(vec![
            "ctl".into(),
            ask,
            "list_queues".into(),
            "--no-table-headers".into(),
            "--timeout".into(),
            "10".into(),
            "name".into(),
            "leader".into(),
        ]);
        let text = tokio::time::timeout(Duration::from_secs(15), call)
            .await
            .ok()??;
        let mut leaders = HashMap::new();
        for line in text.lines() {
            let mut fields = line.split('\t');
            let (Some(name), Some(leader)) = (fields.next(), fields.next()) else {
                continue;
            };
            if !name.starts_with(prefix) {
                continue;
            }
            let node = (1..=3).find(|n| leader.trim() == node_name(*n));
            if let Some(node) = node {
                leaders.insert(name.to_owned(), node);
            }
        }
        Some(leaders)
    }

    /// The node leading `queue`, asked of node `ask`.
    pub async fn leader_of(&self, ask: usize, queue: &str) -> Option<usize> {
        self.leaders(ask, queue).await?.get(queue).copied()
    }

    async fn try_node_sh(args: Vec<String>) -> Option<String> {
        tokio::task::spawn_blocking(move || {
            let output = Command::new(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/cluster/node.sh"
            ))
            .args(&args)
            .output()
            .ok()?;
            output
                .status
                .success()
                .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
        })
        .await
        .unwrap()
    }

    /// Polls node `ask` until no queue starting with `prefix` is led by node
    /// `dead` and every one named in `queues` has a leader; returns the time
    /// from `since` (the kill). Panics after 60 s.
    pub async fn wait_for_new_leaders(
        &self,
        ask: usize,
        prefix: &str,
        queues: &[String],
        dead: usize,
        since: Instant,
    ) -> Duration {
        loop {
            if let Some(leaders) = self.leaders(ask, prefix).await {
                let moved = queues
                    .iter()
                    .all(|q| leaders.get(q).is_some_and(|&leader| leader != dead));
                if moved {
                    return since.elapsed();
                }
            }
            assert!(
                since.elapsed() < Duration::from_secs(60),
                "the queues of {prefix} had no new leader within 60 s of the kill"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A database of one scenario: a copy of the seeded database
/// (`NODE_LOSS_DATABASE`), dropped on drop.
pub struct ScenarioDb {
    pub url: String,
    name: String,
    admin: String,
}

impl ScenarioDb {
    /// Copies the seeded database into `<seeded>_<suffix>`.
    pub async fn create(suffix: &str) -> ScenarioDb {
        let server = std::env::var("NODE_LOSS_DATABASE_SERVER")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let seeded = env("NODE_LOSS_DATABASE");
        let name = format!("{seeded}_{suffix}");
        let admin = format!("{server}/postgres");
        let sql = format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE); \
             CREATE DATABASE \"{name}\" TEMPLATE \"{seeded}\";"
        );
        let a = admin.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = PgConnection::establish(&a).expect("connect to PostgreSQL");
            for statement in sql.split("; ") {
                conn.batch_execute(statement).expect("create the database");
            }
        })
        .await
        .unwrap();
        ScenarioDb {
            url: format!("{server}/{name}"),
            name,
            admin,
        }
    }

    /// Runs `sql` (several statements allowed).
    pub async fn execute(&self, sql: &str) {
        let (url, sql) = (self.url.clone(), sql.to_owned());
        tokio::task::spawn_blocking(move || {
            plan_queue::db::connect(&url)
                .unwrap()
                .batch_execute(&sql)
                .unwrap();
        })
        .await
        .unwrap()
    }

    /// Runs `sql`, which selects one `BIGINT` named `n`.
    pub async fn count(&self, sql: &str) -> i64 {
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let (url, sql) = (self.url.clone(), sql.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut conn = plan_queue::db::connect(&url).unwrap();
            diesel::sql_query(sql).get_result::<N>(&mut conn).unwrap().n
        })
        .await
        .unwrap()
    }

    /// Runs `sql`, which selects text rows with one column `t`.
    pub async fn texts(&self, sql: &str) -> Vec<String> {
        #[derive(QueryableByName)]
        struct T {
            #[diesel(sql_type = diesel::sql_types::Text)]
            t: String,
        }
        let (url, sql) = (self.url.clone(), sql.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut conn = plan_queue::db::connect(&url).unwrap();
            diesel::sql_query(sql)
                .load::<T>(&mut conn)
                .unwrap()
                .into_iter()
                .map(|r| r.t)
                .collect()
        })
        .await
        .unwrap()
    }

    /// Unpublished dispatch rows.
    pub async fn pending(&self) -> i64 {
        self.count("SELECT count(*) AS n FROM dispatches WHERE published_at IS NULL")
            .await
    }
}

impl Drop for ScenarioDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(mut conn) = PgConnection::establish(&admin) {
                let _ =
                    conn.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
            }
        })
        .join();
    }
}

/// A `plan-queue serve` child process.
pub struct Instance {
    pub name: String,
    pub url: String,
    child: Child,
}

impl Instance {
    /// Starts `plan-queue serve` named `name` on `db`, with `amqp_url` and
    /// `exchange` and `extra` variables; its log goes to
    /// `$NODE_LOSS_LOGS/<name>.log`. Waits until `/health/ready` is 200.
    pub async fn spawn(
        name: &str,
        db: &ScenarioDb,
        amqp_url: &str,
        exchange: &str,
        extra: &[(&str, &str)],
    ) -> Instance {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let logs = std::env::var("NODE_LOSS_LOGS").unwrap_or_else(|_| "/tmp".to_owned());
        let log = std::fs::File::create(format!("{logs}/{name}.log")).expect("the log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_plan-queue"));
        command
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            // its sessions' application_name: whose claim a row lock is
            .env("PGAPPNAME", name)
            .env("AMQP_URL", amqp_url)
            .env("AMQP_EXCHANGE", exchange)
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("JWT_SECRET", JWT_SECRET)
            .env("FRAMEWORK_TYPES", "APPIUM,GAUGE,JUNIT")
            .env("MAX_ATTEMPTS", "100000")
            .env("RELAY_POLL_MS", "200")
            .env(
                "RUST_LOG",
                "warn,plan_queue::amqp=info,plan_queue::relay=warn",
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in extra {
            command.env(k, v);
        }
        let child = command.spawn().expect("start plan-queue serve");
        let instance = Instance {
            name: name.to_owned(),
            url: format!("http://127.0.0.1:{port}"),
            child,
        };
        instance.wait_ready().await;
        instance
    }

    /// Waits (60 s) until `/health/ready` answers 200.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(r) = client
                .get(format!("{}/health/ready", self.url))
                .send()
                .await
            {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{} never became ready",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The nodes (`host:port`) readiness names for the relay
    /// (`brokerNode`) and the results consumer (`resultsBrokerNode`).
    pub async fn broker_nodes(&self) -> String {
        let body: serde_json::Value = match reqwest::get(format!("{}/health/ready", self.url)).await
        {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => return "no answer".to_owned(),
        };
        format!(
            "relay on {}, results consumer on {}",
            body["data"]["brokerNode"], body["data"]["resultsBrokerNode"]
        )
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid(), signal);
        }
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The sum of the samples of metric `name` (all label sets) on `/metrics`.
    pub async fn metric(&self, name: &str) -> f64 {
        self.metric_with(name, "").await
    }

    /// The sum of the samples of metric `name` whose labels contain `label`
    /// (e.g. `outcome="nacked"`) on `/metrics`.
    pub async fn metric_with(&self, name: &str, label: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.url))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                    && l.contains(label)
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// A token of user 13 with `PLAN_RUN`.
pub fn token() -> String {
    plan_queue::auth::issue_token(JWT_SECRET, 13, &["PLAN_RUN".to_owned()], 3600).unwrap()
}

/// What the ledger consumer saw.
#[derive(Default)]
pub struct Ledger {
    /// Deliveries per `messageId`.
    pub seen: HashMap<String, usize>,
    /// All deliveries.
    pub delivered: usize,
    /// Connections made (the first included).
    pub connections: usize,
    /// The nodes (host:port) it consumed on, in order.
    pub nodes: Vec<String>,
    /// The longest time without a delivery after [`Ledger::watch_gaps_from`].
    pub longest_gap: Duration,
    last: Option<Instant>,
    watch_from: Option<Instant>,
}

impl Ledger {
    /// Measures the longest gap between deliveries from now on.
    pub fn watch_gaps_from(&mut self, at: Instant) {
        self.watch_from = Some(at);
    }

    fn record(&mut self, message_id: String) {
        let now = Instant::now();
        if let (Some(from), Some(last)) = (self.watch_from, self.last) {
            if now > from {
                self.longest_gap = self.longest_gap.max(now - last.max(from));
            }
        }
        self.last = Some(now);
        self.delivered += 1;
        *self.seen.entry(message_id).or_default() += 1;
    }
}

/// Consumes `queue` with manual acknowledgements (each after the
/// `messageId` is recorded), from the nodes of `order` in turn: when its
/// connection or channel fails it connects to the next node. Runs until
/// `stop` turns true.
pub async fn ledger_consumer(
    order: Vec<String>,
    queue: String,
    ledger: Arc<Mutex<Ledger>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = 0;
    while !*stop.borrow() {
        let url = order[next % order.len()].clone();
        next += 1;
        let session = async {
            let connection = tokio::time::timeout(
                Duration::from_secs(5),
                Connection::connect(&url, ConnectionProperties::default()),
            )
            .await
            .ok()?
            .ok()?;
            let channel = connection.create_channel().await.ok()?;
            channel
                .basic_qos(200, BasicQosOptions::default())
                .await
                .ok()?;
            let consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    "node-loss-ledger".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .ok()?;
            Some((connection, consumer))
        };
        let Some((connection, mut consumer)) = session.await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        {
            let mut l = ledger.lock().unwrap();
            l.connections += 1;
            l.nodes.push(plan_queue::config::node_of(&url));
        }
        loop {
            let delivery = tokio::select! {
                d = consumer.next() => d,
                _ = stop.changed() => break,
            };
            let Some(Ok(delivery)) = delivery else { break };
            let id = delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            ledger.lock().unwrap().record(id);
            if delivery.ack(BasicAckOptions::default()).await.is_err() {
                break;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), connection.close(200, "done".into()))
            .await;
    }
}

/// The outbox over time: the oldest unpublished row's age, sampled every
/// 100 ms.
#[derive(Default, Clone, Copy)]
pub struct OutboxSample {
    /// The oldest age of an unpublished dispatch row seen, ms.
    pub longest_pending_ms: i64,
}

/// Samples `db`'s outbox until `stop` turns true.
pub async fn outbox_sampler(
    db_url: String,
    sample: Arc<Mutex<OutboxSample>>,
    stop: watch::Receiver<bool>,
) {
    let mut conn = None;
    while !*stop.borrow() {
        #[derive(QueryableByName)]
        struct Age {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            ms: i64,
        }
        let url = db_url.clone();
        let c = conn.take();
        let (c, age) = tokio::task::spawn_blocking(move || {
            let mut c = c.unwrap_or_else(|| plan_queue::db::connect(&url).unwrap());
            let age = diesel::sql_query(
                "SELECT coalesce((extract(epoch FROM now() - min(created_at)) * 1000)::bigint, 0) AS ms \
                   FROM dispatches WHERE published_at IS NULL",
            )
            .get_result::<Age>(&mut c)
            .map(|a| a.ms)
            .unwrap_or(0);
            (c, age)
        })
        .await
        .unwrap();
        conn = Some(c);
        {
            let mut s = sample.lock().unwrap();
            s.longest_pending_ms = s.longest_pending_ms.max(age);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The answers of the rerun load.
#[derive(Default)]
pub struct Answers {
    /// The `messageId`s of 200 answers.
    pub accepted: Vec<String>,
    /// Answers by status other than 200.
    pub refused: HashMap<u16, usize>,
    /// 503 answers sent while a node was down.
    pub unavailable_during_loss: usize,
    /// Requests that got no answer (connection refused or cut, timeout).
    pub unanswered: usize,
}

/// Sends `total` one-pair reruns of plan 614 at a steady `per_second`,
/// alternating between the instances whose URLs `target(i)` gives (so a
/// request can be sent elsewhere once an instance is gone); `during_loss`
/// is true while a node is down. Each request is its own task (a slow
/// answer does not slow the rate), at most 64 in flight.
pub async fn rerun_load(
    total: usize,
    per_second: u32,
    target: impl Fn(usize) -> String,
    during_loss: Arc<std::sync::atomic::AtomicBool>,
) -> Answers {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let token = token();
    let answers = Arc::new(Mutex::new(Answers::default()));
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        tick.tick().await;
        let (s, e) = DEMO_PAIRS[i % DEMO_PAIRS.len()];
        let body = serde_json::json!({"planId": 614, "userId": 13, "frameworkType": FRAMEWORK_TYPE,
                                      "scenarioId": s, "environmentId": e});
        let request = client
            .post(format!("{}/queue/rerun", target(i)))
            .bearer_auth(&token)
            .json(&body);
        let permit = limit.clone().acquire_owned().await.unwrap();
        let (answers, during_loss) = (answers.clone(), during_loss.clone());
        tasks.push(tokio::spawn(async move {
            let outcome = match request.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    r.json::<serde_json::Value>()
                        .await
                        .ok()
                        .map(|b| (status, b))
                }
                Err(_) => None,
            };
            let mut a = answers.lock().unwrap();
            match outcome {
                Some((200, body)) => {
                    for q in body["data"]["queued"].as_array().into_iter().flatten() {
                        a.accepted.push(q["messageId"].as_str().unwrap().to_owned());
                    }
                }
                Some((status, _)) => {
                    *a.refused.entry(status).or_default() += 1;
                    if status == 503 && during_loss.load(std::sync::atomic::Ordering::Relaxed) {
                        a.unavailable_during_loss += 1;
                    }
                }
                None => a.unanswered += 1,
            }
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(answers).ok().unwrap().into_inner().unwrap()
}

/// The relay publishes of `instances` by outcome
/// (`plan_queue_publishes_total`), outcomes with none left out.
pub async fn publishes(instances: &[&Instance]) -> String {
    let mut parts = Vec::new();
    for outcome in ["confirmed", "nacked", "timed_out", "failed", "returned"] {
        let mut n = 0.0;
        for i in instances {
            n += i
                .metric_with(
                    "plan_queue_publishes_total",
                    &format!("outcome=\"{outcome}\""),
                )
                .await;
        }
        if n > 0.0 {
            parts.push(format!("{outcome} {n}"));
        }
    }
    parts.join(", ")
}

/// Seconds with one decimal.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
