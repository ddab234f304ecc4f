//! End-to-end tests of plan-queue against the machine's real PostgreSQL and
//! RabbitMQ: a private database and exchange per test.

mod delivery;
mod errors;
mod helpers;
mod idempotency;
mod rerun;
mod security;
