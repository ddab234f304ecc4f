//! PostgreSQL: the connection pools, the embedded migrations, and the one way
//! the async code runs diesel — on the blocking pool, never on the executor.
//!
//! [`Db::run`] waits for one of `DB_POOL_SIZE` permits, then runs its closure
//! in `spawn_blocking`, checking the connection out inside the closure; so at
//! most pool-size closures run, no connection is held across an `.await`, and
//! a checkout that times out becomes 503 code 1011 (the pattern of
//! vaultwarden's `src/db/mod.rs`).

pub mod idempotency;
pub mod models;
pub mod outbox;
pub(crate) mod queries;
pub mod reads;
pub mod schema;

use crate::error::ApiError;
use anyhow::Context;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, Pool};
use diesel::{Connection, RunQueryDsl};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The migrations of `migrations/`, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// An r2d2 pool of diesel PostgreSQL connections.
pub type PgPool = Pool<ConnectionManager<PgConnection>>;

/// A failure of the database itself (not of a query's input): unreachable,
/// pool exhausted, connection lost. Answered as 503 code 1011.
#[derive(Debug, thiserror::Error)]
#[error("database unavailable: {0}")]
pub struct DbUnavailable(pub String);

impl From<DbUnavailable> for ApiError {
    fn from(e: DbUnavailable) -> Self {
        log::warn!("{e}");
        ApiError::Unavailable("database")
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        if is_connection_loss(&e) {
            DbUnavailable(e.to_string()).into()
        } else {
            ApiError::Unexpected(anyhow::Error::new(e).context("database query failed"))
        }
    }
}

/// True when a diesel error means the connection, not the statement, failed.
pub fn is_connection_loss(e: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    matches!(
        e,
        Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | Error::BrokenTransactionManager
    )
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

    /// Runs `work` with a pooled connection on the blocking pool.
    ///
    /// Errors: [`DbUnavailable`] (converted into `E`) when no permit or
    /// connection comes within the checkout timeout; whatever `work` returns.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
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
            let mut conn = pool
                .get_timeout(timeout)
                .map_err(|e| DbUnavailable(e.to_string()))?;
            work(&mut conn)
        })
        .await
        .map_err(|e| E::from(anyhow::Error::new(e).context("database task panicked")))?
    }
}

/// Builds a pool of at most `size` connections without connecting yet;
/// connections are opened on first use and re-opened after the database
/// comes back.
///
/// A checked-out connection is not pinged first (`test_on_check_out` off: a
/// `SELECT 1` round trip per checkout): a connection that died in the pool
/// fails its first statement as a connection loss, which answers 503 code
/// 1011, and r2d2 drops it on return because diesel marks it broken, so the
/// next checkout opens a fresh one.
pub fn build_pool(database_url: &str, size: u32, checkout_timeout: Duration) -> PgPool {
    pool_builder(size, checkout_timeout).build_unchecked(ConnectionManager::new(database_url))
}

/// Like [`build_pool`], for the relay: its connections commit without
/// waiting for the WAL flush (`synchronous_commit = off`). Safe for what the
/// relay writes: a claim or a "published" mark lost in a PostgreSQL crash
/// only makes a row be published again, which at-least-once delivery allows;
/// the rerun's own transaction stays synchronous (a 200 is committed).
pub fn build_relay_pool(database_url: &str, size: u32, checkout_timeout: Duration) -> PgPool {
    pool_builder(size, checkout_timeout)
        .connection_customizer(Box::new(AsynchronousCommit))
        .build_unchecked(ConnectionManager::new(database_url))
}

fn pool_builder(
    size: u32,
    checkout_timeout: Duration,
) -> diesel::r2d2::Builder<ConnectionManager<PgConnection>> {
    Pool::builder()
        .max_size(size)
        .min_idle(Some(0))
        .test_on_check_out(false)
        .connection_timeout(checkout_timeout)
}

/// Sets `synchronous_commit = off` on each new connection of a pool.
#[derive(Debug)]
struct AsynchronousCommit;

impl diesel::r2d2::CustomizeConnection<PgConnection, diesel::r2d2::Error> for AsynchronousCommit {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute("SET synchronous_commit = off")
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Creates the database of `database_url` if it does not exist, then applies
/// pending migrations. Errors say which server could not be reached.
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
    Ok(())
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
