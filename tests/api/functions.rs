//! The server functions of `src/db/functions/` called directly in SQL, on a
//! private copy of the demo database (`fixtures/demo.json`): every refusal
//! `queue_rerun` and `queue_run` can answer, with its arguments, one success
//! each, and the repeatable applier (`plan_queue::db::functions`) that
//! replaces a function whose text changed and leaves the others alone.

use crate::helpers::ADMIN_DB_URL;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Jsonb, Text};
use plan_queue::db::functions::{apply_functions, ServerFunction, FUNCTIONS};
use plan_queue::domain::PairStatus;
use serde_json::{json, Value};

/// A private copy of the migrated and seeded template, dropped at the end.
struct PrivateDb {
    name: String,
    url: String,
    conn: PgConnection,
}

impl PrivateDb {
    fn new() -> Self {
        let server = std::env::var("TEST_DATABASE_SERVER")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
        let name = format!("plan_queue_test_{}", uuid::Uuid::new_v4().simple());
        crate::test_db::create_from_template(&server, &name);
        let url = format!("{server}/{name}");
        let conn = plan_queue::db::connect(&url).expect("test database");
        PrivateDb { name, url, conn }
    }

    /// The one row of `SELECT … FROM <function>(…)` as JSON (column → value),
    /// the function called with `defaults` in named notation, `changes`
    /// replacing some of them (SQL expressions).
    fn call(
        &mut self,
        function: &str,
        defaults: &[(&str, &str)],
        changes: &[(&str, &str)],
    ) -> Value {
        for (name, _) in changes {
            assert!(
                defaults.iter().any(|(d, _)| d == name),
                "{function} has no argument {name}"
            );
        }
        let arguments: Vec<String> = defaults
            .iter()
            .map(|(name, value)| {
                let value = changes
                    .iter()
                    .find(|(changed, _)| changed == name)
                    .map_or(*value, |(_, v)| *v);
                format!("{name} => {value}")
            })
            .collect();
        self.json(&format!(
            "SELECT to_jsonb(r) AS row FROM {function}({}) r",
            arguments.join(", ")
        ))
    }

    /// `queue_rerun` of scenario 111 on environment 222 of plan 614 by user
    /// 13, with `changes`.
    fn rerun(&mut self, changes: &[(&str, &str)]) -> Value {
        self.call("queue_rerun", RERUN, changes)
    }

    /// `queue_run` of every pair of plan 614 by user 13, with `changes`.
    fn run(&mut self, changes: &[(&str, &str)]) -> Value {
        self.call("queue_run", RUN, changes)
    }

    /// The one JSON value `sql` selects as `row`.
    fn json(&mut self, sql: &str) -> Value {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = Jsonb)]
            row: Value,
        }
        diesel::sql_query(sql)
            .get_result::<Row>(&mut self.conn)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .row
    }

    /// The distinct `(requestedAt, expiresAt)` of the dispatch rows of
    /// execution `id`, as a JSON array of two-element arrays.
    fn message_times(&mut self, id: i64) -> Value {
        self.json(&format!(
            "SELECT jsonb_agg(DISTINCT jsonb_build_array(body::jsonb->'requestedAt', \
                                                         body::jsonb->'expiresAt')) AS row \
               FROM dispatches WHERE execution_id = {id}"
        ))
    }

    fn count(&mut self, sql: &str) -> i64 {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            count: i64,
        }
        diesel::sql_query(sql)
            .get_result::<Count>(&mut self.conn)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .count
    }

    /// The source text PostgreSQL holds for `function`, and the transaction
    /// that last wrote its `pg_proc` row (a `CREATE OR REPLACE` changes it
    /// even for the same text).
    fn definition(&mut self, function: &str) -> (String, String) {
        #[derive(QueryableByName)]
        struct Definition {
            #[diesel(sql_type = Text)]
            source: String,
            #[diesel(sql_type = Text)]
            written_by: String,
        }
        let d: Definition = diesel::sql_query(
            "SELECT prosrc AS source, xmin::text AS written_by FROM pg_proc \
              WHERE proname = $1 AND pronamespace = 'public'::regnamespace",
        )
        .bind::<Text, _>(function)
        .get_result(&mut self.conn)
        .expect("function defined");
        (d.source, d.written_by)
    }
}

