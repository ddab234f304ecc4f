//! Configuration: every setting is one field below, defined once — its
//! environment variable, default and meaning — and grouped by concern, so a
//! component takes its group, not the whole [`Config`].
//!
//! The definitions are clap arguments: `plan-queue serve --help` lists every
//! variable with its default, and each may also be given as a flag
//! (`--max-pairs 10`). Other commands read the same definitions from the
//! environment ([`Config::from_env`]); tests pass their own lookup
//! ([`Config::from_lookup`]). An empty value counts as unset.
//!
//! The contract's variables (`docs/CONTRACT.md`, section 4) are
//! `DATABASE_URL`, `AMQP_URL`, `BIND_ADDR`, `JWT_SECRET`, `AMQP_EXCHANGE`,
//! `FRAMEWORK_TYPES`, `MAX_PAIRS` and `MAX_ATTEMPTS`; the others tune this
//! implementation.
//!
//! **Token keys.** Exactly one of `JWT_SECRET` (HS256), `JWT_PUBLIC_KEY_FILE`
//! and `JWT_JWKS_FILE` is the key of a `serve` deployment, and its algorithm is
//! the only one accepted (a token whose header names another is refused, so
//! `alg: none` and HS256 signed with the public key fail). `serve` refuses to
//! start when none or more than one of them is set, naming them. `token` signs
//! with `JWT_SECRET` only.

use anyhow::{bail, Context};
use clap::{Args, CommandFactory, FromArgMatches};
use std::path::PathBuf;
use std::time::Duration;

/// Every setting of the service. Deliberately not `Debug`: it holds
/// `JWT_SECRET` and URLs that may carry passwords, and must never reach a log
/// line.
#[derive(Clone, Args)]
pub struct Config {
    #[command(flatten)]
    pub http: HttpConfig,
    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub amqp: AmqpConfig,
    #[command(flatten)]
    pub relay: RelayConfig,
    #[command(flatten)]
    pub results: ResultsConfig,
    #[command(flatten)]
    pub tokens: TokenConfig,
    #[command(flatten)]
    pub limits: Limits,
    #[command(flatten)]
    pub idempotency: IdempotencyConfig,
    #[command(flatten)]
    pub deadlines: DeadlineConfig,
    #[command(flatten)]
    pub callbacks: CallbackConfig,
}

/// The HTTP server and the limits it puts on each request.
#[derive(Clone, Args)]
#[command(next_help_heading = "HTTP")]
pub struct HttpConfig {
    /// HTTP listen address; port 0 picks a free port (contract).
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8080")]
    pub bind_addr: String,
    /// Largest accepted request body, bytes (413 code 1001 above).
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value_t = 65_536)]
    pub body_limit: usize,
    /// Time a client has to send its whole body, ms (408 after).
    #[arg(long = "body-read-timeout-ms", env = "BODY_READ_TIMEOUT_MS", default_value = "10000", value_parser = millis)]
    pub body_read_timeout: Duration,
    /// Time a client has to send the request line and headers, ms (408 after, connection closed).
    #[arg(long = "header-read-timeout-ms", env = "HEADER_READ_TIMEOUT_MS", default_value = "5000", value_parser = millis)]
    pub header_read_timeout: Duration,
    /// Largest sum of header names and values, bytes (431 code 1001 above; actix refuses heads over 128 KiB or 96 headers itself).
    #[arg(
        long = "header-limit-bytes",
        env = "HEADER_LIMIT_BYTES",
        default_value_t = 16_384
    )]
    pub header_limit: usize,
    /// Open connections per worker thread; more wait in the listen backlog.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
}

/// PostgreSQL and the request path's connection pool.
#[derive(Clone, Args)]
#[command(next_help_heading = "Database")]
pub struct DatabaseConfig {
    /// The PostgreSQL database (contract).
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/plan_queue",
        hide_env_values = true
    )]
    pub url: String,
    /// Connections of the request pool; also the cap on concurrent database work.
    #[arg(long = "db-pool-size", env = "DB_POOL_SIZE", default_value_t = 10)]
    pub pool_size: u32,
    /// Wait for a pooled connection before answering 503 code 1011, ms.
    #[arg(long = "db-checkout-timeout-ms", env = "DB_CHECKOUT_TIMEOUT_MS", default_value = "2000", value_parser = millis)]
    pub checkout_timeout: Duration,
    /// Longest life of a database connection, seconds (1 to 86400; closed
    /// once idle past it, checked every 30 s), so none outlives a database
    /// change it cannot notice.
    #[arg(long = "db-max-lifetime-secs", env = "DB_MAX_LIFETIME_SECS", default_value = "1800", value_parser = seconds)]
    pub max_lifetime: Duration,
}

