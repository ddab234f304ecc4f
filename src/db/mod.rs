//! PostgreSQL: the connection pools, the embedded migrations, and the one way
//! the async code runs diesel — on the blocking pool, never on the executor.
//!
//! [`Db::run`] waits for one of `DB_POOL_SIZE` permits, then runs its closure
//! in `spawn_blocking`, checking the connection out inside the closure; so at
//! most pool-size closures run, no connection is held across an `.await`, and
//! a checkout that times out is [`DbUnavailable`], which `crate::error`
//! answers as 503 code 1011 (the pattern of vaultwarden's `src/db/mod.rs`).
//! Every component runs diesel this way: the request path on its pool, the
//! relay, the outbox upkeep and the results consumer each on a [`Db`] of
//! their own small pool. A connection the database changed under
//! (killed, read-only, stale prepared statements) is discarded and the work
//! run once more on a fresh one ([`connection::with_connection`]); no
//! connection lives longer than `DB_MAX_LIFETIME_SECS`.

pub mod callbacks;
pub mod catalog;
pub mod connection;
pub mod ends;
pub mod flakiness;
pub mod functions;
pub mod idempotency;
pub mod models;
pub mod outbox;
pub mod plans;
pub(crate) mod queries;
pub mod reads;
pub mod results;
pub mod schema;
pub mod seed;

