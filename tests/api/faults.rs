//! Fault injection: brokers and databases that vanish, reset, go silent or
//! refuse; processes killed or stopped. Faults are injected through a TCP
//! proxy between the service and the shared servers, or by killing a
//! `plan-queue serve` child process.

use crate::helpers::{
    code, message_ids, pair_body, received_ids, spawn_app, spawn_app_with, TestApp, DEMO_PAIRS,
};
use crate::proxy::{Mode, Proxy};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const RABBITMQ: &str = "127.0.0.1:5672";

fn rerun_113() -> Value {
    json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 113})
}

async fn post_to(app: &TestApp, url: &str, body: &Value) -> (u16, Value) {
    let token = app.token(13, &["PLAN_RUN"]);
    let response = app
        .client
        .post(format!("{url}/queue/rerun"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    crate::helpers::read(response).await
}

#[tokio::test]
async fn a_rerun_accepted_while_the_broker_is_unreachable_is_delivered_when_it_returns() {
    let proxy = Proxy::start(RABBITMQ.parse().unwrap()).await;
    proxy.set(Mode::Refuse);
    let app = spawn_app_with(|c| c.amqp.url = proxy.amqp_url()).await;
    let (status, body) = app.rerun(&rerun_113()).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.pending().await, 2);

    proxy.set(Mode::Forward);
    let returned = Instant::now();
    let messages = app.consume("APPIUM", 2, Duration::from_secs(10)).await;
    let consumed = received_ids(&messages);
    assert_eq!(consumed, message_ids(&body));
    println!(
        "delivered {:?} after the broker became reachable",
        returned.elapsed()
    );
}

#[tokio::test]
async fn a_service_killed_after_commit_publishes_the_pending_rows_on_restart() {
    let mut app = spawn_app().await;
    app.stop().await;
    let refusing = Proxy::start(RABBITMQ.parse().unwrap()).await;
    refusing.set(Mode::Refuse);
    let (mut child, url) = app.spawn_binary(&[("AMQP_URL", refusing.amqp_url())]).await;
    let (status, body) = post_to(&app, &url, &rerun_113()).await;
    assert_eq!(status, 200, "{body}");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(app.pending().await, 2, "committed, not published");

    app.restart_with(|_| {}).await;
    let messages = app.consume("APPIUM", 2, Duration::from_secs(10)).await;
    let consumed = received_ids(&messages);
    assert_eq!(consumed, message_ids(&body));
    app.wait_until_pending(0).await;
}

#[tokio::test]
async fn a_service_killed_after_the_broker_confirmed_republishes_with_the_same_message_id() {
    let mut app = spawn_app().await;
    app.stop().await;
    let proxy = Proxy::start(RABBITMQ.parse().unwrap()).await;
    let (mut child, url) = app
        .spawn_binary(&[
            ("AMQP_URL", proxy.amqp_url()),
            ("PUBLISH_TIMEOUT_MS", "30000".to_owned()),
            ("RELAY_LEASE_MS", "3000".to_owned()),
        ])
        .await;
    app.wait_ready(&url, 200).await;
    // the broker receives, enqueues and confirms; the confirms never reach the service
    proxy.set(Mode::DropReplies);
    let (status, body) = post_to(&app, &url, &rerun_113()).await;
    assert_eq!(status, 200, "{body}");
    let first = app.consume("APPIUM", 2, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 2, "the broker has the messages");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        app.pending().await,
        2,
        "the rows were never marked published"
    );

    // the dead relay's lease runs out, then the rows are claimed again
    app.restart_with(|_| {}).await;
    let second = app.consume("APPIUM", 2, Duration::from_secs(10)).await;
    assert_eq!(received_ids(&first), message_ids(&body));
    assert_eq!(
        received_ids(&second),
        received_ids(&first),
        "re-published with the same messageId"
    );
    app.wait_until_pending(0).await;
}