impl Drop for PrivateDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = plan_queue::db::connect(ADMIN_DB_URL) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// `queue_rerun`'s arguments, in order, with the values of a valid rerun.
const RERUN: &[(&str, &str)] = &[
    ("p_plan_id", "614"),
    ("p_user_id", "13"),
    ("p_framework_type", "'APPIUM'"),
    ("p_scenario_ids", "'{111}'"),
    ("p_environment_ids", "'{222}'"),
    ("p_statuses", "'{}'"),
    ("p_on_in_flight", "'queue'"),
    ("p_max_pairs", "50"),
    ("p_max_attempts", "10"),
    ("p_dry_run", "false"),
    ("p_requested_at", "'2026-12-06T10:00:00Z'"),
    ("p_requested_at_text", "'2026-12-06T10:00:00Z'"),
    ("p_correlation_id", "NULL"),
    ("p_exchange", "'functions-test'"),
    (
        "p_first_message_id",
        "'0b6f2f0e-4a0c-4f53-9d0e-3c1f1d2a7b11'",
    ),
    ("p_replay", "false"),
    ("p_queue_timeout_secs", "86400"),
    ("p_own_transaction", "false"),
];

/// `queue_run`'s arguments, in order, with the values of a valid run.
const RUN: &[(&str, &str)] = &[
    ("p_plan_id", "614"),
    ("p_user_id", "13"),
    ("p_framework_type", "NULL"),
    ("p_framework_types", "'{APPIUM,GAUGE,JUNIT}'"),
    ("p_scenario_ids", "NULL"),
    ("p_environment_ids", "NULL"),
    ("p_force", "false"),
    ("p_max_pairs", "50"),
    ("p_dry_run", "false"),
    ("p_requested_at", "'2026-12-06T10:00:00Z'"),
    ("p_requested_at_text", "'2026-12-06T10:00:00Z'"),
    ("p_correlation_id", "NULL"),
    ("p_exchange", "'functions-test'"),
    (
        "p_first_message_id",
        "'7d1c2b3a-0000-4000-8000-000000000001'",
    ),
    ("p_replay", "false"),
    ("p_queue_timeout_secs", "86400"),
    ("p_own_transaction", "false"),
];

/// Arguments changed from the defaults: (name, SQL expression).
type Changes<'a> = &'a [(&'a str, &'a str)];

/// A refusal case: what it is, the arguments it changes, the refusal fields
/// expected.
type Case = (&'static str, Changes<'static>, Value);

/// The refusal fields of a `queue_rerun` row.
fn rerun_refusal(row: &Value) -> Value {
    json!([
        row["error_code"],
        row["error_scenario_id"],
        row["error_environment_id"],
        row["error_execution_id"],
        row["error_count"]
    ])
}

/// The refusal fields of a `queue_run` row.
fn run_refusal(row: &Value) -> Value {
    json!([
        row["error_code"],
        row["error_subject"],
        row["error_id"],
        row["error_count"],
        row["error_execution_id"]
    ])
}

