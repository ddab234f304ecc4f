//! A real server per test: its own PostgreSQL database (a copy of the
//! migrated template seeded with `fixtures/demo.json`, see `test_db`) and its own exchange and queues on the machine's
//! RabbitMQ, all removed again when the [`TestApp`] is dropped.

use diesel::prelude::*;
use lapin::options::{BasicAckOptions, BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use plan_queue::config::Config;
use plan_queue::startup::Application;
use serde_json::Value;
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

pub const JWT_SECRET: &str = "test-secret";
pub const ADMIN_DB_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// An AMQP address where nothing listens.
pub const DEAD_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A message taken from a queue.
#[derive(Debug)]
pub struct Received {
    pub routing_key: String,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub content_type: Option<String>,
    pub kind: Option<String>,
    pub delivery_mode: Option<u8>,
    pub body: Value,
}

pub struct TestApp {
    pub address: String,
    /// The test database, reached directly (not through a test's proxy).
    pub db_url: String,
    pub config: Config,
    pub db_name: String,
    pub client: reqwest::Client,
    running: Option<Running>,
}

struct Running {
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// A port nothing listens on right now, for a server process of a test.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A test configuration: private database and exchange, three framework types.
pub fn test_config() -> Config {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let db_name = format!("plan_queue_test_{id}");
    let base = env_or("TEST_DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432");
    let mut config = Config::from_lookup(|_| None).expect("default config");
    config.database.url = format!("{base}/{db_name}");
    config.amqp.url = env_or("TEST_AMQP_URL", AMQP_URL);
    config.http.bind_addr = "127.0.0.1:0".to_owned();
    config.tokens.secret = Some(JWT_SECRET.to_owned());
    config.amqp.exchange = format!("test-{id}");
    config.amqp.framework_types = ["APPIUM", "GAUGE", "JUNIT"].into();
    config.relay.poll_interval = Duration::from_millis(200);
    config
}

/// Starts a server on the demo fixture with the default test configuration.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Log lines of every test of this binary: `LEVEL target: message`.
static LOGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records plan-queue's lines from debug up and everyone else's from info up.
struct CaptureLogs;

impl log::Log for CaptureLogs {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info || metadata.target().starts_with("plan_queue")
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            let line = format!("{} {}: {}", record.level(), record.target(), record.args());
            LOGS.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    }

    fn flush(&self) {}
}

/// Installs the log capture (once per test binary).
pub fn capture_logs() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if log::set_logger(&CaptureLogs).is_ok() {
            log::set_max_level(log::LevelFilter::Debug);
        }
    });
}