#[tokio::test]
async fn a_connection_reset_in_the_middle_of_a_batch_loses_nothing() {
    let proxy = Proxy::start(RABBITMQ.parse().unwrap()).await;
    let app = spawn_app_with(|c| c.amqp.url = proxy.amqp_url()).await;
    app.add_pairs_to_last_run(1000).await;
    app.wait_ready(&app.address, 200).await;
    let pairs: Vec<Value> = (10000..11000)
        .map(|s| json!({"scenarioId": s, "environmentId": 222}))
        .collect();
    let (status, body) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioEnvironmentPairs": pairs}))
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(20)).await;
    proxy.reset_all();
    let accepted = message_ids(&body);
    let messages = app.consume("APPIUM", 2000, Duration::from_secs(8)).await;
    let consumed = received_ids(&messages);
    assert_eq!(consumed, accepted, "every pair arrived, nothing unknown");
    println!(
        "1000 accepted, {} delivered ({} duplicates)",
        messages.len(),
        messages.len() - consumed.len()
    );
    app.wait_until_pending(0).await;
}

#[tokio::test]
async fn a_black_holed_broker_times_out_without_hanging_requests() {
    let proxy = Proxy::start(RABBITMQ.parse().unwrap()).await;
    let app = spawn_app_with(|c| {
        c.amqp.url = proxy.amqp_url();
        c.amqp.publish_timeout = Duration::from_millis(500);
    })
    .await;
    app.wait_ready(&app.address, 200).await;
    proxy.set(Mode::BlackHole);
    let started = Instant::now();
    let (status, body) = app.rerun(&rerun_113()).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the request path does not wait for the broker"
    );
    // confirms time out, the relay gives up the connection and reports it
    app.wait_ready(&app.address, 503).await;
    assert_eq!(app.pending().await, 2);
    let last_error = app
        .count_sql("SELECT count(*) AS n FROM dispatches WHERE last_error LIKE '%timed out%'")
        .await;
    assert_eq!(last_error, 2, "the timeout is recorded on the rows");

    proxy.set(Mode::Forward);
    let messages = app.consume("APPIUM", 2, Duration::from_secs(15)).await;
    assert_eq!(messages.len(), 2);
    app.wait_until_pending(0).await;
}

#[tokio::test]
async fn a_returned_message_is_retried_with_back_off_and_never_marked_published() {
    let app = spawn_app().await;
    app.wait_ready(&app.address, 200).await;
    let (_connection, channel) = crate::helpers::broker_channel().await;
    let queue = app.config.amqp.queue_name("APPIUM");
    channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();

    let (status, _) = app.rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111, "environmentId": 222})).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        app.pending().await,
        1,
        "a returned message is never marked published"
    );
    let retried = app
        .count_sql("SELECT count(*) AS n FROM dispatches WHERE attempts >= 2 AND last_error LIKE '%NO_ROUTE%' AND next_attempt_at > now()")
        .await;
    assert_eq!(
        retried, 1,
        "retried, the reason kept, the next try backed off"
    );

    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"plan_queue_publishes_total{outcome="returned"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("plan_queue_dispatch_pending 1"),
        "{metrics}"
    );

    plan_queue::amqp::declare_topology(&channel, &app.config.amqp)
        .await
        .unwrap();
    assert_eq!(
        app.consume("APPIUM", 1, Duration::from_secs(30))
            .await
            .len(),
        1
    );
    app.wait_until_pending(0).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"plan_queue_publishes_total{outcome="confirmed"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_message_the_broker_nacks_is_retried() {
    use lapin::types::{AMQPValue, FieldTable};
    let app = spawn_app().await;
    app.wait_ready(&app.address, 200).await;
    // a second, full queue on the same routing key: the broker nacks the publish
    let (_connection, channel) = crate::helpers::broker_channel().await;
    let full = format!("{}.full", app.config.amqp.exchange);
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let options = lapin::options::QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    channel
        .queue_declare(full.as_str().into(), options, arguments)
        .await
        .unwrap();
    channel
        .queue_bind(
            full.as_str().into(),
            app.config.amqp.exchange.as_str().into(),
            "APPIUM".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let (status, _) = app.rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111, "environmentId": 222})).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let nacked = app.count_sql("SELECT count(*) AS n FROM dispatches WHERE published_at IS NULL AND last_error LIKE '%nack%'").await;
    assert_eq!(nacked, 1, "a nacked message stays pending with its reason");

    channel
        .queue_delete(full.as_str().into(), Default::default())
        .await
        .unwrap();
    // the first copy reached the APPIUM queue already; the retry adds another with the same id
    let messages = app.consume("APPIUM", 2, Duration::from_secs(30)).await;
    assert!(!messages.is_empty());
    assert!(messages
        .iter()
        .all(|m| m.message_id == messages[0].message_id));
    app.wait_until_pending(0).await;
}

