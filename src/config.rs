//! Configuration from environment variables.
//!
//! Variables of the contract (`docs/CONTRACT.md`, section 4):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/plan_queue` | PostgreSQL database |
//! | `AMQP_URL` | `amqp://guest:guest@127.0.0.1:5672/%2f` | RabbitMQ broker |
//! | `BIND_ADDR` | `127.0.0.1:8080` | HTTP listen address |
//! | `JWT_SECRET` | none; required by `token`, and by `serve` unless a public key is configured | HS256 key of the bearer tokens |
//! | `AMQP_EXCHANGE` | `scenario-runs` | exchange the messages are published to |
//! | `FRAMEWORK_TYPES` | `APPIUM,GAUGE,JUNIT,TESTNG,SELENIUM,CUCUMBER,SERVICE` | accepted framework types (routing keys) |
//! | `MAX_PAIRS` | `1000` | most pairs one rerun may queue, after expansion |
//!
//! Tuning variables of our own (all optional):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DB_POOL_SIZE` | `10` | connections of the request pool; also the cap on concurrent database work |
//! | `DB_CHECKOUT_TIMEOUT_MS` | `2000` | wait for a pooled connection before answering 503 code 1011 |
//! | `DB_MAX_LIFETIME_SECS` | `1800` | longest life of a database connection (1 to 86400; closed once idle past it, checked every 30 s), so none outlives a database change it cannot notice |
//! | `BODY_LIMIT_BYTES` | `65536` | largest accepted request body (413 above) |
//! | `BODY_READ_TIMEOUT_MS` | `10000` | time a client has to send its whole body (408 after) |
//! | `PUBLISH_TIMEOUT_MS` | `5000` | wait for the broker's publisher confirms of one relay batch |
//! | `RELAY_BATCH_SIZE` | `2000` | dispatch rows the relay claims and publishes per batch (under a backlog the next batch is claimed while one is being published) |
//! | `RELAY_POLL_MS` | `1000` | how often the relay looks for due rows when nothing wakes it |
//! | `RELAY_LEASE_MS` | `15000` | how long a relay's claim on rows lasts before another relay (or a restarted one) may take them; keep it above `PUBLISH_TIMEOUT_MS` |
//! | `DELIVERY_LIMIT` | `5` | deliveries of a message to runners before it is dead-lettered |
//! | `JWT_LEEWAY_SECS` | `60` | clock skew allowed on `exp` and `nbf` |
//! | `JWT_PUBLIC_KEY_FILE` | none | PEM public key (`-----BEGIN PUBLIC KEY-----`) that verifies the bearer tokens: an RSA key pins RS256, an EC P-256 key pins ES256 |
//! | `JWT_JWKS_FILE` | none | JSON Web Key Set file (RFC 7517) of RSA or EC P-256 public keys; a token's `kid` picks the key; the file is re-read when it changes and when a token names an unknown `kid` (at most once a second) |
//! | `JWT_ISSUER` | none | when set, a token must carry `iss` equal to it |
//! | `JWT_AUDIENCE` | none | when set, a token must carry `aud` equal to it (or a list holding it); when unset, a token carrying `aud` is refused |
//! | `HEADER_READ_TIMEOUT_MS` | `5000` | time a client has to send the request line and headers (408 after, connection closed) |
//! | `HEADER_LIMIT_BYTES` | `16384` | largest sum of header names and values (431 code 1001 above; actix refuses heads over 128 KiB or 96 headers itself) |
//! | `MAX_CONNECTIONS` | `1024` | open connections per worker thread; more wait in the listen backlog |
//!
//! **Token keys.** Exactly one of `JWT_SECRET` (HS256), `JWT_PUBLIC_KEY_FILE`
//! and `JWT_JWKS_FILE` is the key of a `serve` deployment, and its algorithm is
//! the only one accepted (a token whose header names another is refused, so
//! `alg: none` and HS256 signed with the public key fail). `serve` refuses to
//! start when none or more than one of them is set, naming them. `token` signs
//! with `JWT_SECRET` only.
//! | `IDEMPOTENCY_RETENTION_SECS` | `86400` | how long an `Idempotency-Key` is remembered (at least 24 h) |
//! | `PENDING_AGE_THRESHOLD_MS` | `60000` | readiness fails while a dispatch row is pending longer than this |

