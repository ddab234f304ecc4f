//! Test databases cloned from a template (the pattern of crates.io's
//! `crates_io_test_db`): the migrations and the demo fixture are applied
//! once, to a template database named after a hash of `migrations/`,
//! `src/db/functions/` and `fixtures/demo.json`, and every test gets a copy of it
//! (`CREATE DATABASE … TEMPLATE …`), which costs a file copy instead of six
//! migrations and a seed.
//!
//! The template stays on the server as a cache for the next run; a change of
//! a migration or of the fixture makes a new one, and the builder drops the
//! templates of other contents that no running test process uses (each
//! process holds a shared advisory lock on its template's hash for as long
//! as it runs). Test processes running at the same time build it once, under
//! an exclusive advisory lock.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use plan_queue::seed::Fixture;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::OnceLock;

/// The template of this code's migrations and fixture, built on first use.
fn template(server: &str) -> &'static str {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    TEMPLATE.get_or_init(|| build_template(server))
}

/// The prefix of every template's name; the rest is its content hash in hex.
const TEMPLATE_PREFIX: &str = "plan_queue_template_";

/// The connection that holds this process's shared lock on its template
/// (kept open, and so the lock held, until the process exits).
static IN_USE: std::sync::Mutex<Option<PgConnection>> = std::sync::Mutex::new(None);

/// A hash of every file of `migrations/`, of the server functions
/// (`src/db/functions/`) and of the demo fixture.
fn content_hash() -> u64 {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir("migrations")
        .expect("migrations/")
        .flat_map(|dir| {
            let dir = dir.expect("migration directory").path();
            std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .map(|f| f.expect("migration file").path())
        })
        .collect();
    files.extend(
        std::fs::read_dir("src/db/functions")
            .expect("src/db/functions/")
            .map(|f| f.expect("function file").path()),
    );
    files.sort();
    files.push("fixtures/demo.json".into());
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(&file).expect("readable").hash(&mut hasher);
    }
    hasher.finish()
}

fn build_template(server: &str) -> String {
    let hash = content_hash();
    let name = format!("{TEMPLATE_PREFIX}{hash:016x}");
    let mut holder = plan_queue::db::connect(&format!("{server}/postgres")).expect("admin");
    holder
        .batch_execute(&format!("SELECT pg_advisory_lock_shared({})", hash as i64))
        .expect("template in-use lock");
    *IN_USE.lock().unwrap_or_else(|e| e.into_inner()) = Some(holder);
    let mut admin = plan_queue::db::connect(&format!("{server}/postgres")).expect("admin");
    admin
        .batch_execute("SELECT pg_advisory_lock(hashtext('plan_queue_test_template'))")
        .expect("template lock");
    if !database_exists(&mut admin, &name) {
        let building = format!("{name}_building");
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"
            ))
            .expect("drop a half-built template");
        let url = format!("{server}/{building}");
        plan_queue::db::migrate(&url).expect("migrate the template");
        let fixture = Fixture::from_file(Path::new("fixtures/demo.json")).expect("fixture");
        let mut conn = plan_queue::db::connect(&url).expect("template connection");
        fixture.upsert(&mut conn).expect("seed the template");
        drop(conn);
        admin
            .batch_execute(&format!(
                "ALTER DATABASE \"{building}\" RENAME TO \"{name}\"; \
                 ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS false"
            ))
            .expect("publish the template");
        drop_unused_templates(&mut admin, &name);
    }
    admin
        .batch_execute("SELECT pg_advisory_unlock(hashtext('plan_queue_test_template'))")
        .expect("template unlock");
    name
}

/// Drops the templates other than `current` that no test process holds
/// (their hash's advisory lock can be taken exclusively). Best effort.
fn drop_unused_templates(admin: &mut PgConnection, current: &str) {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        datname: String,
    }
    let Ok(names) = diesel::sql_query(
        "SELECT datname FROM pg_database WHERE datname LIKE 'plan\\_queue\\_template\\_%'",
    )
    .load::<Name>(admin) else {
        return;
    };
    for Name { datname } in names {
        let Some(hash) = datname
            .strip_prefix(TEMPLATE_PREFIX)
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        else {
            continue;
        };
        if datname == current {
            continue;
        }
        #[derive(QueryableByName)]
        struct Free {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            free: bool,
        }
        let free = diesel::sql_query(format!(
            "SELECT pg_try_advisory_lock({}) AS free",
            hash as i64
        ))
        .get_result::<Free>(admin)
        .map(|f| f.free)
        .unwrap_or(false);
        if free {
            // two messages: DROP DATABASE refuses to run in the implicit
            // transaction of a multi-statement query (the templates of
            // earlier migrations were never dropped while it was one)
            let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{datname}\""));
            let _ = admin.batch_execute(&format!("SELECT pg_advisory_unlock({})", hash as i64));
        }
    }
}

fn database_exists(conn: &mut PgConnection, name: &str) -> bool {
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        found: bool,
    }
    diesel::sql_query("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS found")
        .bind::<diesel::sql_types::Text, _>(name)
        .get_result::<Found>(conn)
        .expect("look up databases")
        .found
}

/// Creates database `name` on `server` (`postgres://…:5432`, no database) as
/// a copy of the migrated and seeded template. Blocking.
pub fn create_from_template(server: &str, name: &str) {
    let template = template(server);
    let mut admin = plan_queue::db::connect(&format!("{server}/postgres")).expect("admin");
    admin
        .batch_execute(&format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
        ))
        .expect("clone the template database");
}
