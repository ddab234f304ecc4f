//! Issue 12's node-loss tests, on the private three-node RabbitMQ cluster
//! of `tests/cluster/start.sh` and real `plan-queue serve` processes.
//!
//! They need the cluster and a seeded database, so they are ignored by a
//! plain `cargo test` (which still compiles them). Run them all with
//!
//! ```sh
//! tests/cluster/node-loss.sh
//! ```
//!
//! which starts the cluster, seeds a database, runs
//! `cargo test --test cluster -- --ignored --nocapture --test-threads=1`,
//! and always stops the cluster and drops the databases.

mod node_loss;
mod support;