use anyhow::{bail, Context};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Every setting of the service; see the module documentation for variables
/// and defaults. Deliberately not `Debug`: it holds `JWT_SECRET` and URLs
/// that may carry passwords, and must never reach a log line.
#[derive(Clone)]
pub struct Config {
    /// `DATABASE_URL`: the PostgreSQL database.
    pub database_url: String,
    /// `AMQP_URL`: the RabbitMQ broker.
    pub amqp_url: String,
    /// `BIND_ADDR`: HTTP listen address; port 0 picks a free port.
    pub bind_addr: String,
    /// `JWT_SECRET`; `None` when unset (then `token` refuses, and `serve`
    /// unless a public key is configured).
    pub jwt_secret: Option<String>,
    /// `JWT_PUBLIC_KEY_FILE`: PEM public key (RSA → RS256, EC P-256 → ES256).
    pub jwt_public_key_file: Option<PathBuf>,
    /// `JWT_JWKS_FILE`: JSON Web Key Set; the token's `kid` picks the key.
    pub jwt_jwks_file: Option<PathBuf>,
    /// `JWT_ISSUER`: required `iss` of every token, when set.
    pub jwt_issuer: Option<String>,
    /// `JWT_AUDIENCE`: required `aud` of every token, when set.
    pub jwt_audience: Option<String>,
    /// `AMQP_EXCHANGE`: the direct exchange messages are published to.
    pub exchange: String,
    /// `FRAMEWORK_TYPES`, normalised (upper-case); each is a routing key.
    pub framework_types: Vec<String>,
    /// `MAX_PAIRS`: most pairs one rerun may queue, after expansion.
    pub max_pairs: usize,
    /// `DB_POOL_SIZE`: request-path connections, also the cap on concurrent database work.
    pub db_pool_size: u32,
    /// `DB_CHECKOUT_TIMEOUT_MS`: wait for a connection before 503 code 1011.
    pub db_checkout_timeout: Duration,
    /// `DB_MAX_LIFETIME_SECS`: longest life of a pooled database connection.
    pub db_max_lifetime: Duration,
    /// `BODY_LIMIT_BYTES`: largest request body, bytes (413 above).
    pub body_limit: usize,
    /// `BODY_READ_TIMEOUT_MS`: time to receive the whole body (408 after).
    pub body_read_timeout: Duration,
    /// `PUBLISH_TIMEOUT_MS`: wait for a relay batch's publishes and confirms.
    pub publish_timeout: Duration,
    /// `RELAY_BATCH_SIZE`: dispatch rows claimed and published per batch.
    pub relay_batch_size: i64,
    /// `RELAY_POLL_MS`: how often the relay looks for due rows unprompted.
    pub relay_poll_interval: Duration,
    /// `RELAY_LEASE_MS`: how long a relay's claim on rows lasts.
    pub relay_lease: Duration,
    /// `DELIVERY_LIMIT`: deliveries to runners before a message is dead-lettered.
    pub delivery_limit: u32,
    /// `JWT_LEEWAY_SECS`: clock skew allowed on `exp` and `nbf`, seconds.
    pub jwt_leeway_secs: u64,
    /// `IDEMPOTENCY_RETENTION_SECS`: how long an Idempotency-Key is remembered.
    pub idempotency_retention: Duration,
    /// `PENDING_AGE_THRESHOLD_MS`: readiness fails past this outbox age.
    pub pending_age_threshold: Duration,
    /// `HEADER_READ_TIMEOUT_MS`: time to receive the request line and headers.
    pub header_read_timeout: Duration,
    /// `HEADER_LIMIT_BYTES`: largest sum of header name and value lengths, bytes.
    pub header_limit: usize,
    /// `MAX_CONNECTIONS`: open connections per worker thread.
    pub max_connections: usize,
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