#[tokio::test]
async fn an_unreachable_database_is_503_and_recovers_without_restart() {
    let (app, proxy) = crate::proxy::spawn_app_behind_database_proxy().await;
    let (status, body) = app.rerun(&rerun_113()).await;
    assert_eq!(status, 200, "{body}");

    proxy.set(Mode::Refuse);
    let before = app.counts().await;
    app.assert_database_unavailable(&rerun_113()).await;
    assert_eq!(app.counts().await, before, "nothing half-written");

    proxy.set(Mode::Forward);
    let started = Instant::now();
    loop {
        let (status, _) = app.rerun(&rerun_113()).await;
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no recovery: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_exhausted_pool_is_503_and_the_waiting_request_still_completes() {
    let app = spawn_app_with(|c| {
        c.database.pool_size = 1;
        c.database.checkout_timeout = Duration::from_millis(300);
    })
    .await;
    // hold the source run's row: the rerun's insert checks its foreign key to
    // it (FOR KEY SHARE) and waits, so the first request keeps the only connection
    let url = app.db_url.clone();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        use diesel::connection::SimpleConnection;
        let mut conn = plan_queue::db::connect(&url).unwrap();
        conn.batch_execute("BEGIN; SELECT id FROM executions WHERE id = 4980 FOR UPDATE;")
            .unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        conn.batch_execute("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let body = rerun_113();
    let first = app.rerun(&body);
    let second = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        app.rerun(&rerun_113()).await
    };
    let ((first_status, first_body), (second_status, second_body)) = tokio::join!(first, second);
    holder.join().unwrap();
    assert_eq!(
        (second_status, code(&second_body)),
        (503, 1011),
        "{second_body}"
    );
    assert_eq!(first_status, 200, "{first_body}");
    assert_eq!(app.counts().await.1, 2, "only the first rerun was written");
}

#[tokio::test]
async fn two_instances_on_one_database_publish_every_row_exactly_once() {
    let app = spawn_app().await;
    let second = plan_queue::startup::Application::build(app.config.clone(), false).unwrap();
    let second_url = format!("http://127.0.0.1:{}", second.port());
    let second_handle = second.handle();
    let second_task = tokio::spawn(second.run_until_stopped());
    let requests = (0..120).map(|i| {
        let (s, e) = DEMO_PAIRS[i % DEMO_PAIRS.len()];
        let body = pair_body(s, e);
        let url = if i % 2 == 0 {
            app.address.clone()
        } else {
            second_url.clone()
        };
        let app = &app;
        async move { post_to(app, &url, &body).await }
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut accepted = HashSet::new();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        accepted.extend(message_ids(body));
    }
    let messages = app.consume("APPIUM", 121, Duration::from_secs(15)).await;
    let consumed: Vec<String> = messages
        .iter()
        .map(|m| m.message_id.clone().unwrap())
        .collect();
    assert_eq!(consumed.len(), 120, "no message twice");
    assert_eq!(consumed.into_iter().collect::<HashSet<_>>(), accepted);
    let claimed_twice = app
        .count_sql("SELECT count(*) AS n FROM dispatches WHERE attempts <> 1")
        .await;
    assert_eq!(claimed_twice, 0, "each row was claimed by one relay, once");
    second_handle.stop(true).await;
    second_task.await.unwrap().unwrap();
}

#[tokio::test]
async fn sigterm_under_load_stops_cleanly_and_no_200_lacks_its_rows() {
    let mut app = spawn_app().await;
    app.stop().await;
    // 400 reruns of one pair: above the default limit of 50 attempts
    let (child, url) = app
        .spawn_binary(&[("MAX_ATTEMPTS", "1000".to_owned())])
        .await;
    let pid = child.id();
    let load = {
        let client = app.client.clone();
        let token = app.token(13, &["PLAN_RUN"]);
        let url = url.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..400 {
                let sent = client
                    .post(format!("{url}/queue/rerun"))
                    .bearer_auth(&token)
                    .json(&rerun_113())
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await;
                match sent {
                    Ok(r) => answers.push(crate::helpers::read(r).await),
                    Err(_) => break, // the server stopped accepting
                }
            }
            answers
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let mut child = child;
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let took = signalled.elapsed();
    assert!(exit.success(), "clean exit: {exit:?}");
    assert!(took < Duration::from_secs(10), "exited after {took:?}");
    let answers = load.await.unwrap();
    let mut accepted = HashSet::new();
    for (status, body) in &answers {
        assert!(*status == 200 || *status == 503, "{status} {body}");
        if *status == 200 {
            accepted.extend(message_ids(body));
        }
    }
    assert!(
        !accepted.is_empty(),
        "some reruns went through before the signal"
    );
    let rows = app.count_sql("SELECT count(*) AS n FROM dispatches").await;
    assert_eq!(
        rows as usize,
        accepted.len(),
        "every 200 has its dispatch rows, and nothing else was written"
    );
    // whatever the stopped service did not publish, the next start does
    app.restart_with(|_| {}).await;
    let messages = app
        .consume("APPIUM", accepted.len(), Duration::from_secs(20))
        .await;
    let consumed = received_ids(&messages);
    assert_eq!(consumed, accepted);
    println!(
        "{} reruns accepted before SIGTERM, exit after {took:?}",
        answers.len()
    );
}

#[tokio::test]
async fn after_a_broker_restart_confirmed_messages_are_kept_and_the_service_reconnects() {
    let Some(broker) = crate::broker::start_private_broker().await else {
        return;
    };
    let app = spawn_app_with(|c| c.amqp.url = broker.amqp_url()).await;
    let (status, before) = app.rerun(&rerun_113()).await;
    assert_eq!(status, 200, "{before}");
    app.wait_until_pending(0).await; // confirmed by the broker

    let broker = crate::broker::restart_private_broker(broker).await;
    let queue = app.config.amqp.queue_name("APPIUM");
    let kept =
        crate::helpers::take_from(&broker.amqp_url(), &queue, 2, Duration::from_secs(10)).await;
    let ids: HashSet<String> = kept.iter().map(|m| m.message_id.clone().unwrap()).collect();
    assert_eq!(
        ids,
        message_ids(&before),
        "confirmed messages survived the restart"
    );

    let (status, after) = app.rerun(&rerun_113()).await;
    assert_eq!(status, 200);
    let delivered =
        crate::helpers::take_from(&broker.amqp_url(), &queue, 2, Duration::from_secs(20)).await;
    let ids: HashSet<String> = delivered
        .iter()
        .map(|m| m.message_id.clone().unwrap())
        .collect();
    assert_eq!(ids, message_ids(&after), "the relay reconnected by itself");
    tokio::task::spawn_blocking(move || drop(broker))
        .await
        .unwrap();
}
