//! Pooled connections that notice when the database changed under them, and
//! [`with_connection`], the one way to use them: discard a stale connection
//! and run the work again, once, on a fresh one.
//!
//! A connection is stale when a statement on it failed because of what the
//! connection is, not because of what the statement asked ([`Stale`]): it
//! was killed (by an operator, a pooler, a server restart), its session is
//! read-only (a failover onto a standby, `default_transaction_read_only`),
//! or one of its cached prepared statements now returns another type (a
//! migration of the next version during a rolling deploy: PostgreSQL answers
//! `cached plan must not change result type` on that connection until it
//! closes). Each connection carries a diesel [`Instrumentation`] that sees
//! every statement's outcome, whatever the caller does with the error.
//!
//! What one connection reveals is usually true of every connection opened
//! before it (all of them cached the statement, all of them sit on the
//! read-only node), so a stale connection retires its whole pool
//! generation: every connection opened before the change is closed when it
//! is next checked out or returned, and [`with_connection`] retries on one
//! opened after it.
//!
//! The retry runs the work a second time only if nothing of the first run
//! can have committed: every statement that ran either failed or ran in a
//! transaction that did not commit (a connection lost during `COMMIT` leaves
//! the outcome unknown, so that failure is returned, never retried).

use diesel::connection::{Instrumentation, InstrumentationEvent};
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, ManageConnection, Pool, PooledConnection, R2D2Connection};
use diesel::result::{DatabaseErrorKind, Error};
use diesel::Connection;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A failure of the database itself (not of a query's input): unreachable,
/// pool exhausted, connection lost, read-only. `crate::error` answers it as
/// 503 code 1011.
#[derive(Debug, thiserror::Error)]
#[error("database unavailable: {0}")]
pub struct DbUnavailable(pub String);

/// An r2d2 pool of diesel PostgreSQL connections that retire when stale.
pub type PgPool = Pool<Manager>;

/// PostgreSQL's message for SQLSTATE 0A000 on a prepared statement whose
/// result columns changed type since it was prepared
/// (`src/backend/utils/cache/plancache.c`). diesel exposes no SQLSTATE but
/// a few, so the (untranslated) messages identify this one and
/// [`TERMINATING`]; with a translated `lc_messages` such a connection is
/// replaced only after `DB_MAX_LIFETIME_SECS`.
const CACHED_PLAN_CHANGED: &str = "cached plan must not change result type";

/// How PostgreSQL's messages of class 57P (the server ends the session:
/// `pg_terminate_backend`, shutdown, idle timeouts) begin. When libpq has
/// not yet seen the socket close, diesel reports them as `Unknown`.
const TERMINATING: &str = "terminating connection";

/// Why a connection can no longer be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// The connection is gone: killed by an operator or a pooler, or the
    /// server restarted (diesel's `ClosedConnection`, a broken transaction
    /// manager, or a command that could not be sent).
    Lost,
    /// The session cannot write (SQLSTATE 25006 `read_only_sql_transaction`):
    /// a standby after a failover, or `default_transaction_read_only` set
    /// when the session started.
    ReadOnly,
    /// A cached prepared statement now returns another type (SQLSTATE 0A000,
    /// `cached plan must not change result type`): the schema changed.
    CachedPlan,
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stale::Lost => "connection lost",
            Stale::ReadOnly => "read-only session",
            Stale::CachedPlan => "a cached statement's result type changed",
        })
    }
}

/// What `error` says about the connection it happened on: `Some` when the
/// connection, not the statement, is at fault (see [`Stale`]).
pub fn staleness(error: &Error) -> Option<Stale> {
    match error {
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        )
        | Error::BrokenTransactionManager => Some(Stale::Lost),
        Error::DatabaseError(DatabaseErrorKind::ReadOnlyTransaction, _) => Some(Stale::ReadOnly),
        Error::DatabaseError(_, info) if info.message() == CACHED_PLAN_CHANGED => {
            Some(Stale::CachedPlan)
        }
        Error::DatabaseError(_, info) if info.message().starts_with(TERMINATING) => {
            Some(Stale::Lost)
        }
        _ => None,
    }
}

