//! Every query on the `idempotency_keys` table: the first answer to an
//! `Idempotency-Key`, per token subject (contract, section 1). The rules
//! around them live in `crate::idempotency`.

use super::schema::idempotency_keys;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use std::time::Duration;

diesel::define_sql_function!(fn pg_try_advisory_xact_lock(key: diesel::sql_types::BigInt) -> diesel::sql_types::Bool);
diesel::define_sql_function!(fn hashtextextended(text: diesel::sql_types::Text, seed: diesel::sql_types::BigInt) -> diesel::sql_types::BigInt);

/// A stored first answer.
#[derive(Queryable, Selectable, Debug)]
#[diesel(table_name = idempotency_keys)]
pub struct StoredAnswer {
    /// The normalised request the key was first used with.
    pub request: String,
    pub status_code: i16,
    pub response_body: String,
}

/// A first answer to store.
#[derive(Insertable, AsChangeset)]
#[diesel(table_name = idempotency_keys)]
pub struct NewAnswer<'a> {
    pub subject: &'a str,
    pub key: &'a str,
    pub request: &'a str,
    pub status_code: i16,
    pub response_body: &'a str,
    pub execution_id: Option<i64>,
    pub created_at: DateTime<Utc>,
}

/// Takes the transaction-scoped advisory lock of `(subject, key)`; false
/// when another transaction holds it.
pub fn try_lock(conn: &mut PgConnection, subject: &str, key: &str) -> QueryResult<bool> {
    let scope = format!("idempotency\n{subject}\n{key}");
    diesel::select(pg_try_advisory_xact_lock(hashtextextended(scope, 0))).get_result(conn)
}

/// The answer stored for `(subject, key)` after `since`, if any.
pub fn find(
    conn: &mut PgConnection,
    subject: &str,
    key: &str,
    since: DateTime<Utc>,
) -> QueryResult<Option<StoredAnswer>> {
    idempotency_keys::table
        .find((subject, key))
        .filter(idempotency_keys::created_at.gt(since))
        .select(StoredAnswer::as_select())
        .first(conn)
        .optional()
}

/// Stores `answer`, replacing an expired one of the same key.
pub fn save(conn: &mut PgConnection, answer: &NewAnswer<'_>) -> QueryResult<()> {
    diesel::insert_into(idempotency_keys::table)
        .values(answer)
        .on_conflict((idempotency_keys::subject, idempotency_keys::key))
        .do_update()
        .set(answer)
        .execute(conn)
        .map(drop)
}

/// Deletes the keys first used more than `retention` ago; returns how many.
pub fn delete_expired(conn: &mut PgConnection, retention: Duration) -> QueryResult<usize> {
    diesel::delete(idempotency_keys::table)
        .filter(idempotency_keys::created_at.lt(cutoff(retention)))
        .execute(conn)
}

/// `now - retention`, saturating at the earliest representable time.
pub fn cutoff(retention: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(retention)
        .ok()
        .and_then(|r| Utc::now().checked_sub_signed(r))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
