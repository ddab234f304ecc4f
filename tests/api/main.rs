//! End-to-end tests of plan-queue against the machine's real PostgreSQL and
//! RabbitMQ: a private database and exchange per test.

mod delivery;
mod errors;
mod faults;
mod helpers;
mod idempotency;
mod proxy;
mod rerun;
