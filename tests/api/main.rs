//! End-to-end tests of plan-queue against the machine's real PostgreSQL and
//! RabbitMQ: a private database and exchange per test.

mod broker;
mod broker_faults;
mod broker_nodes;
mod callbacks;
mod catalog;
mod cli;
mod database_changes;
mod delivery;
mod docs;
mod documents;
mod ends;
mod errors;
mod faults;
mod functions;
mod helpers;
mod idempotency;
mod messages;
mod nothing_lost;
mod operations;
mod outbox;
mod page;
mod plans;
mod proxy;
mod read_model;
mod read_tags;
mod reads;
mod rerun;
mod rerun_selection;
mod results;
mod retries;
mod run;
mod runner;
mod security;
mod test_db;