/// What happened on a connection since it was checked out.
#[derive(Debug, Default)]
struct Checkout {
    /// The first stale-connection failure and, for a lost connection, the
    /// first line of its message (the others name the statement: kept out
    /// of logs, like all SQL).
    stale: Option<(Stale, String)>,
    /// A statement may have committed: running the work again could apply it twice.
    maybe_committed: bool,
    /// Depth of the open transaction, 0 outside one.
    depth: u32,
    /// The next statement ends the transaction at this depth: `true` commits.
    ending: Option<(u32, bool)>,
}

impl Checkout {
    /// Records one statement's outcome.
    fn finished(&mut self, error: Option<&Error>) {
        let stale = error.and_then(staleness);
        // a statement refused with an error did nothing; one whose connection
        // vanished may have committed, unless the server said it ended the
        // session (a statement in flight then rolls back; one that had
        // committed got its answer before the server took the next command)
        let may_have_run = match error {
            None => true,
            Some(Error::DatabaseError(_, info)) if info.message().starts_with(TERMINATING) => false,
            Some(_) => stale == Some(Stale::Lost),
        };
        match self.ending.take() {
            Some((depth, commit)) => {
                if commit && depth == 1 && may_have_run {
                    self.maybe_committed = true;
                }
                self.depth = depth.saturating_sub(1);
            }
            None if self.depth == 0 && may_have_run => self.maybe_committed = true,
            None => {}
        }
        if let (None, Some(why), Some(error)) = (&self.stale, stale, error) {
            let detail = match why {
                Stale::Lost => error
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                Stale::ReadOnly | Stale::CachedPlan => String::new(),
            };
            self.stale = Some((why, detail));
        }
    }
}

/// State shared by a connection and its instrumentation.
#[derive(Debug)]
struct Watch {
    /// The pool generation the connection was opened in.
    generation: u64,
    /// The pool's current generation; connections of older ones are closed.
    pool_generation: Arc<AtomicU64>,
    checkout: Mutex<Checkout>,
}

impl Watch {
    fn checkout(&self) -> std::sync::MutexGuard<'_, Checkout> {
        self.checkout.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Retires this connection's generation (and so this connection).
    fn retire(&self, why: Stale) {
        let next = self.generation + 1;
        if self.pool_generation.fetch_max(next, Ordering::Relaxed) < next {
            log::warn!(
                "database changed under the service ({why}): closing the pool's connections opened before"
            );
        }
    }

    fn outdated(&self) -> bool {
        self.generation < self.pool_generation.load(Ordering::Relaxed)
    }
}

/// The diesel instrumentation of a pooled connection: watches every
/// statement for stale-connection failures and commits.
struct Watcher(Arc<Watch>);

impl Instrumentation for Watcher {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        let stale = {
            let mut checkout = self.0.checkout();
            match event {
                InstrumentationEvent::BeginTransaction { depth, .. } => {
                    checkout.depth = depth.get();
                    return;
                }
                InstrumentationEvent::CommitTransaction { depth, .. } => {
                    checkout.ending = Some((depth.get(), true));
                    return;
                }
                InstrumentationEvent::RollbackTransaction { depth, .. } => {
                    checkout.ending = Some((depth.get(), false));
                    return;
                }
                InstrumentationEvent::FinishQuery { error, .. } => {
                    checkout.finished(error);
                    error.and_then(staleness)
                }
                _ => return,
            }
        };
        if let Some(why) = stale {
            self.0.retire(why);
        }
    }
}

/// A pooled PostgreSQL connection; dereferences to diesel's [`PgConnection`].
pub struct DbConnection {
    conn: PgConnection,
    watch: Arc<Watch>,
}