/// RabbitMQ: the broker, the topology of the contract (section 2) and the
/// publisher's limits.
#[derive(Clone, Args)]
#[command(next_help_heading = "AMQP")]
pub struct AmqpConfig {
    /// The RabbitMQ broker (contract), or several nodes of one cluster,
    /// comma-separated: each component connects to the first that answers
    /// and moves to the next when its connection drops.
    #[arg(
        id = "amqp_url",
        long = "amqp-url",
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true
    )]
    pub url: String,
    /// The direct exchange messages are published to (contract).
    #[arg(
        long = "amqp-exchange",
        env = "AMQP_EXCHANGE",
        default_value = "scenario-runs"
    )]
    pub exchange: String,
    /// Accepted framework types, comma-separated; each is a routing key and
    /// names a queue (contract). Normalised to upper case.
    #[arg(
        long = "framework-types",
        env = "FRAMEWORK_TYPES",
        default_value = "APPIUM,GAUGE,JUNIT,TESTNG,SELENIUM,CUCUMBER,SERVICE",
        value_parser = parse_framework_types
    )]
    pub framework_types: FrameworkTypes,
    /// Deliveries of a message to runners before it is dead-lettered.
    #[arg(long = "delivery-limit", env = "DELIVERY_LIMIT", default_value_t = 5)]
    pub delivery_limit: u32,
    /// Replicas of each quorum queue when it is first declared
    /// (`x-quorum-initial-group-size`, 1-7); RabbitMQ caps it at the
    /// cluster's size. Existing queues keep theirs.
    #[arg(
        long = "quorum-group-size",
        env = "QUORUM_GROUP_SIZE",
        default_value_t = 3
    )]
    pub quorum_group_size: u32,
    /// Wait for the broker's publisher confirms of one batch, ms.
    #[arg(long = "publish-timeout-ms", env = "PUBLISH_TIMEOUT_MS", default_value = "5000", value_parser = millis)]
    pub publish_timeout: Duration,
}

/// The outbox relay.
#[derive(Clone, Args)]
#[command(next_help_heading = "Relay")]
pub struct RelayConfig {
    /// Dispatch rows the relay claims, publishes and marks per batch, one
    /// transaction each (under a backlog, batch after batch).
    #[arg(
        long = "relay-batch-size",
        env = "RELAY_BATCH_SIZE",
        default_value_t = 2000
    )]
    pub batch_size: i64,
    /// How often the relay looks for due rows when nothing wakes it, ms.
    #[arg(long = "relay-poll-ms", env = "RELAY_POLL_MS", default_value = "1000", value_parser = millis)]
    pub poll_interval: Duration,
    /// How long a relay that stopped answering keeps its claim on rows before
    /// another relay (or a restarted one) may take them, ms: the claim's
    /// `idle_in_transaction_session_timeout` (a live relay renews it every
    /// third of it; a killed relay's claim ends with its session at once).
    #[arg(long = "relay-lease-ms", env = "RELAY_LEASE_MS", default_value = "15000", value_parser = millis)]
    pub lease: Duration,
    /// Readiness fails while a dispatch row is pending longer than this, ms.
    #[arg(long = "pending-age-threshold-ms", env = "PENDING_AGE_THRESHOLD_MS", default_value = "60000", value_parser = millis)]
    pub pending_age_threshold: Duration,
    /// Published dispatch rows are deleted after this many seconds, in small
    /// batches (at least 3600).
    #[arg(id = "outbox_retention", long = "outbox-retention-secs", env = "OUTBOX_RETENTION_SECS", default_value = "604800", value_parser = seconds)]
    pub retention: Duration,
    /// Unpublished dispatch rows beyond which new runs and reruns are refused
    /// with 503 code 1011 (`outbox`) and `Retry-After`, instead of filling the
    /// disk during a long broker outage.
    #[arg(
        long = "outbox-max-pending",
        env = "OUTBOX_MAX_PENDING",
        default_value_t = 1_000_000
    )]
    pub max_pending: i64,
}

/// The results consumer (contract, section 9).
#[derive(Clone, Args)]
#[command(next_help_heading = "Results")]
pub struct ResultsConfig {
    /// Results the broker may deliver to the consumer before it acknowledges
    /// (AMQP prefetch count, 1-65535); keep it above `RESULTS_BATCH_SIZE` so
    /// the next batch arrives while one commits.
    #[arg(
        id = "results_prefetch",
        long = "results-prefetch",
        env = "RESULTS_PREFETCH",
        default_value_t = 500
    )]
    pub prefetch: u16,
    /// Most results applied in one database transaction (and acknowledged
    /// with one multiple ack after its commit).
    #[arg(
        id = "results_batch_size",
        long = "results-batch-size",
        env = "RESULTS_BATCH_SIZE",
        default_value_t = 250
    )]
    pub batch_size: usize,
    /// How long a batch waits for one more result once it has one, ms.
    #[arg(id = "results_batch_wait", long = "results-batch-wait-ms", env = "RESULTS_BATCH_WAIT_MS", default_value = "5", value_parser = millis)]
    pub batch_wait: Duration,
}

