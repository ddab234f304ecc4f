//! The server functions (PL/pgSQL and SQL) as source: one file each under
//! `src/db/functions/`, compiled into the binary, applied by [`apply`] after
//! the versioned migrations whenever a file's text changed (the way Flyway's
//! repeatable migrations work). Versioned migrations keep only schema
//! changes; a database that applied an earlier text of a function gets the
//! current one at the next `plan-queue migrate` or `serve`.
//!
//! Each file holds one `CREATE OR REPLACE FUNCTION`. A change of a
//! function's arguments or result columns needs a `DROP FUNCTION IF EXISTS`
//! of the old signature at the top of its file (PostgreSQL does not replace
//! a function's result type).

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::sql_types::{Bool, Text};
use diesel::{Connection, QueryResult, QueryableByName, RunQueryDsl};

/// One server function: its name (the file's, without `.sql`) and the text
/// of its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerFunction<'a> {
    pub name: &'a str,
    pub source: &'a str,
}

/// Includes `src/db/functions/<name>.sql` as a [`ServerFunction`].
macro_rules! server_function {
    ($name:literal) => {
        ServerFunction {
            name: $name,
            source: include_str!(concat!("functions/", $name, ".sql")),
        }
    };
}

/// Every server function, in the order they are created: a function before
/// those that call it (an SQL-language body is checked when it is created).
pub const FUNCTIONS: &[ServerFunction<'static>] = &[
    server_function!("execution_pairs_set_source"),
    server_function!("source_run"),
    server_function!("plan_access"),
    server_function!("plan_active_scenarios"),
    server_function!("plan_active_environments"),
    server_function!("written_by_call"),
    server_function!("queue_rerun"),
    server_function!("queue_run"),
    server_function!("queue_retry"),
];

/// The advisory lock [`apply_functions`] holds for its transaction, so that
/// two instances starting at once apply one after the other.
const APPLY_LOCK: &str = "plan_queue_server_functions";

/// Applies [`FUNCTIONS`] ([`apply_functions`]); returns the names of those
/// created or replaced.
///
/// Errors: a file PostgreSQL refuses, or a lost connection; nothing is
/// changed then.
pub fn apply(conn: &mut PgConnection) -> QueryResult<Vec<&'static str>> {
    apply_functions(conn, FUNCTIONS)
}

/// Creates or replaces each of `functions` whose text's SHA-256 differs
/// from the checksum the table `server_functions` (migration 10) holds for
/// its name, and records the new checksum; a function whose text is
/// unchanged is left alone. One transaction under an advisory lock: every
/// function and its checksum, or nothing. Returns the names applied, in
/// order.
pub fn apply_functions<'a>(
    conn: &mut PgConnection,
    functions: &[ServerFunction<'a>],
) -> QueryResult<Vec<&'a str>> {
    #[derive(QueryableByName)]
    struct Changed {
        #[diesel(sql_type = Bool)]
        changed: bool,
    }
    conn.transaction(|conn| {
        diesel::sql_query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind::<Text, _>(APPLY_LOCK)
            .execute(conn)?;
        let mut applied = Vec::new();
        for function in functions {
            let Changed { changed } = diesel::sql_query(
                "SELECT NOT EXISTS (SELECT 1 FROM server_functions \
                                     WHERE name = $1 \
                                       AND checksum = encode(sha256(convert_to($2, 'UTF8')), 'hex')) \
                        AS changed",
            )
            .bind::<Text, _>(function.name)
            .bind::<Text, _>(function.source)
            .get_result(conn)?;
            if !changed {
                continue;
            }
            conn.batch_execute(function.source)?;
            diesel::sql_query(
                "INSERT INTO server_functions (name, checksum) \
                 VALUES ($1, encode(sha256(convert_to($2, 'UTF8')), 'hex')) \
                 ON CONFLICT (name) DO UPDATE \
                    SET checksum = EXCLUDED.checksum, applied_at = now()",
            )
            .bind::<Text, _>(function.name)
            .bind::<Text, _>(function.source)
            .execute(conn)?;
            applied.push(function.name);
        }
        Ok(applied)
    })
}
