//! Result ingestion for `bench/loop.sh` (issue 10): publishes a `RUNNING`
//! and then a `PASSED` result for every `QUEUED` pair that has a message id,
//! to the results exchange `<AMQP_EXCHANGE>.results`, persistent and with
//! publisher confirms (`--window` in flight), as fast as the broker confirms;
//! then polls the database until every one of those pairs is `PASSED` and
//! their executions have no open pair.
//!
//! Usage: `bench-results [--window W] [--size-only true]` (the latter prints
//! the mean body size and stops, for `bench-broker --size`). Environment: `DATABASE_URL`,
//! `AMQP_URL`, `AMQP_EXCHANGE`. Prints `result <name> <value>` lines: the
//! results sent, mean body size, the confirmed-publish rate, and results
//! applied per second (all results / time from the first publish until the
//! database shows them all applied).

use diesel::sql_types::{BigInt, Integer, Uuid as SqlUuid};
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Confirmation, ConnectionProperties};
use std::time::{Duration, Instant};

#[derive(QueryableByName)]
struct Pair {
    #[diesel(sql_type = SqlUuid)]
    message_id: uuid::Uuid,
    #[diesel(sql_type = BigInt)]
    execution_id: i64,
    #[diesel(sql_type = BigInt)]
    scenario_id: i64,
    #[diesel(sql_type = BigInt)]
    environment_id: i64,
    #[diesel(sql_type = Integer)]
    attempt: i32,
}

#[derive(QueryableByName)]
struct Progress {
    #[diesel(sql_type = BigInt)]
    passed: i64,
    #[diesel(sql_type = BigInt)]
    open: i64,
}

fn body(p: &Pair, status: &str, at: &str, terminal: bool) -> Vec<u8> {
    let extra = if terminal {
        format!(
            r#","durationMs":60000,"reportUrl":"https://reports.example/{}/{}/{}""#,
            p.execution_id, p.scenario_id, p.environment_id
        )
    } else {
        String::new()
    };
    format!(
        r#"{{"messageId":"{}","executionId":{},"scenarioId":{},"environmentId":{},"attempt":{},"status":"{status}","at":"{at}"{extra}}}"#,
        p.message_id, p.execution_id, p.scenario_id, p.environment_id, p.attempt
    )
    .into_bytes()
}

#[tokio::main]
async fn main() {
    let mut window = 256usize;
    let mut size_only = false;
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        let value = argv.next().expect("flag value");
        match flag.as_str() {
            "--window" => window = value.parse().expect("--window"),
            "--size-only" => size_only = value.parse().expect("--size-only"),
            other => panic!("unknown flag {other}"),
        }
    }
    let database_url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let amqp_url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let exchange = format!(
        "{}.results",
        std::env::var("AMQP_EXCHANGE").expect("AMQP_EXCHANGE")
    );

    let mut db = PgConnection::establish(&database_url).expect("connect to PostgreSQL");
    let pairs: Vec<Pair> = diesel::sql_query(
        "SELECT message_id, execution_id, scenario_id, environment_id, attempt \
           FROM execution_pairs WHERE status = 'QUEUED' AND message_id IS NOT NULL \
          ORDER BY execution_id, scenario_id, environment_id",
    )
    .load(&mut db)
    .expect("the queued pairs");
    let executions: Vec<i64> = {
        let mut ids: Vec<i64> = pairs.iter().map(|p| p.execution_id).collect();
        ids.dedup();
        ids
    };
    // started now, so that the deadline sweep (contract, section 15:
    // RUN_TIMEOUT_SECS after startedAt) does not end the pairs before their
    // PASSED result arrives; the same length as any other instant
    let started = chrono::Utc::now();
    let at = |secs: i64| {
        (started + chrono::Duration::seconds(secs))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    };
    let (running_at, passed_at) = (at(0), at(60));
    let mut bodies: Vec<Vec<u8>> = pairs
        .iter()
        .map(|p| body(p, "RUNNING", &running_at, false))
        .collect();
    bodies.extend(pairs.iter().map(|p| body(p, "PASSED", &passed_at, true)));
    let size = bodies.iter().map(Vec::len).sum::<usize>() / bodies.len().max(1);
    if size_only {
        println!("result size {size}");
        return;
    }

    let connection = lapin::Connection::connect(&amqp_url, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");

    let start = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    for payload in &bodies {
        while in_flight.len() >= window {
            match in_flight.next().await {
                Some(Ok(Confirmation::Ack(_))) => {}
                other => panic!("not confirmed: {other:?}"),
            }
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into());
        let confirm = channel
            .basic_publish(
                exchange.as_str().into(),
                "".into(),
                BasicPublishOptions::default(),
                payload,
                properties,
            )
            .await
            .expect("publish");
        in_flight.push(confirm);
    }
    while let Some(result) = in_flight.next().await {
        assert!(matches!(result, Ok(Confirmation::Ack(_))), "not confirmed");
    }
    let published = start.elapsed();

    let progress_sql = format!(
        "SELECT (SELECT count(*) FROM execution_pairs \
                  WHERE status = 'PASSED' AND message_id IS NOT NULL \
                    AND execution_id = ANY ('{{{ids}}}'::bigint[])) AS passed, \
                (SELECT coalesce(sum(open_pairs), 0)::bigint FROM executions \
                  WHERE id = ANY ('{{{ids}}}'::bigint[])) AS open",
        ids = executions
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let deadline = Instant::now() + Duration::from_secs(300);
    let applied = loop {
        let p: Progress = diesel::sql_query(&progress_sql)
            .get_result(&mut db)
            .expect("progress");
        if p.passed as usize == pairs.len() && p.open == 0 {
            break start.elapsed();
        }
        if Instant::now() > deadline {
            eprintln!(
                "bench: after 300 s only {} of {} pairs passed, {} open",
                p.passed,
                pairs.len(),
                p.open
            );
            break start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let n = bodies.len() as f64;
    println!("result pairs {}", pairs.len());
    println!("result results {}", bodies.len());
    println!("result size {size}");
    println!("result publish_secs {:.2}", published.as_secs_f64());
    println!("result publish_rps {:.0}", n / published.as_secs_f64());
    println!("result applied_secs {:.2}", applied.as_secs_f64());
    println!("result applied_rps {:.0}", n / applied.as_secs_f64());
}