use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::Pool;
use diesel::{Connection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The migrations of `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

pub use connection::{staleness, with_connection, DbConnection, DbUnavailable, PgPool, Stale};

/// Whether the session of `conn` can write; a read-only one is discarded.
fn probe_writable(conn: &mut DbConnection) -> Result<(), NotWritable> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        writable: bool,
    }
    let row: Row = diesel::sql_query(
        "SELECT NOT (pg_is_in_recovery() \
                     OR current_setting('transaction_read_only')::boolean) AS writable",
    )
    .get_result(&mut **conn)
    .map_err(|e| NotWritable::Failed(anyhow::Error::new(e)))?;
    if !row.writable {
        conn.discard(Stale::ReadOnly);
        return Err(NotWritable::ReadOnly);
    }
    Ok(())
}

/// Why [`Db::writable`] did not answer true.
enum NotWritable {
    ReadOnly,
    Failed(anyhow::Error),
}

impl From<DbUnavailable> for NotWritable {
    fn from(e: DbUnavailable) -> Self {
        NotWritable::Failed(e.into())
    }
}

impl From<anyhow::Error> for NotWritable {
    fn from(e: anyhow::Error) -> Self {
        NotWritable::Failed(e)
    }
}

/// The request path's handle on PostgreSQL: a pool and a semaphore of the
/// same size in front of the blocking pool.
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    checkout_timeout: Duration,
}

/// How busy the request pool is, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// Connections checked out of the pool.
    pub in_use: u32,
    /// Calls of [`Db::run`] waiting for a permit (all connections busy).
    pub waiting: usize,
}

/// Decrements a waiting counter when dropped (also when the wait is cancelled).
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    fn start(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Waiting(counter.clone())
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Db {
    /// Wraps `pool`; `checkout_timeout` bounds the wait for a permit and for a connection.
    pub fn new(pool: PgPool, checkout_timeout: Duration) -> Self {
        let size = pool.max_size() as usize;
        Db {
            pool,
            permits: Arc::new(Semaphore::new(size)),
            waiting: Arc::new(AtomicUsize::new(0)),
            checkout_timeout,
        }
    }

    /// Connections in use and calls waiting for one, right now.
    pub fn usage(&self) -> PoolUsage {
        let state = self.pool.state();
        PoolUsage {
            in_use: state.connections.saturating_sub(state.idle_connections),
            waiting: self.waiting.load(Ordering::Relaxed),
        }
    }

    /// Runs `work` with a pooled connection on the blocking pool; when the
    /// connection turns out stale, once more on a fresh one
    /// ([`with_connection`]: `work` must be safe to run again after a
    /// failure that committed nothing).
    ///
    /// Errors: [`DbUnavailable`] (converted into `E`) when no permit or
    /// connection comes within the checkout timeout; whatever `work` returns.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnMut(&mut PgConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbUnavailable> + From<anyhow::Error> + Send + 'static,
    {
        self.blocking(move |pool, timeout| with_connection(pool, timeout, work))
            .await
    }

    /// [`Db::run`] for `work` that recognises its own committed effect when
    /// run again ([`connection::with_connection_replayable`]): after a lost
    /// connection it runs once more even if the first try may have
    /// committed.
    ///
    /// Errors: as [`Db::run`].
    pub async fn run_replayable<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnMut(&mut PgConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbUnavailable> + From<anyhow::Error> + Send + 'static,
    {
        self.blocking(move |pool, timeout| {
            connection::with_connection_replayable(pool, timeout, work)
        })
        .await
    }

    /// Whether the database accepts writes: the session is not read-only
    /// (`default_transaction_read_only`) and the server is not a standby
    /// (`pg_is_in_recovery()`). A read-only connection is discarded, with
    /// every connection opened before it, and the question asked once more
    /// on a fresh one, so that the answer turns as soon as the database is
    /// writable again.
    ///
    /// Errors: [`DbUnavailable`] (no permit or connection in time), or the
    /// probe failed.
    pub async fn writable(&self) -> anyhow::Result<bool> {
        let probe = self.blocking(|pool, timeout| {
            match connection::with_pooled(pool, timeout, probe_writable) {
                // that connection and its elders are retired: ask a fresh one
                Err(NotWritable::ReadOnly) => {
                    connection::with_pooled(pool, timeout, probe_writable)
                }
                answer => answer,
            }
        });
        match probe.await {
            Ok(()) => Ok(true),
            Err(NotWritable::ReadOnly) => Ok(false),
            Err(NotWritable::Failed(e)) => Err(e),
        }
    }

    /// Runs `work` with the pool on the blocking pool, once one of the
    /// pool-size permits came within the checkout timeout.
    async fn blocking<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&PgPool, Duration) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbUnavailable> + From<anyhow::Error> + Send + 'static,
    {
        let waiting = Waiting::start(&self.waiting);
        let permit =
            tokio::time::timeout(self.checkout_timeout, self.permits.clone().acquire_owned())
                .await
                .map_err(|_| DbUnavailable("all connections busy".to_owned()))?
                .map_err(|_| DbUnavailable("pool closed".to_owned()))?;
        drop(waiting);
        let pool = self.pool.clone();
        let timeout = self.checkout_timeout;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&pool, timeout)
        })
        .await
        .map_err(|e| E::from(anyhow::Error::new(e).context("database task panicked")))?
    }
}

/// Builds a pool of at most `size` connections without connecting yet;
/// connections are opened on first use and re-opened after the database
/// comes back; each is closed once idle after `max_lifetime` (r2d2 looks
/// every 30 s), so none outlives a change the service cannot see.
///
/// A checked-out connection is not pinged first (`test_on_check_out` off: a
/// `SELECT 1` round trip per checkout): a connection that died in the pool
/// fails its first statement as a connection loss, and [`with_connection`]
/// discards it and runs the work again on a fresh one.
pub fn build_pool(
    database_url: &str,
    size: u32,
    checkout_timeout: Duration,
    max_lifetime: Duration,
) -> PgPool {
    pool_builder(size, checkout_timeout, max_lifetime)
        .build_unchecked(connection::Manager::new(database_url))
}

/// Like [`build_pool`], for the relay and the callback deliverer: its
/// connections commit without waiting for the WAL flush
/// (`synchronous_commit = off`). Safe for what they write: a claim or a
/// "published" (or "delivered") mark lost in a PostgreSQL crash only makes a
/// row be published (or a callback sent, with the same
/// `X-PlanQueue-Delivery`) again, which at-least-once delivery allows; the
/// rerun's own transaction stays synchronous (a 200 is committed). A
/// transaction of such a pool that bumps a plan's `results_version` (the
/// relay's mark, the upkeep's copy of `published_at`) sets
/// `synchronous_commit = on` for itself: a version a reader saw must survive
/// a crash (contract, section 22).
pub fn build_relay_pool(
    database_url: &str,
    size: u32,
    checkout_timeout: Duration,
    max_lifetime: Duration,
) -> PgPool {
    pool_builder(size, checkout_timeout, max_lifetime)
        .connection_customizer(Box::new(AsynchronousCommit))
        .build_unchecked(connection::Manager::new(database_url))
}

fn pool_builder(
    size: u32,
    checkout_timeout: Duration,
    max_lifetime: Duration,
) -> diesel::r2d2::Builder<connection::Manager> {
    Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .test_on_check_out(false)
        .connection_timeout(checkout_timeout)
        // r2d2 refuses a zero lifetime; the configuration refuses it first
        .max_lifetime(Some(max_lifetime.max(Duration::from_secs(1))))
}

/// Sets `synchronous_commit = off` on each new connection of a pool.
#[derive(Debug)]
struct AsynchronousCommit;

impl diesel::r2d2::CustomizeConnection<DbConnection, diesel::r2d2::Error> for AsynchronousCommit {
    fn on_acquire(&self, conn: &mut DbConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute("SET synchronous_commit = off")
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Creates the database of `database_url` if it does not exist, then applies
/// pending migrations, then the server functions whose text changed
/// ([`functions::apply`]). Errors say which server could not be reached.
pub fn migrate(database_url: &str) -> anyhow::Result<()> {
    create_database_if_missing(database_url)?;
    let mut conn = connect(database_url)?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("applying migrations failed")?;
    for migration in applied {
        log::info!("applied migration {migration}");
    }
    for function in functions::apply(&mut conn).context("applying server functions failed")? {
        log::info!("applied server function {function}");
    }
    Ok(())
}

/// Ok when the database answers `SELECT 1` on `conn` (a probe: is a failure
/// about the data, or is the database gone?).
pub fn ping(conn: &mut PgConnection) -> diesel::QueryResult<()> {
    conn.batch_execute("SELECT 1")
}

/// Opens one connection, with an error that says what to fix.
pub fn connect(database_url: &str) -> anyhow::Result<PgConnection> {
    PgConnection::establish(database_url).with_context(|| {
        format!(
            "cannot connect to PostgreSQL at {}: start it or set DATABASE_URL",
            redact(database_url)
        )
    })
}

fn create_database_if_missing(database_url: &str) -> anyhow::Result<()> {
    let mut url = url::Url::parse(database_url).context("DATABASE_URL is not a URL")?;
    let name = url.path().trim_start_matches('/').to_owned();
    if name.is_empty() {
        anyhow::bail!("DATABASE_URL names no database");
    }
    url.set_path("/postgres");
    let mut admin = connect(url.as_str())?;
    #[derive(diesel::QueryableByName)]
    struct Exists {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        exists: bool,
    }
    let found: Exists =
        diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS exists")
            .bind::<diesel::sql_types::Text, _>(&name)
            .get_result::<Exists>(&mut admin)
            .context("cannot look up databases")?;
    if !found.exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match admin.batch_execute(&format!("CREATE DATABASE {quoted}")) {
            Ok(()) => log::info!("created database {name}"),
            // another process created it in the meantime
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => {}
            Err(e) => return Err(e).context(format!("cannot create database {name}")),
        }
    }
    Ok(())
}

/// `database_url` without its password, for messages.
pub fn redact(database_url: &str) -> String {
    match url::Url::parse(database_url) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("***"));
            url.to_string()
        }
        _ => database_url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_pools_bound_the_life_of_their_connections() {
        let url = "postgres://postgres@127.0.0.1:1/nowhere";
        let (timeout, lifetime) = (Duration::from_secs(1), Duration::from_secs(90));
        assert_eq!(
            build_pool(url, 2, timeout, lifetime).max_lifetime(),
            Some(lifetime)
        );
        assert_eq!(
            build_relay_pool(url, 2, timeout, lifetime).max_lifetime(),
            Some(lifetime)
        );
    }
}