#[test]
fn queue_rerun_answers_each_refusal_with_its_arguments_and_writes_nothing() {
    let mut db = PrivateDb::new();
    let cases: &[Case] = &[
        (
            "an unknown plan is 1000",
            &[("p_plan_id", "999999")],
            json!([1000, null, null, null, null]),
        ),
        (
            "an inactive user is 1002",
            &[("p_user_id", "34")],
            json!([1002, null, null, null, null]),
        ),
        (
            "an unknown user is 1002",
            &[("p_user_id", "999999")],
            json!([1002, null, null, null, null]),
        ),
        (
            "a user outside the plan's project is 1010",
            &[("p_user_id", "55")],
            json!([1010, null, null, null, null]),
        ),
        (
            "a plan that never ran is 1004",
            &[("p_plan_id", "615")],
            json!([1004, null, null, null, null]),
        ),
        (
            "a pair not in the source run is 1005 with the pair",
            &[
                ("p_scenario_ids", "'{111,114}'"),
                ("p_environment_ids", "'{222,222}'"),
            ],
            json!([1005, 114, 222, null, null]),
        ),
        (
            "a scenario that did not run at all is 1005 without environment",
            &[
                ("p_scenario_ids", "'{114}'"),
                ("p_environment_ids", "'{NULL}'"),
            ],
            json!([1005, 114, null, null, null]),
        ),
        (
            "a pair named twice after expansion is 1007 with the pair",
            &[
                ("p_scenario_ids", "'{111,111}'"),
                ("p_environment_ids", "'{NULL,223}'"),
            ],
            json!([1007, 111, 223, null, null]),
        ),
        (
            "more pairs than allowed after expansion is 1008 with the count",
            &[("p_environment_ids", "'{NULL}'"), ("p_max_pairs", "1")],
            json!([1008, null, null, null, 2]),
        ),
        (
            "statuses that select nothing are 1016",
            &[
                ("p_scenario_ids", "'{}'"),
                ("p_environment_ids", "'{}'"),
                ("p_statuses", "'{SKIPPED}'"),
            ],
            json!([1016, null, null, null, null]),
        ),
        (
            "an attempt over the limit is 1015 with the pair",
            &[("p_max_attempts", "1")],
            json!([1015, 111, 222, null, null]),
        ),
    ];
    for (case, changes, refusal) in cases {
        let row = db.rerun(changes);
        assert_eq!(&rerun_refusal(&row), refusal, "{case}: {row}");
        assert_eq!(row["new_execution_id"], Value::Null, "{case}: {row}");
    }
    assert_eq!(
        db.count("SELECT count(*) AS count FROM executions WHERE kind = 'RERUN'"),
        0,
        "no refusal wrote an execution"
    );
}

#[test]
fn queue_rerun_refuses_a_pair_in_flight_with_the_execution_that_holds_it() {
    let mut db = PrivateDb::new();
    let first = db.rerun(&[]);
    let holder = first["new_execution_id"].clone();
    assert!(holder.is_i64(), "{first}");
    let again = [
        ("p_on_in_flight", "'refuse'"),
        ("p_first_message_id", "gen_random_uuid()"),
    ];
    let refused = db.rerun(&again);
    assert_eq!(
        rerun_refusal(&refused),
        json!([1014, 111, 222, holder, null]),
        "onInFlight refuse: {refused}"
    );
    let skipped = db.rerun(&[
        ("p_on_in_flight", "'skip'"),
        ("p_first_message_id", "gen_random_uuid()"),
    ]);
    assert_eq!(
        rerun_refusal(&skipped),
        json!([1014, 111, 222, holder, null]),
        "onInFlight skip with every pair skipped: {skipped}"
    );
}

#[test]
fn queue_rerun_writes_the_rerun_its_pairs_and_their_dispatch_rows() {
    let mut db = PrivateDb::new();
    let row = db.rerun(&[
        ("p_scenario_ids", "'{111}'"),
        ("p_environment_ids", "'{NULL}'"),
        ("p_queue_timeout_secs", "3600"),
    ]);
    assert_eq!(row["error_code"], Value::Null, "{row}");
    assert_eq!(row["source_id"], json!(4980));
    assert_eq!(row["queued_scenario_ids"], json!([111, 111]));
    assert_eq!(row["queued_environment_ids"], json!([222, 223]));
    assert_eq!(row["queued_attempts"], json!([2, 2]));
    assert_eq!(
        row["queued_message_ids"][0],
        json!("0b6f2f0e-4a0c-4f53-9d0e-3c1f1d2a7b11"),
        "the first pair carries the caller's message id"
    );
    let id = row["new_execution_id"].as_i64().expect("a rerun written");
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) AS count FROM dispatches \
              WHERE execution_id = {id} AND message_type = 'scenario.rerun' \
                AND exchange = 'functions-test' AND routing_key = 'APPIUM'"
        )),
        2
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) AS count FROM execution_pairs \
              WHERE execution_id = {id} AND status = 'QUEUED' AND source_execution_id = 4980"
        )),
        2
    );
    assert_eq!(
        db.message_times(id),
        json!([["2026-12-06T10:00:00Z", "2026-12-06T11:00:00Z"]]),
        "expiresAt is requestedAt + the queue timeout"
    );
}