/// Every log line captured so far, of all tests running in this binary.
pub fn logs() -> Vec<String> {
    LOGS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Captured log lines containing `needle` (tests find their own lines by a
/// unique request id).
pub fn log_lines_with(needle: &str) -> Vec<String> {
    logs()
        .into_iter()
        .filter(|line| line.contains(needle))
        .collect()
}

/// Starts a server on the demo fixture; `adjust` may change the configuration.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    capture_logs();
    let mut config = test_config();
    adjust(&mut config);
    let db_name = config.database.url.rsplit('/').next().unwrap().to_owned();
    let url_direct = config.database.url.clone();
    let server = env_or("TEST_DATABASE_SERVER", "postgres://postgres@127.0.0.1:5432");
    let name = db_name.clone();
    tokio::task::spawn_blocking(move || crate::test_db::create_from_template(&server, &name))
        .await
        .unwrap();
    let mut app = TestApp {
        address: String::new(),
        db_url: url_direct,
        config,
        db_name,
        client: reqwest::Client::new(),
        running: None,
    };
    app.start().await;
    app
}

impl TestApp {
    async fn start(&mut self) {
        let application = Application::build(self.config.clone(), false).expect("build app");
        self.address = format!("http://127.0.0.1:{}", application.port());
        let handle = application.handle();
        let task = tokio::spawn(application.run_until_stopped());
        self.running = Some(Running { handle, task });
    }

    /// Runs one relay pass over this app's outbox now (a relay of its own,
    /// beside the app's): publishes every due dispatch row and returns how
    /// many it claimed. Tests call it instead of sleeping for the relay.
    pub async fn dispatch_all_pending(&self) -> usize {
        let (_wakeup, (_stop, stopped)) = (
            std::sync::Arc::new(tokio::sync::Notify::new()),
            tokio::sync::watch::channel(false),
        );
        let mut relay = plan_queue::relay::Relay::new(
            self.config.amqp.clone(),
            self.config.relay.clone(),
            plan_queue::db::build_relay_pool(
                &self.db_url,
                1,
                Duration::from_secs(5),
                Duration::from_secs(60),
            ),
            _wakeup.clone(),
            stopped,
            Default::default(),
            std::sync::Arc::new(plan_queue::metrics::Metrics::new().unwrap()),
        );
        relay.publish_pending().await.expect("a relay pass")
    }

    /// Stops the server gracefully and waits for it and its relay.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.handle.stop(true).await;
            running.task.await.unwrap().unwrap();
        }
    }

    /// Stops the server, lets `adjust` change the configuration, starts it again
    /// on the same database and exchange.
    pub async fn restart_with(&mut self, adjust: impl FnOnce(&mut Config)) {
        self.stop().await;
        adjust(&mut self.config);
        self.config.http.bind_addr = "127.0.0.1:0".to_owned();
        self.start().await;
    }

    /// A token for `user_id` with `authorities`, valid one hour.
    pub fn token(&self, user_id: i64, authorities: &[&str]) -> String {
        let authorities: Vec<String> = authorities.iter().map(|a| a.to_string()).collect();
        plan_queue::auth::issue_token(JWT_SECRET, user_id, &authorities, 3600).unwrap()
    }

    /// POSTs `body` to `path` as user 13 with `PLAN_RUN`.
    pub async fn rerun(&self, body: &Value) -> (u16, Value) {
        let token = self.token(13, &["PLAN_RUN"]);
        self.post("/queue/rerun", Some(&token), body).await
    }

    /// POSTs `body` (JSON) to `path` with an optional bearer token.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.address))
            .json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request sent");
        read(response).await
    }

    /// GETs `path`: status and body text.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent");
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// The text of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200, "{text}");
        text
    }

    /// A request builder for `POST path` (for custom headers and raw bodies).
    pub fn post_raw(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.address))
    }

    /// Rows in executions and dispatches: what a failed request must not change.
    pub async fn counts(&self) -> (i64, i64) {
        let url = self.db_url.clone();
        tokio::task::spawn_blocking(move || {
            use plan_queue::db::schema::{dispatches, executions};
            let mut conn = plan_queue::db::connect(&url).unwrap();
            let executions: i64 = executions::table.count().get_result(&mut conn).unwrap();
            let dispatches: i64 = dispatches::table.count().get_result(&mut conn).unwrap();
            (executions, dispatches)
        })
        .await
        .unwrap()
    }

    /// Runs `sql` on the test database.
    pub async fn sql(&self, sql: &str) {
        let (url, sql) = (self.db_url.clone(), sql.to_owned());
        tokio::task::spawn_blocking(move || {
            use diesel::connection::SimpleConnection;
            plan_queue::db::connect(&url)
                .unwrap()
                .batch_execute(&sql)
                .unwrap();
        })
        .await
        .unwrap()
    }

    /// Starts `plan-queue serve` as a child process on this test's database
    /// and exchange, with `env` overriding variables, and waits until it
    /// answers `/health`. Returns the process and its base URL.
    pub async fn spawn_binary(&self, env: &[(&str, String)]) -> (std::process::Child, String) {
        let port = free_port();
        let c = &self.config;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_plan-queue"));
        command
            .arg("serve")
            .env("DATABASE_URL", &c.database.url)
            .env("AMQP_URL", &c.amqp.url)
            .env("BIND_ADDR", format!("127.0.0.1:{port}"))
            .env("JWT_SECRET", JWT_SECRET)
            .env("AMQP_EXCHANGE", &c.amqp.exchange)
            .env("FRAMEWORK_TYPES", c.amqp.framework_types.join(","))
            .env("RELAY_POLL_MS", "200")
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("start plan-queue serve");
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while self
            .client
            .get(format!("{url}/health"))
            .send()
            .await
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "plan-queue serve did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (child, url)
    }

    /// Waits until `GET /health/ready` on `url` answers `status`.
    pub async fn wait_ready(&self, url: &str, status: u16) {
        let started = Instant::now();
        loop {
            if let Ok(r) = self.client.get(format!("{url}/health/ready")).send().await {
                if r.status().as_u16() == status {
                    return;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "readiness never became {status}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Adds `count` scenarios (ids from 10000) to project 7, to plan 614 and
    /// to its last full run 4980 on environment 222, for big reruns.
    pub async fn add_pairs_to_last_run(&self, count: i64) {
        self.sql(&format!(
            "INSERT INTO scenarios (id, project_id, name) \
               SELECT g, 7, 'Generated scenario ' || g FROM generate_series(10000, {last}) g; \
             INSERT INTO plan_scenarios (plan_id, scenario_id) \
               SELECT 614, g FROM generate_series(10000, {last}) g; \
             INSERT INTO execution_pairs (execution_id, scenario_id, environment_id, status, attempt) \
               SELECT 4980, g, 222, 'FAILED', 1 FROM generate_series(10000, {last}) g;",
            last = 10000 + count - 1
        ))
        .await;
    }

    /// Runs `sql` and returns the one `BIGINT` it selects.
    pub async fn count_sql(&self, sql: &str) -> i64 {
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let (url, sql) = (self.db_url.clone(), sql.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut conn = plan_queue::db::connect(&url).unwrap();
            diesel::sql_query(sql).get_result::<N>(&mut conn).unwrap().n
        })
        .await
        .unwrap()
    }

    /// Waits (up to 20 s) until exactly `expected` dispatch rows are unpublished.
    pub async fn wait_until_pending(&self, expected: i64) {
        let started = Instant::now();
        while self.pending().await != expected {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "pending rows never reached {expected}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Unpublished dispatch rows.
    pub async fn pending(&self) -> i64 {
        let url = self.db_url.clone();
        tokio::task::spawn_blocking(move || {
            use plan_queue::db::schema::dispatches;
            let mut conn = plan_queue::db::connect(&url).unwrap();
            dispatches::table
                .filter(dispatches::published_at.is_null())
                .count()
                .get_result::<i64>(&mut conn)
                .unwrap()
        })
        .await
        .unwrap()
    }

    /// [`Self::pending`] once it is 0, or after `within`: a runner may
    /// receive a message before the relay's transaction that marks it
    /// published (after the broker's confirm) has committed.
    pub async fn pending_within(&self, within: Duration) -> i64 {
        let started = std::time::Instant::now();
        loop {
            let pending = self.pending().await;
            if pending == 0 || started.elapsed() > within {
                return pending;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Takes (and acks) messages from the queue of `framework_type` until
    /// `count` arrived or `within` passed.
    pub async fn consume(
        &self,
        framework_type: &str,
        count: usize,
        within: Duration,
    ) -> Vec<Received> {
        let queue = self.config.amqp.queue_name(framework_type);
        take(&queue, count, within).await
    }

    /// Messages currently in the queue of `framework_type`, taken within `within`
    /// after nothing more arrives for a short while.
    pub async fn drain(&self, framework_type: &str, within: Duration) -> Vec<Received> {
        self.consume(framework_type, usize::MAX, within).await
    }
}

/// A connection and channel to the machine's RabbitMQ, for tests that change
/// the topology under the service (keep the connection alive while used).
pub async fn broker_channel() -> (Connection, lapin::Channel) {
    let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("test connects to RabbitMQ");
    let channel = connection.create_channel().await.expect("test channel");
    (connection, channel)
}

/// Takes up to `count` messages from `queue` within `within`.
pub async fn take(queue: &str, count: usize, within: Duration) -> Vec<Received> {
    take_from(AMQP_URL, queue, count, within).await
}

/// Takes up to `count` messages from `queue` of the broker at `amqp_url`.
pub async fn take_from(
    amqp_url: &str,
    queue: &str,
    count: usize,
    within: Duration,
) -> Vec<Received> {
    let mut connection = Connection::connect(amqp_url, ConnectionProperties::default())
        .await
        .expect("test consumer connects");
    let mut channel = connection.create_channel().await.unwrap();
    let deadline = Instant::now() + within;
    let mut received = Vec::new();
    while received.len() < count && Instant::now() < deadline {
        match channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
        {
            Ok(Some(message)) => {
                let delivery = message.delivery;
                delivery.ack(BasicAckOptions::default()).await.unwrap();
                let p = &delivery.properties;
                received.push(Received {
                    routing_key: delivery.routing_key.to_string(),
                    message_id: p.message_id().as_ref().map(|s| s.to_string()),
                    correlation_id: p.correlation_id().as_ref().map(|s| s.to_string()),
                    content_type: p.content_type().as_ref().map(|s| s.to_string()),
                    kind: p.kind().as_ref().map(|s| s.to_string()),
                    delivery_mode: *p.delivery_mode(),
                    body: serde_json::from_slice(&delivery.data).expect("JSON body"),
                });
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
            // the queue is not declared yet (the relay is still connecting):
            // the broker closed the channel, so open another and wait
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                channel = match connection.create_channel().await {
                    Ok(channel) => channel,
                    // lapin now and then fails the whole connection when the
                    // broker closes a channel: connect again
                    Err(_) => {
                        connection = Connection::connect(amqp_url, ConnectionProperties::default())
                            .await
                            .expect("test consumer connects again");
                        connection.create_channel().await.unwrap()
                    }
                };
            }
        }
    }
    let _ = connection.close(200, "done".into()).await;
    received
}

/// The six pairs of plan 614's last full run (execution 4980).
pub const DEMO_PAIRS: [(i64, i64); 6] = [
    (111, 222),
    (111, 223),
    (112, 222),
    (112, 223),
    (113, 223),
    (113, 224),
];

/// A rerun body for one pair of plan 614, as user 13 on APPIUM.
pub fn pair_body(scenario_id: i64, environment_id: i64) -> Value {
    serde_json::json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
                       "scenarioId": scenario_id, "environmentId": environment_id})
}

/// The `(scenarioId, environmentId, attempt)` of each queued pair of a 200 answer.
pub fn queued(body: &Value) -> Vec<(i64, i64, i64)> {
    body["data"]["queued"]
        .as_array()
        .unwrap_or_else(|| panic!("no data.queued: {body}"))
        .iter()
        .map(|q| {
            (
                q["scenarioId"].as_i64().unwrap(),
                q["environmentId"].as_i64().unwrap(),
                q["attempt"].as_i64().unwrap(),
            )
        })
        .collect()
}

impl TestApp {
    /// Asserts that executions and dispatches still hold `before` rows
    /// ([`TestApp::counts`]) and that no message reaches the queue of any
    /// framework type of the test.
    pub async fn assert_nothing_written_or_published(&self, before: (i64, i64)) {
        assert_eq!(self.counts().await, before, "something was written");
        tokio::time::sleep(Duration::from_millis(400)).await;
        for framework_type in self.config.amqp.framework_types.iter() {
            assert!(
                self.drain(framework_type, Duration::from_millis(200))
                    .await
                    .is_empty(),
                "something was published to {framework_type}"
            );
        }
    }
}

/// The `messageId`s of a 200 answer.
pub fn message_ids(body: &Value) -> std::collections::HashSet<String> {
    body["data"]["queued"]
        .as_array()
        .expect("data.queued")
        .iter()
        .map(|q| q["messageId"].as_str().expect("messageId").to_owned())
        .collect()
}

/// The `message_id`s of received messages.
pub fn received_ids(messages: &[Received]) -> std::collections::HashSet<String> {
    messages
        .iter()
        .map(|m| m.message_id.clone().expect("message_id"))
        .collect()
}

impl TestApp {
    /// Sends `body` as user 13 and asserts 503 code 1011 "Service unavailable:
    /// database" with `Retry-After`.
    pub async fn assert_database_unavailable(&self, body: &Value) {
        let token = self.token(13, &["PLAN_RUN"]);
        let response = self
            .post_raw("/queue/rerun")
            .bearer_auth(&token)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
        let (_, got) = read(response).await;
        assert_eq!(
            (code(&got), message(&got)),
            (1011, "Service unavailable: database")
        );
    }
}

/// Status and JSON body of a response.
pub async fn read(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, body)
}

/// The `result.code` of a body.
pub fn code(body: &Value) -> i64 {
    body["result"]["code"].as_i64().expect("result.code")
}

/// The `result.message` of a body.
pub fn message(body: &Value) -> &str {
    body["result"]["message"].as_str().expect("result.message")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.task.abort();
        }
        let (db_name, exchange, types) = (
            self.db_name.clone(),
            self.config.amqp.exchange.clone(),
            self.config.amqp.framework_types.clone(),
        );
        let dead_letter = self.config.amqp.dead_letter_name();
        let watch = self.config.amqp.dead_letter_watch_name();
        let (results, events) = (
            self.config.amqp.results_name(),
            self.config.amqp.events_name(),
        );
        // a thread of its own: Drop may run inside the test's runtime
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(connection) =
                    Connection::connect(AMQP_URL, ConnectionProperties::default()).await
                {
                    if let Ok(channel) = connection.create_channel().await {
                        for t in types.iter() {
                            let _ = channel
                                .queue_delete(
                                    format!("{exchange}.{t}").as_str().into(),
                                    QueueDeleteOptions::default(),
                                )
                                .await;
                        }
                        for queue in [&dead_letter, &watch, &results] {
                            let _ = channel
                                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                                .await;
                        }
                        for name in [&exchange, &dead_letter, &results, &events] {
                            let _ = channel
                                .exchange_delete(
                                    name.as_str().into(),
                                    ExchangeDeleteOptions::default(),
                                )
                                .await;
                        }
                    }
                    let _ = connection.close(200, "done".into()).await;
                }
            });
            if let Ok(mut conn) =
                <diesel::PgConnection as diesel::Connection>::establish(ADMIN_DB_URL)
            {
                use diesel::connection::SimpleConnection;
                let _ = conn.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"
                ));
            }
        });
        let _ = cleanup.join();
    }
}