/// The bearer tokens (contract, section 3; see the module doc on key sources).
#[derive(Clone, Args)]
#[command(next_help_heading = "Tokens")]
pub struct TokenConfig {
    /// HS256 key of the bearer tokens; required by `token`, and by `serve`
    /// unless a public key is configured (contract).
    #[arg(long = "jwt-secret", env = "JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// PEM public key (`-----BEGIN PUBLIC KEY-----`) that verifies the bearer
    /// tokens: an RSA key pins RS256, an EC P-256 key pins ES256.
    #[arg(long = "jwt-public-key-file", env = "JWT_PUBLIC_KEY_FILE")]
    pub public_key_file: Option<PathBuf>,
    /// JSON Web Key Set file (RFC 7517) of RSA or EC P-256 public keys; a
    /// token's `kid` picks the key; re-read when it changes and when a token
    /// names an unknown `kid` (at most once a second).
    #[arg(long = "jwt-jwks-file", env = "JWT_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// When set, a token must carry `iss` equal to it.
    #[arg(long = "jwt-issuer", env = "JWT_ISSUER")]
    pub issuer: Option<String>,
    /// When set, a token must carry `aud` equal to it (or a list holding it);
    /// when unset, a token carrying `aud` is refused.
    #[arg(long = "jwt-audience", env = "JWT_AUDIENCE")]
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds (at most 3600).
    #[arg(
        long = "jwt-leeway-secs",
        env = "JWT_LEEWAY_SECS",
        default_value_t = 60
    )]
    pub leeway_secs: u64,
}

/// Limits of what one request may queue.
#[derive(Clone, Args)]
#[command(next_help_heading = "Limits")]
pub struct Limits {
    /// Most pairs one rerun may queue, after expansion (contract; code 1008).
    #[arg(long = "max-pairs", env = "MAX_PAIRS", default_value_t = 1000)]
    pub max_pairs: usize,
    /// Highest attempt a rerun may queue for one pair of a source run's chain
    /// (contract, section 8; code 1015 beyond it).
    #[arg(long = "max-attempts", env = "MAX_ATTEMPTS", default_value_t = 50)]
    pub max_attempts: i32,
}

/// Idempotency-Key storage.
#[derive(Clone, Args)]
#[command(next_help_heading = "Idempotency")]
pub struct IdempotencyConfig {
    /// How long an `Idempotency-Key` is remembered, seconds (at least 86400: the contract keeps keys 24 hours).
    #[arg(long = "idempotency-retention-secs", env = "IDEMPOTENCY_RETENTION_SECS", default_value = "86400", value_parser = seconds)]
    pub retention: Duration,
}

/// Deadlines of pairs (contract, section 15) and the sweep that enforces them.
#[derive(Clone, Args)]
#[command(next_help_heading = "Deadlines")]
pub struct DeadlineConfig {
    /// Longest a pair may stay QUEUED, from its execution's requestedAt, seconds (5-2592000; contract, section 15).
    #[arg(long = "queue-timeout-secs", env = "QUEUE_TIMEOUT_SECS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(5..=2_592_000))]
    pub queue_timeout_secs: u64,
    /// Longest a pair may stay RUNNING, from its startedAt, seconds (5-604800; a plan's runTimeoutSecs wins; contract, section 15).
    #[arg(long = "run-timeout-secs", env = "RUN_TIMEOUT_SECS", default_value_t = 7_200,
          value_parser = clap::value_parser!(u64).range(5..=604_800))]
    pub run_timeout_secs: u64,
    /// Time between two rounds of the deadline sweep, ms (100-5000: pairs end within 10 s of their deadline).
    #[arg(long = "deadline-sweep-ms", env = "DEADLINE_SWEEP_MS", default_value = "2000",
          value_parser = sweep_interval)]
    pub sweep_interval: Duration,
}

impl DeadlineConfig {
    /// `QUEUE_TIMEOUT_SECS` as a duration.
    pub fn queue_timeout(&self) -> Duration {
        Duration::from_secs(self.queue_timeout_secs)
    }

    /// `RUN_TIMEOUT_SECS` as a duration.
    pub fn run_timeout(&self) -> Duration {
        Duration::from_secs(self.run_timeout_secs)
    }
}

