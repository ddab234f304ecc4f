//! End-to-end tests of plan-queue against the machine's real PostgreSQL and
//! RabbitMQ: a private database and exchange per test.

mod broker;
mod cli;
mod delivery;
mod errors;
mod faults;
mod helpers;
mod idempotency;
mod nothing_lost;
mod proxy;
mod rerun;
