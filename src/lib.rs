//! plan-queue: reruns scenario–environment pairs of a test plan.
//!
//! `POST /queue/rerun` checks a request against PostgreSQL, records the rerun
//! and one dispatch (outbox) row per pair in one transaction, and the relay
//! publishes one persistent, confirmed AMQP message per pair to RabbitMQ with
//! the framework type as routing key. The external contract is
//! `docs/CONTRACT.md`.

pub mod amqp;
pub mod app;
pub mod auth;
pub mod callbacks;
pub mod config;
pub mod db;
pub mod deadletter;
pub mod deadlines;
pub mod domain;
pub mod error;
pub mod idempotency;
pub mod metrics;
pub mod middleware;
pub mod openapi;
pub mod page;
pub mod relay;
pub mod results;
pub mod routes;
pub mod rules;
pub mod runner;
/// The fixture loader lives with the other table owners in `db`.
pub use db::seed;
pub mod service;
pub mod smoke;
pub mod startup;
pub mod watch;