/// Callbacks (contract, section 21). Deliberately not `Debug`: it holds
/// `CALLBACK_SECRET`.
#[derive(Clone, Args)]
#[command(next_help_heading = "Callbacks")]
pub struct CallbackConfig {
    /// Hosts a run's or rerun's callbackUrl may name: a comma list of host names, IP literals and *.example.com for subdomains (empty: callbacks off; contract, section 21). A listed name may resolve to any address except a special-purpose one (loopback, link-local such as 169.254.169.254, unspecified, multicast, broadcast, or their IPv4-mapped forms), which must be listed as an IP literal itself; the name localhost may reach its loopback address.
    #[arg(
        long = "callback-allowed-hosts",
        env = "CALLBACK_ALLOWED_HOSTS",
        default_value = ""
    )]
    pub allowed_hosts: String,
    /// The key of each callback's X-PlanQueue-Signature (HMAC-SHA256); required when CALLBACK_ALLOWED_HOSTS is set.
    #[arg(
        id = "callback_secret",
        long = "callback-secret",
        env = "CALLBACK_SECRET",
        hide_env_values = true
    )]
    pub secret: Option<String>,
    /// How long a callback is tried again, from when its execution finished, seconds (1-2592000; contract, section 21).
    #[arg(id = "callback_retry_secs", long = "callback-retry-secs", env = "CALLBACK_RETRY_SECS", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub retry_secs: u64,
}

impl CallbackConfig {
    /// Whether `CALLBACK_ALLOWED_HOSTS` names any host (callbacks are on).
    pub fn enabled(&self) -> bool {
        self.allowed_hosts.split(',').any(|h| !h.trim().is_empty())
    }

    /// `CALLBACK_RETRY_SECS` as a duration.
    pub fn retry_for(&self) -> Duration {
        Duration::from_secs(self.retry_secs)
    }
}

/// `DEADLINE_SWEEP_MS`: 100 to 5000 ms.
fn sweep_interval(value: &str) -> Result<Duration, String> {
    let ms: u64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number of milliseconds"))?;
    if !(100..=5_000).contains(&ms) {
        return Err(format!("{ms} is not between 100 and 5000"));
    }
    Ok(Duration::from_millis(ms))
}

/// The configured framework types: normalised (upper case), deduplicated,
/// in the order given, at least one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameworkTypes(Vec<String>);

impl FrameworkTypes {
    /// The types, e.g. `["APPIUM", "GAUGE"]`.
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl std::ops::Deref for FrameworkTypes {
    type Target = [String];
    fn deref(&self) -> &[String] {
        &self.0
    }
}

impl<const N: usize> From<[&str; N]> for FrameworkTypes {
    /// Types as given (tests); use `FRAMEWORK_TYPES` parsing for user input.
    fn from(types: [&str; N]) -> Self {
        FrameworkTypes(types.iter().map(|t| t.to_ascii_uppercase()).collect())
    }
}

/// Where the keys that verify bearer tokens come from: exactly one per
/// `serve` deployment (see the module documentation).
#[derive(Clone, Debug, PartialEq)]
pub enum TokenKeySource {
    /// `JWT_SECRET`: HS256.
    Secret(String),
    /// `JWT_PUBLIC_KEY_FILE`: RS256 or ES256, from the key's type.
    PublicKeyFile(PathBuf),
    /// `JWT_JWKS_FILE`: RS256 or ES256, from the keys' type.
    JwksFile(PathBuf),
}

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// Errors name the variable whose value cannot be parsed.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (variable name → value), so
    /// tests need not touch the process environment: each variable's value
    /// is handed to the same definitions `serve` parses, and nothing else
    /// (the process environment is not read).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let command = Self::augment_args(clap::Command::new("plan-queue").no_binary_name(true));
        let mut argv = Vec::new();
        for arg in command.get_arguments() {
            let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            let name = env.to_string_lossy();
            if let Some(value) = lookup(&name).filter(|v| !v.trim().is_empty()) {
                argv.push(format!("--{long}={value}"));
            }
        }
        // errors name the variable, and only `lookup` is read
        let command = command.mut_args(|arg| {
            let name = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            let arg = arg.env(None);
            match name {
                Some(name) => arg.value_name(name),
                None => arg,
            }
        });
        let matches = command
            .try_get_matches_from(argv)
            .map_err(|e| anyhow::anyhow!("{}", e.render().to_string().trim()))?;
        Self::from_arg_matches(&matches)
            .map_err(|e| anyhow::anyhow!("{}", e.render().to_string().trim()))?
            .checked()
    }

    /// The configuration after the checks no single variable can make:
    /// ranges that keep names, clock arithmetic and timeouts usable.
    ///
    /// Errors name the variable.
    pub fn checked(self) -> anyhow::Result<Self> {
        check_ranges(&self)?;
        Ok(self)
    }

    /// The `JWT_SECRET`, or an error saying how to set it.
    pub fn require_jwt_secret(&self) -> anyhow::Result<&str> {
        self.tokens.secret.as_deref().context(
            "JWT_SECRET is not set: export JWT_SECRET=<the HS256 key shared with the gateway>",
        )
    }

    /// The one source of token keys of `serve`.
    ///
    /// Errors, naming the variables: none of `JWT_SECRET`, `JWT_PUBLIC_KEY_FILE`
    /// and `JWT_JWKS_FILE` is set, or more than one is (one algorithm family
    /// per deployment).
    pub fn token_key_source(&self) -> anyhow::Result<TokenKeySource> {
        self.tokens.key_source()
    }
}