#[test]
fn queue_run_answers_each_refusal_with_its_arguments_and_writes_nothing() {
    let mut db = PrivateDb::new();
    // a plan with environments and no scenario: nothing to run
    db.conn
        .batch_execute(
            "INSERT INTO plans (id, project_id, name, framework_type) \
             VALUES (616, 7, 'Empty plan', 'APPIUM'); \
             INSERT INTO plan_environments (plan_id, environment_id) VALUES (616, 222)",
        )
        .expect("an empty plan");
    let cases: &[Case] = &[
        (
            "an unknown plan is 1000",
            &[("p_plan_id", "999999")],
            json!([1000, null, null, null, null]),
        ),
        (
            "an inactive user is 1002",
            &[("p_user_id", "34")],
            json!([1002, null, null, null, null]),
        ),
        (
            "a user outside the plan's project is 1010",
            &[("p_user_id", "55")],
            json!([1010, null, null, null, null]),
        ),
        (
            "no framework type in the body nor on the plan is 1006",
            &[("p_plan_id", "615")],
            json!([1006, null, null, null, null]),
        ),
        (
            "a plan's framework type that is not configured is 1003",
            &[("p_plan_id", "700"), ("p_user_id", "55")],
            json!([1003, null, null, null, null]),
        ),
        (
            "a scenario not in the plan is 1019 with the scenario",
            &[("p_scenario_ids", "'{111,201}'")],
            json!([1019, "scenario", 201, null, null]),
        ),
        (
            "an environment not in the plan is 1019 with the environment",
            &[("p_environment_ids", "'{301}'")],
            json!([1019, "environment", 301, null, null]),
        ),
        (
            "a plan without scenarios is 1018",
            &[("p_plan_id", "616")],
            json!([1018, null, null, null, null]),
        ),
        (
            "more pairs than allowed is 1008 with the count",
            &[("p_max_pairs", "11")],
            json!([1008, null, null, 12, null]),
        ),
    ];
    for (case, changes, refusal) in cases {
        let row = db.run(changes);
        assert_eq!(&run_refusal(&row), refusal, "{case}: {row}");
        assert_eq!(row["new_execution_id"], Value::Null, "{case}: {row}");
    }
    let unconfigured = db.run(&[("p_plan_id", "700"), ("p_user_id", "55")]);
    assert_eq!(
        unconfigured["framework_type_used"],
        json!("SELENIUM"),
        "1003 names the plan's framework type"
    );
    assert_eq!(
        db.count("SELECT count(*) AS count FROM executions WHERE requested_at > '2026-12-01'"),
        0,
        "no refusal wrote an execution"
    );
}

#[test]
fn queue_run_writes_every_pair_then_refuses_a_second_run_in_flight() {
    let mut db = PrivateDb::new();
    let row = db.run(&[]);
    assert_eq!(row["error_code"], Value::Null, "{row}");
    assert_eq!(row["framework_type_used"], json!("APPIUM"));
    let id = row["new_execution_id"].as_i64().expect("a run written");
    assert_eq!(
        row["queued_scenario_ids"],
        json!([111, 111, 111, 112, 112, 112, 113, 113, 113, 114, 114, 114])
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) AS count FROM execution_pairs p \
               JOIN dispatches d ON d.message_id = p.message_id \
              WHERE p.execution_id = {id} AND p.attempt = 1 AND p.source_execution_id = {id} \
                AND d.message_type = 'scenario.run'"
        )),
        12
    );
    assert_eq!(
        db.message_times(id),
        json!([["2026-12-06T10:00:00Z", "2026-12-07T10:00:00Z"]]),
        "expiresAt is requestedAt + the queue timeout"
    );
    let again = db.run(&[("p_first_message_id", "gen_random_uuid()")]);
    assert_eq!(
        run_refusal(&again),
        json!([1014, null, null, null, id]),
        "a run while the last one is in flight: {again}"
    );
    let forced = db.run(&[
        ("p_first_message_id", "gen_random_uuid()"),
        ("p_force", "true"),
    ]);
    assert!(forced["new_execution_id"].is_i64(), "force: {forced}");
}