    /// Reads the configuration through `lookup` (variable name → value), so tests
    /// need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let text = |name: &str, default: &str| {
            lookup(name)
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        let optional = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let millis = |name: &str, default: u64| -> anyhow::Result<Duration> {
            Ok(Duration::from_millis(number(&lookup, name, default)?))
        };
        let framework_types = parse_framework_types(&text(
            "FRAMEWORK_TYPES",
            "APPIUM,GAUGE,JUNIT,TESTNG,SELENIUM,CUCUMBER,SERVICE",
        ))?;
        let idempotency_retention =
            Duration::from_secs(number(&lookup, "IDEMPOTENCY_RETENTION_SECS", 86_400)?);
        if idempotency_retention < Duration::from_secs(86_400) {
            bail!("IDEMPOTENCY_RETENTION_SECS must be at least 86400 (24 hours)");
        }
        let config = Config {
            database_url: text(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/plan_queue",
            ),
            amqp_url: text("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            bind_addr: text("BIND_ADDR", "127.0.0.1:8080"),
            jwt_secret: lookup("JWT_SECRET").filter(|v| !v.is_empty()),
            jwt_public_key_file: optional("JWT_PUBLIC_KEY_FILE").map(PathBuf::from),
            jwt_jwks_file: optional("JWT_JWKS_FILE").map(PathBuf::from),
            jwt_issuer: optional("JWT_ISSUER"),
            jwt_audience: optional("JWT_AUDIENCE"),
            exchange: text("AMQP_EXCHANGE", "scenario-runs"),
            framework_types,
            max_pairs: number(&lookup, "MAX_PAIRS", 1000)?,
            db_pool_size: number(&lookup, "DB_POOL_SIZE", 10)?,
            db_checkout_timeout: millis("DB_CHECKOUT_TIMEOUT_MS", 2000)?,
            db_max_lifetime: Duration::from_secs(number(&lookup, "DB_MAX_LIFETIME_SECS", 1800)?),
            body_limit: number(&lookup, "BODY_LIMIT_BYTES", 65_536)?,
            body_read_timeout: millis("BODY_READ_TIMEOUT_MS", 10_000)?,
            publish_timeout: millis("PUBLISH_TIMEOUT_MS", 5000)?,
            relay_batch_size: number(&lookup, "RELAY_BATCH_SIZE", 2000)?,
            relay_poll_interval: millis("RELAY_POLL_MS", 1000)?,
            relay_lease: millis("RELAY_LEASE_MS", 15_000)?,
            delivery_limit: number(&lookup, "DELIVERY_LIMIT", 5)?,
            jwt_leeway_secs: number(&lookup, "JWT_LEEWAY_SECS", 60)?,
            idempotency_retention,
            pending_age_threshold: millis("PENDING_AGE_THRESHOLD_MS", 60_000)?,
            header_read_timeout: millis("HEADER_READ_TIMEOUT_MS", 5000)?,
            header_limit: number(&lookup, "HEADER_LIMIT_BYTES", 16_384)?,
            max_connections: number(&lookup, "MAX_CONNECTIONS", 1024)?,
        };
        check_ranges(&config)?;
        if config.max_pairs == 0
            || config.db_pool_size == 0
            || config.relay_batch_size <= 0
            || config.max_connections == 0
        {
            bail!(
                "MAX_PAIRS, DB_POOL_SIZE, RELAY_BATCH_SIZE and MAX_CONNECTIONS must be at least 1"
            );
        }
        Ok(config)
    }

    /// The `JWT_SECRET`, or an error saying how to set it.
    pub fn require_jwt_secret(&self) -> anyhow::Result<&str> {
        self.jwt_secret.as_deref().context(
            "JWT_SECRET is not set: export JWT_SECRET=<the HS256 key shared with the gateway>",
        )
    }

    /// The one source of token keys of `serve`.
    ///
    /// Errors, naming the variables: none of `JWT_SECRET`, `JWT_PUBLIC_KEY_FILE`
    /// and `JWT_JWKS_FILE` is set, or more than one is (one algorithm family
    /// per deployment).
    pub fn token_key_source(&self) -> anyhow::Result<TokenKeySource> {
        let mut sources = Vec::new();
        if let Some(secret) = &self.jwt_secret {
            sources.push(("JWT_SECRET", TokenKeySource::Secret(secret.clone())));
        }
        if let Some(path) = &self.jwt_public_key_file {
            sources.push((
                "JWT_PUBLIC_KEY_FILE",
                TokenKeySource::PublicKeyFile(path.clone()),
            ));
        }
        if let Some(path) = &self.jwt_jwks_file {
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

    /// The quorum queue of framework type `framework_type`: `<exchange>.<TYPE>` (contract, section 2).
    pub fn queue_name(&self, framework_type: &str) -> String {
        format!("{}.{}", self.exchange, framework_type)
    }

    /// The dead-letter exchange and queue: `<exchange>.dead-letter`.
    pub fn dead_letter_name(&self) -> String {
        format!("{}.dead-letter", self.exchange)
    }
}

/// Upper bounds that keep every setting usable: names RabbitMQ accepts
/// (short strings of at most 255 bytes for `<exchange>.<TYPE>`), clock and
/// retention arithmetic that cannot overflow, timeouts of at most a day.
fn check_ranges(config: &Config) -> anyhow::Result<()> {
    const DAY: Duration = Duration::from_secs(86_400);
    let exchange = &config.exchange;
    if exchange.len() > 200
        || !exchange
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        bail!("AMQP_EXCHANGE must be at most 200 letters, digits, '-', '_', '.' or ':', got {exchange:?}");
    }
    if let Some(long) = config.framework_types.iter().find(|t| t.len() > 50) {
        bail!("FRAMEWORK_TYPES: {long:?} is longer than 50 characters");
    }
    if config.jwt_leeway_secs > 3600 {
        bail!("JWT_LEEWAY_SECS must be at most 3600 (one hour)");
    }
    if config.idempotency_retention > DAY * 3650 {
        bail!("IDEMPOTENCY_RETENTION_SECS must be at most 315360000 (ten years)");
    }
    for (name, value) in [
        ("DB_CHECKOUT_TIMEOUT_MS", config.db_checkout_timeout),
        ("BODY_READ_TIMEOUT_MS", config.body_read_timeout),
        ("PUBLISH_TIMEOUT_MS", config.publish_timeout),
        ("RELAY_POLL_MS", config.relay_poll_interval),
        ("RELAY_LEASE_MS", config.relay_lease),
        ("PENDING_AGE_THRESHOLD_MS", config.pending_age_threshold),
        ("HEADER_READ_TIMEOUT_MS", config.header_read_timeout),
    ] {
        if value > DAY {
            bail!("{name} must be at most 86400000 (one day)");
        }
    }
    if config.db_max_lifetime.is_zero() || config.db_max_lifetime > DAY {
        bail!("DB_MAX_LIFETIME_SECS must be between 1 and 86400 (one day)");
    }
    Ok(())
}

fn number<T: FromStr>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
) -> anyhow::Result<T> {
    match lookup(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(value) => {
            value.trim().parse().ok().with_context(|| {
                format!("{name} must be a non-negative whole number, got {value:?}")
            })
        }
    }
}

