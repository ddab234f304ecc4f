//! Configuration from environment variables.
//!
//! Variables of the contract (`../shared/CONTRACT.md`, section 4):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DATABASE_URL` | `postgres://postgres@127.0.0.1:5432/plan_queue` | PostgreSQL database |
//! | `AMQP_URL` | `amqp://guest:guest@127.0.0.1:5672/%2f` | RabbitMQ broker |
//! | `BIND_ADDR` | `127.0.0.1:8080` | HTTP listen address |
//! | `JWT_SECRET` | none, required by `serve` and `token` | HS256 key of the bearer tokens |
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
//! | `BODY_LIMIT_BYTES` | `65536` | largest accepted request body (413 above) |
//! | `BODY_READ_TIMEOUT_MS` | `10000` | time a client has to send its whole body (408 after) |
//! | `PUBLISH_TIMEOUT_MS` | `5000` | wait for the broker's publisher confirms of one relay batch |
//! | `RELAY_BATCH_SIZE` | `2000` | dispatch rows the relay claims and publishes per batch (under a backlog the next batch is claimed while one is being published) |
//! | `RELAY_POLL_MS` | `1000` | how often the relay looks for due rows when nothing wakes it |
//! | `RELAY_LEASE_MS` | `15000` | how long a relay's claim on rows lasts before another relay (or a restarted one) may take them; keep it above `PUBLISH_TIMEOUT_MS` |
//! | `DELIVERY_LIMIT` | `5` | deliveries of a message to runners before it is dead-lettered |
//! | `JWT_LEEWAY_SECS` | `60` | clock skew allowed on `exp` and `nbf` |
//! | `IDEMPOTENCY_RETENTION_SECS` | `86400` | how long an `Idempotency-Key` is remembered (at least 24 h) |
//! | `PENDING_AGE_THRESHOLD_MS` | `60000` | readiness fails while a dispatch row is pending longer than this |

use anyhow::{bail, Context};
use std::str::FromStr;
use std::time::Duration;

/// Every setting of the service; see the module documentation for variables and defaults.
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: String,
    pub amqp_url: String,
    pub bind_addr: String,
    /// `JWT_SECRET`; `None` when unset (then `serve` and `token` refuse to start).
    pub jwt_secret: Option<String>,
    pub exchange: String,
    /// Normalised (upper-case) framework types; each is a routing key.
    pub framework_types: Vec<String>,
    pub max_pairs: usize,
    pub db_pool_size: u32,
    pub db_checkout_timeout: Duration,
    pub body_limit: usize,
    pub body_read_timeout: Duration,
    pub publish_timeout: Duration,
    pub relay_batch_size: i64,
    pub relay_poll_interval: Duration,
    pub relay_lease: Duration,
    pub delivery_limit: u32,
    pub jwt_leeway_secs: u64,
    pub idempotency_retention: Duration,
    pub pending_age_threshold: Duration,
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
            exchange: text("AMQP_EXCHANGE", "scenario-runs"),
            framework_types,
            max_pairs: number(&lookup, "MAX_PAIRS", 1000)?,
            db_pool_size: number(&lookup, "DB_POOL_SIZE", 10)?,
            db_checkout_timeout: millis("DB_CHECKOUT_TIMEOUT_MS", 2000)?,
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
        };
        if config.max_pairs == 0 || config.db_pool_size == 0 || config.relay_batch_size <= 0 {
            bail!("MAX_PAIRS, DB_POOL_SIZE and RELAY_BATCH_SIZE must be at least 1");
        }
        Ok(config)
    }

    /// The `JWT_SECRET`, or an error saying how to set it.
    pub fn require_jwt_secret(&self) -> anyhow::Result<&str> {
        self.jwt_secret.as_deref().context(
            "JWT_SECRET is not set: export JWT_SECRET=<the HS256 key shared with the gateway>",
        )
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
    }

    #[test]
    fn framework_types_are_normalised_and_deduplicated() {
        let types = parse_framework_types(" appium, Gauge ,APPIUM,,").unwrap();
        assert_eq!(types, vec!["APPIUM", "GAUGE"]);
        assert!(parse_framework_types("APP IUM").is_err());
        assert!(parse_framework_types(" , ").is_err());
    }

    #[test]
    fn a_bad_number_names_its_variable() {
        let err = Config::from_lookup(|n| (n == "MAX_PAIRS").then(|| "many".to_owned()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("MAX_PAIRS"), "{err}");
    }
}