/// A valid rerun of the demo fixture: plan 614, user 13, APPIUM, pair
/// 111/222; `dry_run` sets `"dryRun": true`.
pub fn valid_rerun(dry_run: bool) -> Value {
    let mut body = serde_json::json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
           "scenarioEnvironmentPairs": [{"scenarioId": 111, "environmentId": 222}]});
    if dry_run {
        body["dryRun"] = Value::Bool(true);
    }
    body
}

/// The `WWW-Authenticate` challenge of a token that came but was refused.
pub const INVALID_TOKEN: &str = r#"Bearer error="invalid_token""#;

/// Sends the valid dry-run rerun with `Authorization: Bearer <token>`.
pub async fn send_with_token(app: &TestApp, token: &str) -> (u16, Option<String>, Value) {
    let response = app
        .post_raw("/queue/rerun")
        .header("authorization", format!("Bearer {token}"))
        .json(&valid_rerun(true))
        .send()
        .await
        .unwrap();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let (status, body) = read(response).await;
    (status, challenge, body)
}

/// 401 code 1009 with `error="invalid_token"`, and nothing written.
pub async fn assert_token_refused(app: &TestApp, token: &str, what: &str) {
    let before = app.counts().await;
    let (status, challenge, body) = send_with_token(app, token).await;
    assert_eq!((status, code(&body)), (401, 1009), "{what}: {body}");
    assert_eq!(
        message(&body),
        "Full authentication is required to access this resource"
    );
    assert_eq!(challenge.as_deref(), Some(INVALID_TOKEN), "{what}");
    assert_eq!(
        app.counts().await,
        before,
        "{what}: a refused request wrote rows"
    );
}

/// Texts no error body or log line may hold: SQL, file paths, stack traces.
pub fn assert_no_leak(text: &str, secrets: &[&str]) {
    for needle in [
        "SELECT ",
        "INSERT INTO",
        "UPDATE ",
        "DELETE FROM",
        "stack backtrace",
        "panicked at",
        ".rs:",
        "/work/",
        "/tmp/",
        "/home/",
        "/root/",
    ]
    .iter()
    .chain(secrets)
    {
        assert!(!text.contains(needle), "{needle:?} leaked in {text:?}");
    }
}

/// Runs the `plan-queue` binary with `args` and `env` (`JWT_SECRET` removed
/// unless given, `RUST_LOG=error`), waiting for it to exit. Blocking.
pub fn plan_queue(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_plan-queue"));
    command
        .args(args)
        .env_remove("JWT_SECRET")
        .env("RUST_LOG", "error");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run plan-queue")
}