impl Deref for DbConnection {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for DbConnection {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl DbConnection {
    /// Retires this connection (and every connection of the pool opened
    /// before it) because of `why`, found out other than by a failed
    /// statement (a readiness probe that saw a read-only session).
    pub fn discard(&self, why: Stale) {
        self.watch.retire(why);
    }
}

/// The r2d2 manager of [`PgPool`]: diesel's, plus a watch on each connection
/// and the pool generation that retires stale ones.
#[derive(Debug)]
pub struct Manager {
    inner: ConnectionManager<PgConnection>,
    generation: Arc<AtomicU64>,
}

impl Manager {
    /// A manager of connections to `database_url`; connects on demand.
    pub fn new(database_url: &str) -> Self {
        Manager {
            inner: ConnectionManager::new(database_url),
            generation: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<DbConnection, Self::Error> {
        let generation = self.generation.load(Ordering::Relaxed);
        let mut conn = self.inner.connect()?;
        let watch = Arc::new(Watch {
            generation,
            pool_generation: self.generation.clone(),
            checkout: Mutex::default(),
        });
        conn.set_instrumentation(Watcher(watch.clone()));
        Ok(DbConnection { conn, watch })
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), Self::Error> {
        conn.conn.ping().map_err(diesel::r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        conn.watch.outdated() || self.inner.has_broken(&mut conn.conn)
    }
}

/// Checks out a connection of the current generation within `timeout`;
/// older ones met on the way are closed.
fn checkout(pool: &PgPool, timeout: Duration) -> Result<PooledConnection<Manager>, DbUnavailable> {
    let deadline = Instant::now() + timeout;
    // every idle connection may be outdated, and one more opened meanwhile
    for _ in 0..=pool.max_size() {
        let wait = deadline.saturating_duration_since(Instant::now());
        let conn = pool
            .get_timeout(wait)
            .map_err(|e| DbUnavailable(e.to_string()))?;
        if !conn.watch.outdated() {
            *conn.watch.checkout() = Checkout::default();
            return Ok(conn);
        }
        // returned to the pool, which closes it (`has_broken`)
        drop(conn);
    }
    Err(DbUnavailable(
        "every connection was outdated by a database change".to_owned(),
    ))
}

/// A stale failure for a log line: `read-only session`, `connection lost: <first line>`.
struct Cause<'a>(&'a (Stale, String));

impl std::fmt::Display for Cause<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            (why, detail) if detail.is_empty() => write!(f, "{why}"),
            (why, detail) => write!(f, "{why}: {detail}"),
        }
    }
}

/// Runs `work` on a connection of `pool`, on the calling thread (diesel
/// blocks: call it on a blocking thread, as [`super::Db::run`] does).
///
/// When `work` fails and the connection turned out stale ([`Stale`]), the
/// connection is discarded (with every other one opened before the change)
/// and `work` runs once more on a fresh connection, unless something of the
/// first run may have committed. Its second failure is returned as it is.
///
/// Errors: [`DbUnavailable`] (converted into `E`) when no connection comes
/// within `timeout`; whatever `work` returns.
pub fn with_connection<T, E>(
    pool: &PgPool,
    timeout: Duration,
    mut work: impl FnMut(&mut PgConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<DbUnavailable>,
{
    with_pooled(pool, timeout, |conn| work(conn))
}

/// [`with_connection`] for `work` that recognises its own committed effect
/// when run again (the rerun's and the run's call, which find the first
/// message id they were given, see `queue_rerun`): after a lost connection it
/// runs once more on a fresh one even when the first statement may have
/// committed. For the statement sent outside a transaction, where a lost
/// connection cannot tell "never ran" from "committed".
///
/// Errors: as [`with_connection`].
pub fn with_connection_replayable<T, E>(
    pool: &PgPool,
    timeout: Duration,
    mut work: impl FnMut(&mut PgConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<DbUnavailable>,
{
    run_pooled(pool, timeout, true, |conn| work(conn))
}

/// [`with_connection`], handing `work` the pooled connection itself (so that
/// it can [`DbConnection::discard`] it).
pub(super) fn with_pooled<T, E>(
    pool: &PgPool,
    timeout: Duration,
    work: impl FnMut(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<DbUnavailable>,
{
    run_pooled(pool, timeout, false, work)
}

/// Runs `work`, and once more on a fresh connection when its connection
/// turned out stale, unless something may have committed and `replayable`
/// is false.
fn run_pooled<T, E>(
    pool: &PgPool,
    timeout: Duration,
    replayable: bool,
    mut work: impl FnMut(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<DbUnavailable>,
{
    let mut conn = checkout(pool, timeout)?;
    let error = match work(&mut conn) {
        Ok(value) => return Ok(value),
        Err(error) => error,
    };
    let (stale, maybe_committed) = {
        let mut checkout = conn.watch.checkout();
        (checkout.stale.take(), checkout.maybe_committed)
    };
    let Some(stale) = stale else {
        return Err(error);
    };
    let why = Cause(&stale);
    drop(conn);
    if maybe_committed && !replayable {
        log::warn!("database connection discarded ({why}); not run again: it may have committed");
        return Err(error);
    }
    log::warn!("database connection discarded ({why}); running the work again on a fresh one");
    let mut fresh = checkout(pool, timeout)?;
    let result = work(&mut fresh);
    if let Some(again) = fresh.watch.checkout().stale.take() {
        let why = Cause(&again);
        log::warn!("database connection discarded ({why}) on the second try too");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn database_error(kind: DatabaseErrorKind, message: &str) -> Error {
        Error::DatabaseError(kind, Box::new(message.to_owned()))
    }

    #[test]
    fn failures_of_the_connection_are_told_from_failures_of_the_statement() {
        use DatabaseErrorKind::*;
        let cases = [
            (
                database_error(ClosedConnection, "server closed the connection"),
                Some(Stale::Lost),
            ),
            (
                database_error(
                    Unknown,
                    "terminating connection due to administrator command",
                ),
                Some(Stale::Lost),
            ),
            (Error::BrokenTransactionManager, Some(Stale::Lost)),
            (
                database_error(
                    ReadOnlyTransaction,
                    "cannot execute INSERT in a read-only transaction",
                ),
                Some(Stale::ReadOnly),
            ),
            (
                database_error(Unknown, "cached plan must not change result type"),
                Some(Stale::CachedPlan),
            ),
            (database_error(UniqueViolation, "duplicate key value"), None),
            (database_error(Unknown, "division by zero"), None),
            (Error::NotFound, None),
        ];
        for (error, expected) in cases {
            assert_eq!(staleness(&error), expected, "{error}");
        }
    }

    /// `BEGIN`, statements, then the end of the transaction, as diesel reports them.
    fn transaction(checkout: &mut Checkout, failing: Error, then_commit: bool) {
        checkout.depth = 1;
        checkout.finished(None); // BEGIN
        checkout.finished(None);
        checkout.finished(Some(&failing));
        checkout.ending = Some((1, then_commit));
        checkout.finished(None);
    }

    #[test]
    fn work_runs_again_only_when_nothing_of_it_can_have_committed() {
        let read_only = || {
            database_error(
                DatabaseErrorKind::ReadOnlyTransaction,
                "cannot execute INSERT in a read-only transaction",
            )
        };
        // a transaction that rolled back after the refused statement
        let mut rolled_back = Checkout::default();
        transaction(&mut rolled_back, read_only(), false);
        assert_eq!(
            rolled_back.stale.as_ref().map(|s| s.0),
            Some(Stale::ReadOnly)
        );
        assert!(!rolled_back.maybe_committed);

        // a killed connection's first statement, outside a transaction
        let mut killed = Checkout::default();
        killed.finished(Some(&database_error(
            DatabaseErrorKind::ClosedConnection,
            "terminating connection due to administrator command",
        )));
        assert!(!killed.maybe_committed);

        // a statement that committed on its own before the failure
        let mut autocommitted = Checkout::default();
        autocommitted.finished(None);
        autocommitted.finished(Some(&read_only()));
        assert!(autocommitted.maybe_committed);

        // a connection lost during COMMIT: the outcome is unknown
        let mut lost_commit = Checkout {
            depth: 1,
            ..Checkout::default()
        };
        lost_commit.finished(None);
        lost_commit.ending = Some((1, true));
        lost_commit.finished(Some(&database_error(
            DatabaseErrorKind::ClosedConnection,
            "server closed the connection unexpectedly",
        )));
        assert!(lost_commit.maybe_committed);
        assert_eq!(lost_commit.depth, 0);

        // releasing a savepoint commits nothing
        let mut savepoint = Checkout {
            depth: 2,
            ending: Some((2, true)),
            ..Checkout::default()
        };
        savepoint.finished(None);
        assert!(!savepoint.maybe_committed);
        assert_eq!(savepoint.depth, 1);
    }
}