impl TokenConfig {
    /// See [`Config::token_key_source`].
    pub fn key_source(&self) -> anyhow::Result<TokenKeySource> {
        let mut sources = Vec::new();
        if let Some(secret) = &self.secret {
            sources.push(("JWT_SECRET", TokenKeySource::Secret(secret.clone())));
        }
        if let Some(path) = &self.public_key_file {
            sources.push((
                "JWT_PUBLIC_KEY_FILE",
                TokenKeySource::PublicKeyFile(path.clone()),
            ));
        }
        if let Some(path) = &self.jwks_file {
            sources.push(("JWT_JWKS_FILE", TokenKeySource::JwksFile(path.clone())));
        }
        match sources.len() {
            0 => bail!(
                "no token key: set exactly one of JWT_SECRET (HS256), \
                 JWT_PUBLIC_KEY_FILE (PEM, RS256 or ES256) or JWT_JWKS_FILE (JWKS)"
            ),
            1 => Ok(sources.remove(0).1),
            _ => {
                let names: Vec<&str> = sources.iter().map(|(name, _)| *name).collect();
                bail!(
                    "{} are set together: a deployment verifies tokens with exactly one of \
                     JWT_SECRET, JWT_PUBLIC_KEY_FILE and JWT_JWKS_FILE; unset the others",
                    names.join(" and ")
                )
            }
        }
    }
}

impl AmqpConfig {
    /// The quorum queue of framework type `framework_type`: `<exchange>.<TYPE>` (contract, section 2).
    pub fn queue_name(&self, framework_type: &str) -> String {
        format!("{}.{}", self.exchange, framework_type)
    }

    /// The dead-letter exchange and queue: `<exchange>.dead-letter`.
    pub fn dead_letter_name(&self) -> String {
        format!("{}.dead-letter", self.exchange)
    }

    /// The results exchange (`fanout`) and its queue: `<exchange>.results` (contract, section 9).
    pub fn results_name(&self) -> String {
        format!("{}.results", self.exchange)
    }

    /// The events exchange (`topic`): `<exchange>.events` (contract, section 10).
    pub fn events_name(&self) -> String {
        format!("{}.events", self.exchange)
    }

    /// plan-queue's own quorum queue on the dead-letter exchange:
    /// `<exchange>.dead-letter.watch` (contract, section 17).
    pub fn dead_letter_watch_name(&self) -> String {
        format!("{}.dead-letter.watch", self.exchange)
    }
}

/// The broker URLs of `AMQP_URL`: split at commas, trimmed, empty parts
/// dropped.
pub fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The first of lapin's numeric query parameters (`frame_max`,
/// `channel_max`, `heartbeat`, `connection_timeout`) whose value in `url`
/// does not parse as its number type; the parser's own error would echo the
/// whole URL, password included.
fn bad_query_parameter(url: &str) -> Option<&'static str> {
    let query = url.split_once('?')?.1;
    let pairs: Vec<(&str, &str)> = query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .collect();
    let value = |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    /// A parameter's name and whether a value is valid for it.
    type Check = (&'static str, fn(&str) -> bool);
    let checks: [Check; 4] = [
        ("frame_max", |v| v.parse::<u32>().is_ok()),
        ("channel_max", |v| v.parse::<u16>().is_ok()),
        ("heartbeat", |v| v.parse::<u16>().is_ok()),
        ("connection_timeout", |v| v.parse::<u64>().is_ok()),
    ];
    checks
        .into_iter()
        .find(|(name, valid)| value(name).is_some_and(|v| !valid(v)))
        .map(|(name, _)| name)
}

/// `host:port` of a broker URL, for logs, readiness and metrics (never the
/// credentials); the URL without its user info when it does not parse.
pub fn node_of(url: &str) -> String {
    match url.parse::<lapin::uri::AMQPUri>() {
        Ok(uri) => format!("{}:{}", uri.authority.host, uri.authority.port),
        Err(_) => {
            let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            rest.split('/').next().unwrap_or_default().to_owned()
        }
    }
}