/// Issue 22: a rerun or a run called as its own transaction
/// (`p_own_transaction`) bumps its plan's `results_version` once, in its
/// last statement, and its rows queue no deferred trigger event (migration
/// 20's `WHEN`); called inside a transaction that goes on, or after the
/// transaction wrote, it leaves the bump to migration 15's triggers, which
/// make it once at commit and not before.
#[test]
fn a_rerun_or_run_bumps_its_plan_s_results_version_once_per_transaction() {
    let mut db = PrivateDb::new();
    let version =
        |db: &mut PrivateDb| db.count("SELECT results_version AS count FROM plans WHERE id = 614");
    let v0 = version(&mut db);

    let own = db.rerun(&[("p_own_transaction", "true")]);
    assert_eq!(own["error_code"], Value::Null, "{own}");
    assert_eq!(version(&mut db), v0 + 1, "its own transaction: bumped once");

    // bumped by the statement itself, and no event of its rows pending:
    // with the transaction's record cleared, firing the deferred triggers
    // now bumps nothing more
    db.conn.batch_execute("BEGIN").unwrap();
    let row = db.rerun(&[
        ("p_own_transaction", "true"),
        ("p_first_message_id", "gen_random_uuid()"),
    ]);
    assert_eq!(row["error_code"], Value::Null, "{row}");
    assert_eq!(version(&mut db), v0 + 2, "bumped by the call");
    db.conn
        .batch_execute(
            "SELECT set_config('plan_queue.read_versions_seen', '', true);              SET CONSTRAINTS ALL IMMEDIATE",
        )
        .unwrap();
    assert_eq!(version(&mut db), v0 + 2, "no trigger event was queued");
    db.conn.batch_execute("COMMIT").unwrap();
    assert_eq!(version(&mut db), v0 + 2);

    // inside a transaction that goes on: the triggers, at commit, once
    db.conn.batch_execute("BEGIN").unwrap();
    let row = db.rerun(&[("p_first_message_id", "gen_random_uuid()")]);
    let id = row["new_execution_id"].as_i64().expect("a rerun written");
    assert_eq!(
        version(&mut db),
        v0 + 2,
        "the plan's row is not written yet"
    );
    db.conn
        .batch_execute(&format!(
            "UPDATE execution_pairs SET status = 'RUNNING' WHERE execution_id = {id}; COMMIT"
        ))
        .unwrap();
    assert_eq!(version(&mut db), v0 + 3, "bumped once at commit");

    // p_own_transaction after the transaction wrote: the triggers too
    db.conn
        .batch_execute("BEGIN; UPDATE executions SET open_pairs = open_pairs WHERE id = 4980")
        .unwrap();
    let row = db.rerun(&[
        ("p_own_transaction", "true"),
        ("p_first_message_id", "gen_random_uuid()"),
    ]);
    assert_eq!(row["error_code"], Value::Null, "{row}");
    assert_eq!(version(&mut db), v0 + 3, "left to the triggers");
    db.conn.batch_execute("COMMIT").unwrap();
    assert_eq!(version(&mut db), v0 + 4, "bumped once at commit");

    let run = db.run(&[("p_own_transaction", "true"), ("p_force", "true")]);
    assert!(run["new_execution_id"].is_i64(), "{run}");
    assert_eq!(
        version(&mut db),
        v0 + 5,
        "a run as its own transaction: once"
    );
}

/// `functions` with the text of `name` replaced by `text`.
fn edited<'a>(
    functions: &[ServerFunction<'a>],
    name: &str,
    text: &'a str,
) -> Vec<ServerFunction<'a>> {
    functions
        .iter()
        .map(|f| {
            if f.name == name {
                ServerFunction {
                    name: f.name,
                    source: text,
                }
            } else {
                *f
            }
        })
        .collect()
}

#[test]
fn the_applier_replaces_a_function_whose_text_changed_and_leaves_the_others_alone() {
    let mut db = PrivateDb::new();
    assert_eq!(
        apply_functions(&mut db.conn, FUNCTIONS).expect("apply"),
        Vec::<&str>::new(),
        "the template is up to date"
    );
    let before_run = db.definition("queue_run");
    let source_run = FUNCTIONS
        .iter()
        .find(|f| f.name == "source_run")
        .expect("source_run")
        .source;
    let changed = source_run.replace("     LIMIT 1\n$$;", "     LIMIT 1 -- a changed text\n$$;");
    assert_ne!(changed, source_run, "the edit applies to the file");
    let functions = edited(FUNCTIONS, "source_run", &changed);
    assert_eq!(
        apply_functions(&mut db.conn, &functions).expect("apply the change"),
        vec!["source_run"]
    );
    assert!(
        db.definition("source_run").0.contains("-- a changed text"),
        "PostgreSQL holds the new text"
    );
    assert_eq!(
        db.definition("queue_run"),
        before_run,
        "an unchanged function is not created again"
    );
    assert_eq!(
        apply_functions(&mut db.conn, &functions).expect("apply again"),
        Vec::<&str>::new(),
        "nothing changed since"
    );
}