/// Splits `FRAMEWORK_TYPES` on commas, trims and upper-cases each type.
///
/// A type becomes an AMQP routing key and part of a queue name, so only
/// `A-Z`, `0-9`, `_` and `-` are allowed.
fn parse_framework_types(list: &str) -> anyhow::Result<Vec<String>> {
    let mut types: Vec<String> = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let normalised = item.to_ascii_uppercase();
        if !normalised
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            bail!("FRAMEWORK_TYPES: {item:?} may only hold letters, digits, '_' and '-'");
        }
        if !types.contains(&normalised) {
            types.push(normalised);
        }
    }
    if types.is_empty() {
        bail!("FRAMEWORK_TYPES must name at least one framework type");
    }
    Ok(types)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract() {
        let config = Config::from_lookup(|_| None).unwrap();
        assert_eq!(config.exchange, "scenario-runs");
        assert_eq!(config.max_pairs, 1000);
        assert_eq!(config.bind_addr, "127.0.0.1:8080");
        assert_eq!(config.framework_types.len(), 7);
        assert_eq!(config.queue_name("APPIUM"), "scenario-runs.APPIUM");
        assert!(config.jwt_secret.is_none());
        assert_eq!(config.header_limit, 16_384);
        assert_eq!(config.header_read_timeout, Duration::from_secs(5));
        assert_eq!(config.db_max_lifetime, Duration::from_secs(1800));
    }

    #[test]
    fn exactly_one_token_key_source_is_accepted() {
        let with = |vars: &'static [(&'static str, &'static str)]| {
            Config::from_lookup(|n| {
                vars.iter()
                    .find(|(name, _)| *name == n)
                    .map(|(_, v)| v.to_string())
            })
            .unwrap()
            .token_key_source()
        };
        assert_eq!(
            with(&[("JWT_SECRET", "s")]).unwrap(),
            TokenKeySource::Secret("s".into())
        );
        assert_eq!(
            with(&[("JWT_JWKS_FILE", "/k.json")]).unwrap(),
            TokenKeySource::JwksFile("/k.json".into())
        );
        let none = with(&[]).unwrap_err().to_string();
        assert!(none.contains("JWT_PUBLIC_KEY_FILE"), "{none}");
        let both = with(&[("JWT_SECRET", "s"), ("JWT_PUBLIC_KEY_FILE", "/k.pem")])
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
        assert_eq!(types, vec!["APPIUM", "GAUGE"]);
        assert!(parse_framework_types("APP IUM").is_err());
        assert!(parse_framework_types(" , ").is_err());
    }

    #[test]
    fn settings_that_would_overflow_or_break_names_are_refused() {
        for (name, value) in [
            ("JWT_LEEWAY_SECS", "18446744073709551615"),
            ("JWT_LEEWAY_SECS", "3601"),
            ("IDEMPOTENCY_RETENTION_SECS", "18446744073709551615"),
            ("PUBLISH_TIMEOUT_MS", "86400001"),
            ("DB_MAX_LIFETIME_SECS", "0"),
            ("DB_MAX_LIFETIME_SECS", "86401"),
            ("AMQP_EXCHANGE", "has space"),
            (
                "FRAMEWORK_TYPES",
                "APPIUM,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            ),
        ] {
            let result = Config::from_lookup(|n| (n == name).then(|| value.to_owned()));
            let Err(err) = result else {
                panic!("{name}={value} was accepted");
            };
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
        let long = "x".repeat(201);
        assert!(Config::from_lookup(|n| (n == "AMQP_EXCHANGE").then(|| long.clone())).is_err());
    }

    #[test]
    fn a_bad_number_names_its_variable() {
        let Err(err) = Config::from_lookup(|n| (n == "MAX_PAIRS").then(|| "many".to_owned()))
        else {
            panic!("a bad MAX_PAIRS was accepted");
        };
        let err = err.to_string();
        assert!(err.contains("MAX_PAIRS"), "{err}");
    }
}