/// Upper and lower bounds that keep every setting usable: names RabbitMQ
/// accepts (short strings of at most 255 bytes for `<exchange>.<TYPE>`),
/// clock and retention arithmetic that cannot overflow, timeouts of at most a
/// day, counts of at least one.
fn check_ranges(config: &Config) -> anyhow::Result<()> {
    const DAY: Duration = Duration::from_secs(86_400);
    let urls = split_urls(&config.amqp.url);
    if urls.is_empty() {
        bail!("AMQP_URL must name at least one broker (amqp://user:password@host:port/vhost)");
    }
    for url in &urls {
        match url.parse::<lapin::uri::AMQPUri>() {
            Err(_) => match bad_query_parameter(url) {
                Some(name) => bail!(
                    "AMQP_URL {}: the value of its query parameter {name} is not a valid number",
                    node_of(url)
                ),
                None => bail!(
                    "AMQP_URL must be amqp:// or amqps:// URLs, comma-separated; {} is not one",
                    node_of(url)
                ),
            },
            Ok(uri) => {
                if let Some(frame_max @ 1..=4095) = uri.query.frame_max {
                    bail!(
                        "AMQP_URL {}: frame_max={frame_max} is below AMQP's minimum frame size; \
                         use 0 (the broker's) or at least 4096",
                        node_of(url)
                    );
                }
            }
        }
    }
    if config.callbacks.enabled() && config.callbacks.secret.as_deref().is_none_or(str::is_empty) {
        bail!("CALLBACK_SECRET is not set: callbacks (CALLBACK_ALLOWED_HOSTS) are signed with it; export CALLBACK_SECRET=<a key shared with the receivers>");
    }
    if !(1..=7).contains(&config.amqp.quorum_group_size) {
        bail!("QUORUM_GROUP_SIZE must be between 1 and 7");
    }
    let exchange = &config.amqp.exchange;
    if exchange.len() > 200
        || !exchange
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        bail!("AMQP_EXCHANGE must be at most 200 letters, digits, '-', '_', '.' or ':', got {exchange:?}");
    }
    if config.tokens.leeway_secs > 3600 {
        bail!("JWT_LEEWAY_SECS must be at most 3600 (one hour)");
    }
    let retention = config.idempotency.retention;
    if retention < DAY {
        bail!("IDEMPOTENCY_RETENTION_SECS must be at least 86400 (24 hours)");
    }
    if retention > DAY * 3650 {
        bail!("IDEMPOTENCY_RETENTION_SECS must be at most 315360000 (ten years)");
    }
    let lifetime = config.database.max_lifetime;
    if lifetime < Duration::from_secs(1) || lifetime > DAY {
        bail!("DB_MAX_LIFETIME_SECS must be between 1 and 86400 (one day)");
    }
    for (name, value) in [
        ("DB_CHECKOUT_TIMEOUT_MS", config.database.checkout_timeout),
        ("BODY_READ_TIMEOUT_MS", config.http.body_read_timeout),
        ("PUBLISH_TIMEOUT_MS", config.amqp.publish_timeout),
        ("RELAY_POLL_MS", config.relay.poll_interval),
        ("RELAY_LEASE_MS", config.relay.lease),
        (
            "PENDING_AGE_THRESHOLD_MS",
            config.relay.pending_age_threshold,
        ),
        ("HEADER_READ_TIMEOUT_MS", config.http.header_read_timeout),
        ("RESULTS_BATCH_WAIT_MS", config.results.batch_wait),
    ] {
        if value > DAY {
            bail!("{name} must be at most 86400000 (one day)");
        }
    }
    let outbox_retention = config.relay.retention;
    if outbox_retention < Duration::from_secs(3600) || outbox_retention > DAY * 3650 {
        bail!("OUTBOX_RETENTION_SECS must be between 3600 (one hour) and 315360000 (ten years)");
    }
    for (name, value) in [
        ("OUTBOX_MAX_PENDING", config.relay.max_pending),
        ("MAX_PAIRS", config.limits.max_pairs as i64),
        ("MAX_ATTEMPTS", i64::from(config.limits.max_attempts)),
        ("DB_POOL_SIZE", i64::from(config.database.pool_size)),
        ("RELAY_BATCH_SIZE", config.relay.batch_size),
        ("MAX_CONNECTIONS", config.http.max_connections as i64),
        ("RESULTS_PREFETCH", i64::from(config.results.prefetch)),
        ("RESULTS_BATCH_SIZE", config.results.batch_size as i64),
    ] {
        if value < 1 {
            bail!("{name} must be at least 1");
        }
    }
    Ok(())
}

/// A whole number of milliseconds.
fn millis(value: &str) -> Result<Duration, String> {
    whole_number(value).map(Duration::from_millis)
}

/// A whole number of seconds.
fn seconds(value: &str) -> Result<Duration, String> {
    whole_number(value).map(Duration::from_secs)
}