#[test]
fn migrate_brings_back_the_current_text_of_a_function_an_older_release_left() {
    let mut db = PrivateDb::new();
    // what an older release's text leaves: another body, another checksum
    db.conn
        .batch_execute(
            "CREATE OR REPLACE FUNCTION source_run(p_plan_id BIGINT) \
             RETURNS TABLE (id BIGINT) LANGUAGE sql STABLE AS $$ SELECT NULL::bigint $$; \
             UPDATE server_functions SET checksum = 'older' WHERE name = 'source_run'",
        )
        .expect("an older function");
    plan_queue::db::migrate(&db.url).expect("migrate");
    let current = FUNCTIONS
        .iter()
        .find(|f| f.name == "source_run")
        .expect("source_run");
    let (source, _) = db.definition("source_run");
    assert!(
        current.source.contains(source.trim()),
        "the file's body is back: {source}"
    );
    assert_eq!(
        db.json("SELECT to_jsonb(s.id) AS row FROM source_run(614) s"),
        json!(4980)
    );
}

#[test]
fn the_pair_statuses_of_rust_are_those_the_check_constraint_allows() {
    let mut db = PrivateDb::new();
    let definition = db.json(
        "SELECT to_jsonb(pg_get_constraintdef(oid)) AS row FROM pg_constraint \
          WHERE conname = 'execution_pairs_status_check'",
    );
    let definition = definition.as_str().expect("the constraint's text");
    // CHECK ((status = ANY (ARRAY['QUEUED'::text, 'RUNNING'::text, …])))
    let mut allowed: Vec<&str> = definition.split('\'').skip(1).step_by(2).collect();
    allowed.sort_unstable();
    let mut names = PairStatus::ALL.map(PairStatus::as_str).to_vec();
    names.sort_unstable();
    assert_eq!(allowed, names, "{definition}");
}

/// The refusal fields of section 20 in a row of either function: the code,
/// what left the plan and its id, and the plan's framework type.
fn catalogue_refusal(row: &Value, framework_type_column: &str) -> Value {
    json!([
        row["error_code"],
        row["error_subject"],
        row["error_id"],
        row[framework_type_column]
    ])
}

#[test]
fn a_framework_type_other_than_the_plan_s_is_1023_with_the_plan_s_type() {
    let mut db = PrivateDb::new();
    let rerun = db.rerun(&[("p_framework_type", "'GAUGE'")]);
    assert_eq!(
        catalogue_refusal(&rerun, "error_framework_type"),
        json!([1023, null, null, "APPIUM"]),
        "{rerun}"
    );
    let run = db.run(&[("p_framework_type", "'GAUGE'")]);
    assert_eq!(
        catalogue_refusal(&run, "framework_type_used"),
        json!([1023, null, null, "APPIUM"]),
        "{run}"
    );
    let member_first = db.run(&[("p_framework_type", "'GAUGE'"), ("p_user_id", "55")]);
    assert_eq!(member_first["error_code"], 1010, "1010 comes before 1023");
    let plan_without_type = db.run(&[("p_framework_type", "'GAUGE'"), ("p_plan_id", "615")]);
    assert_eq!(
        plan_without_type["error_code"],
        Value::Null,
        "{plan_without_type}"
    );
    assert_eq!(
        db.count("SELECT count(*) AS count FROM executions WHERE plan_id = 614 AND id > 5100"),
        0,
        "no refusal wrote an execution"
    );
}

