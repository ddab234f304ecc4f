//! The catalogue over HTTP (contract, section 20): `PUT` and `GET
//! /catalog/{kind}/{id}` and `POST /catalog/import`, each one `Db::run` and
//! one transaction; the rules are `crate::db::catalog`'s, which
//! `plan-queue seed` follows too.

use crate::db::catalog::{self, Counts, Entity};
pub use crate::db::catalog::{Kind, Stored};
use crate::db::seed::Fixture;
use crate::db::Db;
use crate::error::ApiError;
use diesel::Connection;
use serde_json::Value;

/// Writes and reads the catalogue.
#[derive(Clone)]
pub struct CatalogService {
    db: Db,
}

impl CatalogService {
    /// The service on the request path's `db`.
    pub fn new(db: Db) -> Self {
        CatalogService { db }
    }

    /// Creates or replaces the entity of `kind` with `id` from `body` (its
    /// fixture row without `id`), if `expected_version` (the `If-Match`) is
    /// the current one or not given. Answers it as stored.
    ///
    /// Errors: 400 code 1001 for a body that is not such a row or names an
    /// unknown entity; 412 code 1021 for a stale `expected_version`;
    /// nothing changed then.
    pub async fn put(
        &self,
        kind: Kind,
        id: i64,
        body: Value,
        expected_version: Option<i64>,
    ) -> Result<Stored, ApiError> {
        let entity = Entity::from_body(kind, id, body)?;
        self.db
            .run(move |conn| {
                conn.transaction(|conn| catalog::put(conn, entity.clone(), expected_version))
                    .map_err(ApiError::from)
            })
            .await
    }

    /// The entity of `kind` with `id` as stored.
    ///
    /// Errors: 404 code 1001 when it was never written.
    pub async fn get(&self, kind: Kind, id: i64) -> Result<Stored, ApiError> {
        self.db
            .run(move |conn| {
                catalog::get(conn, kind, id)?.ok_or(ApiError::NotInCatalogue {
                    entity: kind.entity(),
                    id,
                })
            })
            .await
    }

    /// Applies the fixture `body` (section 5, without `executions`) in one
    /// transaction, all or nothing; answers how many entities of each kind
    /// it wrote.
    ///
    /// Errors: 400 code 1001 for a body that is not a fixture, one with
    /// executions, or the first entity refused (named with its id).
    pub async fn import(&self, body: &[u8]) -> Result<Counts, ApiError> {
        let fixture: Fixture = serde_json::from_slice(body)
            .map_err(|e| ApiError::InvalidRequest(format!("the body is not a catalogue: {e}")))?;
        if !fixture.executions.is_empty() {
            return Err(ApiError::InvalidRequest(
                "executions are not part of the catalogue; plan-queue seed --file loads them"
                    .to_owned(),
            ));
        }
        let entities = fixture.entities()?;
        self.db
            .run(move |conn| {
                conn.transaction(|conn| catalog::import(conn, entities.clone()))
                    .map_err(ApiError::from)
            })
            .await
    }
}