fn whole_number(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("must be a non-negative whole number, got {value:?}"))
}

/// Splits `FRAMEWORK_TYPES` on commas, trims and upper-cases each type.
///
/// A type becomes an AMQP routing key and part of a queue name, so only
/// `A-Z`, `0-9`, `_` and `-` are allowed, at most 50 characters.
fn parse_framework_types(list: &str) -> Result<FrameworkTypes, String> {
    let mut types: Vec<String> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let normalised = item.to_ascii_uppercase();
        if !normalised
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "{item:?} may only hold letters, digits, '_' and '-'"
            ));
        }
        if normalised.len() > 50 {
            return Err(format!("{item:?} is longer than 50 characters"));
        }
        if !types.contains(&normalised) {
            types.push(normalised);
        }
    }
    if types.is_empty() {
        return Err("must name at least one framework type".to_owned());
    }
    Ok(FrameworkTypes(types))
}

/// The `serve --help` text (for the README and its test).
pub fn help() -> String {
    #[derive(clap::Parser)]
    struct Serve {
        #[command(flatten)]
        config: Config,
    }
    Serve::command().render_help().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        Config::from_lookup(|n| {
            vars.iter()
                .find(|(name, _)| *name == n)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_match_the_contract() {
        let config = Config::from_lookup(|_| None).unwrap();
        assert_eq!(config.amqp.exchange, "scenario-runs");
        assert_eq!(config.limits.max_pairs, 1000);
        assert_eq!(config.limits.max_attempts, 50);
        assert_eq!(config.http.bind_addr, "127.0.0.1:8080");
        assert_eq!(config.amqp.framework_types.len(), 7);
        assert_eq!(config.amqp.queue_name("APPIUM"), "scenario-runs.APPIUM");
        assert!(config.tokens.secret.is_none());
        assert_eq!(config.http.header_limit, 16_384);
        assert_eq!(config.http.header_read_timeout, Duration::from_secs(5));
        assert_eq!(
            config.database.url,
            "postgres://postgres@127.0.0.1:5432/plan_queue"
        );
    }

    #[test]
    fn each_variable_is_read_through_the_lookup() {
        let config = with(&[
            ("MAX_PAIRS", "7"),
            ("RELAY_LEASE_MS", "20000"),
            ("AMQP_EXCHANGE", "x"),
            ("BIND_ADDR", " "),
        ])
        .unwrap();
        assert_eq!(config.limits.max_pairs, 7);
        assert_eq!(config.relay.lease, Duration::from_secs(20));
        assert_eq!(config.amqp.exchange, "x");
        assert_eq!(config.http.bind_addr, "127.0.0.1:8080", "blank is unset");
    }

    #[test]
    fn callbacks_are_off_by_default_and_need_a_secret_when_hosts_are_set() {
        let config = with(&[]).unwrap();
        assert!(!config.callbacks.enabled());
        assert_eq!(config.callbacks.retry_secs, 86_400);
        let refused = with(&[("CALLBACK_ALLOWED_HOSTS", "hooks.example.com")])
            .err()
            .unwrap()
            .to_string();
        assert!(
            refused.starts_with("CALLBACK_SECRET is not set"),
            "{refused}"
        );
        let on = with(&[
            ("CALLBACK_ALLOWED_HOSTS", "hooks.example.com"),
            ("CALLBACK_SECRET", "s3cret"),
            ("CALLBACK_RETRY_SECS", "5"),
        ])
        .unwrap();
        assert!(on.callbacks.enabled());
        assert_eq!(on.callbacks.retry_for(), Duration::from_secs(5));
    }

    #[test]
    fn help_lists_every_variable_with_its_default() {
        let help = help();
        for needle in [
            "MAX_PAIRS",
            "[default: 1000]",
            "DATABASE_URL",
            "RELAY_LEASE_MS",
            "IDEMPOTENCY_RETENTION_SECS",
            "JWT_SECRET",
        ] {
            assert!(help.contains(needle), "{needle} missing from:\n{help}");
        }
    }

    #[test]
    fn exactly_one_token_key_source_is_accepted() {
        let source = |vars: &[(&str, &str)]| with(vars).unwrap().token_key_source();
        assert_eq!(
            source(&[("JWT_SECRET", "s")]).unwrap(),
            TokenKeySource::Secret("s".into())
        );
        assert_eq!(
            source(&[("JWT_JWKS_FILE", "/k.json")]).unwrap(),
            TokenKeySource::JwksFile("/k.json".into())
        );
        let none = source(&[]).unwrap_err().to_string();
        assert!(none.contains("JWT_PUBLIC_KEY_FILE"), "{none}");
        let both = source(&[("JWT_SECRET", "s"), ("JWT_PUBLIC_KEY_FILE", "/k.pem")])
            .unwrap_err()
            .to_string();
        assert!(
            both.starts_with("JWT_SECRET and JWT_PUBLIC_KEY_FILE are set together"),
            "{both}"
        );
    }

    #[test]
    fn framework_types_are_normalised_and_deduplicated() {
        let types = parse_framework_types(" appium, Gauge ,APPIUM,,").unwrap();
        assert_eq!(types.as_slice(), ["APPIUM", "GAUGE"]);
        assert!(parse_framework_types("APP IUM").is_err());
        assert!(parse_framework_types(" , ").is_err());
    }

    #[test]
    fn settings_that_would_overflow_or_break_names_are_refused() {
        for (name, value) in [
            ("JWT_LEEWAY_SECS", "18446744073709551616"),
            ("JWT_LEEWAY_SECS", "3601"),
            ("IDEMPOTENCY_RETENTION_SECS", "18446744073709551615"),
            ("IDEMPOTENCY_RETENTION_SECS", "3600"),
            ("PUBLISH_TIMEOUT_MS", "86400001"),
            ("AMQP_EXCHANGE", "has space"),
            ("MAX_PAIRS", "0"),
            ("MAX_ATTEMPTS", "0"),
            ("MAX_ATTEMPTS", "2147483648"),
            (
                "FRAMEWORK_TYPES",
                "APPIUM,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ),
        ] {
            let Err(err) = with(&[(name, value)]) else {
                panic!("{name}={value} was accepted");
            };
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
        let long = "x".repeat(201);
        assert!(with(&[("AMQP_EXCHANGE", &long)]).is_err());
    }

    #[test]
    fn amqp_url_takes_one_broker_or_several_and_never_shows_a_password_when_refusing_one() {
        let one = "amqp://guest:guest@127.0.0.1:5672/%2f";
        assert_eq!(with(&[("AMQP_URL", one)]).unwrap().amqp.url, one);
        let several = format!("{one}, amqp://u:p@rabbit-2:5673/%2f,amqps://rabbit-3/vh");
        let config = with(&[("AMQP_URL", &several)]).unwrap();
        let nodes: Vec<String> = split_urls(&config.amqp.url)
            .iter()
            .map(|url| node_of(url))
            .collect();
        assert_eq!(nodes, ["127.0.0.1:5672", "rabbit-2:5673", "rabbit-3:5671"]);
        for bad in [
            " , ".to_owned(),
            format!("{one},http://u:secret@rabbit:5672/"),
            format!("{one},amqp://u:secret@rabbit:notaport/"),
        ] {
            let Err(err) = with(&[("AMQP_URL", &bad)]) else {
                panic!("AMQP_URL {bad:?} was accepted");
            };
            let err = err.to_string();
            assert!(err.contains("AMQP_URL") && !err.contains("secret"), "{err}");
        }
        assert_eq!(with(&[]).unwrap().amqp.quorum_group_size, 3);
        assert!(with(&[("QUORUM_GROUP_SIZE", "0")]).is_err());
        assert!(with(&[("QUORUM_GROUP_SIZE", "8")]).is_err());
    }

    #[test]
    fn a_bad_amqp_url_query_parameter_is_named_and_a_frame_max_under_4096_is_refused() {
        let one = "amqp://guest:secret@127.0.0.1:5672/%2f";
        for (query, named) in [
            ("?frame_max=abc", "frame_max"),
            ("?heartbeat=5&frame_max=-5", "frame_max"),
            ("?frame_max=99999999999", "frame_max"),
            ("?heartbeat=abc", "heartbeat"),
            ("?frame_max=1", "frame_max=1"),
            ("?frame_max=4095", "frame_max=4095"),
        ] {
            let bad = format!("amqp://guest:guest@127.0.0.1:5672/%2f,{one}{query}");
            let Err(err) = with(&[("AMQP_URL", &bad)]) else {
                panic!("AMQP_URL {bad:?} was accepted");
            };
            let err = err.to_string();
            assert!(
                err.contains(named) && err.contains("127.0.0.1:5672"),
                "{query}: {err}"
            );
            assert!(!err.contains("secret"), "{err}");
        }
        for good in [
            "?frame_max=0",
            "?frame_max=4096",
            "?frame_max=131072&heartbeat=5",
        ] {
            let url = format!("{one}{good}");
            assert!(with(&[("AMQP_URL", &url)]).is_ok(), "{good}");
        }
    }

    #[test]
    fn a_bad_number_names_its_variable() {
        let Err(err) = with(&[("MAX_PAIRS", "many")]) else {
            panic!("a bad MAX_PAIRS was accepted");
        };
        let err = err.to_string();
        assert!(err.contains("MAX_PAIRS"), "{err}");
    }
}