#[test]
fn a_retired_plan_is_1000_and_a_retired_user_1002_for_runs_and_reruns() {
    let mut db = PrivateDb::new();
    db.conn
        .batch_execute("UPDATE plans SET active = false WHERE id = 614")
        .unwrap();
    assert_eq!(db.rerun(&[])["error_code"], 1000);
    assert_eq!(db.run(&[])["error_code"], 1000);
    db.conn
        .batch_execute(
            "UPDATE plans SET active = true WHERE id = 614; \
             UPDATE users SET active = false WHERE id = 13",
        )
        .unwrap();
    assert_eq!(db.rerun(&[])["error_code"], 1002);
    assert_eq!(db.run(&[])["error_code"], 1002);
}

#[test]
fn a_retired_scenario_is_not_run_and_naming_it_in_a_rerun_is_1019_after_1005() {
    let mut db = PrivateDb::new();
    db.conn
        .batch_execute("UPDATE scenarios SET active = false WHERE id IN (111, 114)")
        .unwrap();
    let run = db.run(&[("p_dry_run", "true")]);
    assert_eq!(run["error_code"], Value::Null, "{run}");
    assert_eq!(
        run["queued_scenario_ids"],
        json!([112, 112, 112, 113, 113, 113]),
        "a run leaves the retired scenarios out"
    );
    let subset = db.run(&[("p_scenario_ids", "'{112,111}'"), ("p_dry_run", "true")]);
    assert_eq!(
        catalogue_refusal(&subset, "framework_type_used"),
        json!([1019, "scenario", 111, "APPIUM"]),
        "{subset}"
    );
    let rerun = db.rerun(&[
        ("p_scenario_ids", "'{112,111}'"),
        ("p_environment_ids", "'{222,222}'"),
    ]);
    assert_eq!(
        catalogue_refusal(&rerun, "error_framework_type"),
        json!([1019, "scenario", 111, "APPIUM"]),
        "{rerun}"
    );
    let not_in_last_run = db.rerun(&[("p_scenario_ids", "'{114}'")]);
    assert_eq!(not_in_last_run["error_code"], 1005, "1005 comes first");
    let failed = db.rerun(&[
        ("p_scenario_ids", "'{}'"),
        ("p_environment_ids", "'{}'"),
        ("p_statuses", "'{FAILED}'"),
        ("p_dry_run", "true"),
    ]);
    assert_eq!(failed["error_code"], Value::Null, "{failed}");
    assert_eq!(
        (
            &failed["queued_scenario_ids"],
            &failed["queued_environment_ids"]
        ),
        (&json!([113]), &json!([223])),
        "statuses leave the retired scenario's FAILED pair 111/222 out"
    );
}

#[test]
fn an_environment_that_left_the_plan_is_1019_when_named_and_left_out_when_expanded() {
    let mut db = PrivateDb::new();
    db.conn
        .batch_execute(
            "UPDATE environments SET active = false WHERE id = 223; \
             DELETE FROM plan_environments WHERE plan_id = 614 AND environment_id = 224",
        )
        .unwrap();
    let named = db.rerun(&[("p_environment_ids", "'{223}'")]);
    assert_eq!(
        catalogue_refusal(&named, "error_framework_type"),
        json!([1019, "environment", 223, "APPIUM"]),
        "{named}"
    );
    let expanded = db.rerun(&[
        ("p_scenario_ids", "'{111,113}'"),
        ("p_environment_ids", "'{NULL,NULL}'"),
        ("p_dry_run", "true"),
    ]);
    assert_eq!(expanded["error_code"], Value::Null, "{expanded}");
    assert_eq!(expanded["queued_scenario_ids"], json!([111]), "{expanded}");
    assert_eq!(
        expanded["queued_environment_ids"],
        json!([222]),
        "{expanded}"
    );
    let nothing_left = db.rerun(&[
        ("p_scenario_ids", "'{113}'"),
        ("p_environment_ids", "'{NULL}'"),
    ]);
    assert_eq!(
        catalogue_refusal(&nothing_left, "error_framework_type"),
        json!([1019, "environment", 223, "APPIUM"]),
        "{nothing_left}"
    );
    let run = db.run(&[("p_environment_ids", "'{224}'"), ("p_dry_run", "true")]);
    assert_eq!(
        catalogue_refusal(&run, "framework_type_used"),
        json!([1019, "environment", 224, "APPIUM"]),
        "{run}"
    );
}
