//! Callbacks (contract, section 21) against a real local HTTP receiver: the
//! signature over the exact body, retries with one `X-PlanQueue-Delivery`,
//! no redirect followed, hosts outside `CALLBACK_ALLOWED_HOSTS` refused
//! before anything is written, a silent receiver timed out and given up, a
//! SIGKILL between attempts survived, a 2xx with a dripping body delivered, a slow receiver holding up nothing
//! else, and an automatic retry calling back too.

use crate::ends::wait_finished;
use crate::helpers::{code, message, read, spawn_app_with, valid_rerun, TestApp};
use crate::results::wait_consumer;
use crate::retries::{report, retry_of};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SECRET: &str = "callback-test-secret";

/// How the receiver answers one request.
#[derive(Clone, Debug)]
enum Answer {
    Status(u16),
    Redirect(String),
    /// Answers the status after the delay; the connection stays open meanwhile.
    Late(Duration, u16),
    /// Reads the request and never answers (the connection stays open).
    Never,
    /// Answers 200 and its headers at once, then the 15 bytes of its body
    /// one every second.
    Drip,
}

/// One request the receiver got: its headers (lower-case names) and body.
#[derive(Clone, Debug)]
struct Request {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A tiny HTTP/1.1 receiver on 127.0.0.1, port 0: answers the scripted
/// answers in turn (the last one again after the script ends) and records
/// every request.
struct Receiver {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    async fn start(script: Vec<Answer>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://127.0.0.1:{}/hook",
            listener.local_addr().unwrap().port()
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let Some(request) = read_request(&mut socket).await else {
                    continue;
                };
                let answer = {
                    let mut all = recorded.lock().unwrap();
                    all.push(request);
                    script[(all.len() - 1).min(script.len() - 1)].clone()
                };
                // each answer in a task of its own: a late one holds only its connection
                tokio::spawn(async move {
                    let head = match answer {
                        Answer::Status(status) => format!("HTTP/1.1 {status} X\r\n"),
                        Answer::Redirect(to) => format!("HTTP/1.1 307 X\r\nLocation: {to}\r\n"),
                        Answer::Late(delay, status) => {
                            tokio::time::sleep(delay).await;
                            format!("HTTP/1.1 {status} X\r\n")
                        }
                        Answer::Never => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return drop(socket);
                        }
                        Answer::Drip => {
                            let head = "HTTP/1.1 200 X\r\nContent-Length: 15\r\n\r\n";
                            if socket.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            for _ in 0..15 {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                if socket.write_all(b".").await.is_err() {
                                    return;
                                }
                            }
                            return;
                        }
                    };
                    let _ = socket
                        .write_all(
                            format!("{head}Content-Length: 2\r\nConnection: close\r\n\r\nok")
                                .as_bytes(),
                        )
                        .await;
                });
            }
        });
        Receiver { url, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits (up to `within`) until `count` requests came.
    async fn wait_for(&self, count: usize, within: Duration) -> Vec<Request> {
        let started = Instant::now();
        loop {
            let got = self.requests();
            if got.len() >= count {
                return got;
            }
            assert!(
                started.elapsed() < within,
                "only {} requests: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
    let headers: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length")?.parse().ok()?;
    while buffer.len() < end + length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        headers,
        body: buffer[end..end + length].to_vec(),
    })
}

/// An app whose callbacks may reach 127.0.0.1, retried for `retry_secs`.
async fn app_with_callbacks(retry_secs: u64) -> TestApp {
    spawn_app_with(|config| {
        config.callbacks.allowed_hosts = "127.0.0.1".to_owned();
        config.callbacks.secret = Some(SECRET.to_owned());
        config.callbacks.retry_secs = retry_secs;
    })
    .await
}

/// Runs plan 614's scenario 113 on environment 223 as user 13 with
/// `callback_url`, then cancels it, which finishes it; the execution id.
async fn run_and_finish(app: &TestApp, callback_url: &str) -> i64 {
    run_and_finish_at(app, &app.address, callback_url).await
}

/// [`run_and_finish`] against the server at `base` (the in-process app or a
/// spawned binary).
async fn run_and_finish_at(app: &TestApp, base: &str, callback_url: &str) -> i64 {
    let id = run_at(app, base, callback_url, 0).await;
    let (status, body) = read(
        app.client
            .post(format!("{base}/executions/{id}/cancel"))
            .bearer_auth(app.token(13, &["PLAN_RUN"]))
            .json(&json!({}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    id
}

/// Runs plan 614's scenario 113 on environment 223 as user 13 at `base`
/// with `callback_url` and `retryFailed`; the execution id.
async fn run_at(app: &TestApp, base: &str, callback_url: &str, retry_failed: i64) -> i64 {
    let body = json!({"planId": 614, "userId": 13, "scenarioIds": [113],
                      "environmentIds": [223], "force": true,
                      "retryFailed": retry_failed, "callbackUrl": callback_url});
    let response = app
        .client
        .post(format!("{base}/queue/run"))
        .bearer_auth(app.token(13, &["PLAN_RUN"]))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, 200, "{body}");
    body["data"]["executionId"].as_i64().unwrap()
}

/// Waits (up to `within`) until `SELECT count(*) AS n ...` `sql` counts 1.
async fn wait_sql(app: &TestApp, sql: &str, within: Duration) {
    let started = Instant::now();
    while app.count_sql(sql).await != 1 {
        assert!(started.elapsed() < within, "never true: {sql}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hex_hmac(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_receiver_answering_500_twice_then_200_gets_three_signed_deliveries_with_one_delivery_id()
{
    let receiver = Receiver::start(vec![
        Answer::Status(500),
        Answer::Status(500),
        Answer::Status(200),
    ])
    .await;
    let app = app_with_callbacks(86_400).await;
    let id = run_and_finish(&app, &receiver.url).await;
    let got = receiver.wait_for(3, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        receiver.requests().len(),
        3,
        "a delivered callback is not sent again"
    );
    let delivery = &got[0].headers["x-planqueue-delivery"];
    for request in &got {
        assert_eq!(&request.headers["x-planqueue-delivery"], delivery);
        assert_eq!(request.headers["content-type"], "application/json");
        assert_eq!(request.headers["x-planqueue-event"], "execution.finished");
        assert_eq!(
            request.headers["x-planqueue-signature"],
            format!("sha256={}", hex_hmac(&request.body)),
            "the signature is the HMAC of the exact body"
        );
        assert_eq!(request.body, got[0].body);
    }
    let event: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(event["executionId"], id);
    assert_eq!(&event["eventId"], delivery.as_str());
    let stored = app
        .count_sql(&format!(
            "SELECT count(*) AS n FROM dispatches WHERE message_id = '{delivery}' \
               AND body = (SELECT body FROM callback_deliveries WHERE event_id = '{delivery}')"
        ))
        .await;
    assert_eq!(
        stored, 1,
        "the callback's body is the event's, byte for byte"
    );
    let delivered = app
        .count_sql(&format!(
            "SELECT count(*) AS n FROM callback_deliveries WHERE execution_id = {id} \
               AND attempts = 3 AND last_status = 200 AND delivered_at IS NOT NULL"
        ))
        .await;
    assert_eq!(delivered, 1);
    assert!(app
        .metrics()
        .await
        .contains("plan_queue_callbacks_total{outcome=\"delivered\"} 1"));
}

#[tokio::test]
async fn a_host_outside_the_allowed_list_is_1022_and_nothing_is_written_or_contacted() {
    let app = app_with_callbacks(86_400).await;
    let before = app.counts().await;
    let token = app.token(13, &["PLAN_RUN"]);
    for (path, body) in [
        (
            "/queue/run",
            json!({"planId": 614, "userId": 13, "force": true,
                   "callbackUrl": "http://localhost:9/hook"}),
        ),
        (
            "/queue/rerun",
            json!({"planId": 614, "userId": 13, "frameworkType": "APPIUM",
                   "scenarioEnvironmentPairs": [{"scenarioId": 111, "environmentId": 222}],
                   "callbackUrl": "http://10.9.9.9/hook"}),
        ),
    ] {
        let (status, answer) = app.post(path, Some(&token), &body).await;
        assert_eq!((status, code(&answer)), (400, 1022), "{answer}");
        assert!(
            message(&answer).starts_with("callbackUrl host "),
            "{answer}"
        );
        assert!(message(&answer).ends_with(" is not allowed"), "{answer}");
    }
    let (status, answer) = app
        .post(
            "/queue/run",
            Some(&token),
            &json!({"planId": 614, "userId": 13, "callbackUrl": "ftp://127.0.0.1/x"}),
        )
        .await;
    assert_eq!((status, code(&answer)), (400, 1001), "{answer}");
    app.assert_nothing_written_or_published(before).await;
}

#[tokio::test]
async fn a_redirect_to_another_host_is_not_followed_and_counts_as_a_failure() {
    let elsewhere = Receiver::start(vec![Answer::Status(200)]).await;
    let redirecting = Receiver::start(vec![Answer::Redirect(elsewhere.url.clone())]).await;
    let app = app_with_callbacks(86_400).await;
    let id = run_and_finish(&app, &redirecting.url).await;
    redirecting.wait_for(2, Duration::from_secs(20)).await;
    assert!(elsewhere.requests().is_empty(), "the redirect was followed");
    let failed = app
        .count_sql(&format!(
            "SELECT count(*) AS n FROM callback_deliveries WHERE execution_id = {id} \
               AND last_status = 307 AND delivered_at IS NULL AND given_up_at IS NULL"
        ))
        .await;
    assert_eq!(failed, 1);
}

#[tokio::test]
async fn a_refused_connection_is_tried_again_and_given_up_after_callback_retry_secs() {
    // a port that refuses connections: nothing listens on it
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let app = app_with_callbacks(2).await;
    let id = run_and_finish(&app, &format!("http://127.0.0.1:{closed}/hook")).await;
    wait_sql(
        &app,
        &format!(
            "SELECT count(*) AS n FROM callback_deliveries WHERE execution_id = {id} \
               AND given_up_at IS NOT NULL AND delivered_at IS NULL AND attempts >= 2"
        ),
        Duration::from_secs(30),
    )
    .await;
    assert!(app
        .metrics()
        .await
        .contains("plan_queue_callbacks_total{outcome=\"given_up\"} 1"));
}

#[tokio::test]
async fn the_delivery_log_reads_back_the_attempts_of_a_callback_and_hides_foreign_executions() {
    let receiver = Receiver::start(vec![Answer::Status(503), Answer::Status(204)]).await;
    let app = app_with_callbacks(86_400).await;
    let id = run_and_finish(&app, &receiver.url).await;
    let got = receiver.wait_for(2, Duration::from_secs(30)).await;
    let path = format!("/executions/{id}/callbacks");
    let started = Instant::now();
    let log = loop {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .bearer_auth(app.token(13, &["PLAN_READ"]))
            .send()
            .await
            .unwrap();
        let (status, body) = crate::helpers::read(response).await;
        assert_eq!(status, 200, "{body}");
        let log = body["data"]["callbacks"].clone();
        if log[0]["deliveredAt"].is_string() {
            break log;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "{body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(log.as_array().unwrap().len(), 1, "{log}");
    let delivery = &log[0];
    assert_eq!(
        delivery["eventId"].as_str().unwrap(),
        got[0].headers["x-planqueue-delivery"]
    );
    assert_eq!(delivery["url"], receiver.url.as_str());
    assert_eq!(delivery["attempts"], 2);
    assert_eq!(delivery["lastStatus"], 204);
    assert!(delivery["givenUpAt"].is_null(), "{delivery}");
    // a user of another project sees it as an unknown execution
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(app.token(55, &["PLAN_READ"]))
        .send()
        .await
        .unwrap();
    let (status, body) = crate::helpers::read(response).await;
    assert_eq!((status, crate::helpers::code(&body)), (404, 1017), "{body}");
}

#[tokio::test]
async fn a_receiver_that_accepts_but_never_answers_times_out_at_10_s_each_attempt_and_is_given_up()
{
    let receiver = Receiver::start(vec![Answer::Never]).await;
    // the window starts at the finish: longer than one attempt (10 s) and
    // its back-off, shorter than two: two attempts, ~21 s
    let app = app_with_callbacks(15).await;
    let id = run_and_finish(&app, &receiver.url).await;
    wait_sql(
        &app,
        &format!(
            "SELECT count(*) AS n FROM callback_deliveries WHERE execution_id = {id} \
               AND given_up_at IS NOT NULL AND delivered_at IS NULL"
        ),
        Duration::from_secs(60),
    )
    .await;
    let given_up = app
        .count_sql(&format!(
            "SELECT count(*) AS n FROM callback_deliveries WHERE execution_id = {id} \
               AND attempts >= 2 AND last_status IS NULL \
               AND last_error = 'no answer within 10s' \
               AND given_up_at >= created_at + interval '15 seconds'"
        ))
        .await;
    assert_eq!(
        given_up, 1,
        "attempts of 10 s each, given up once CALLBACK_RETRY_SECS (15) passed"
    );
    let got = receiver.requests();
    assert!(got.len() >= 2, "each attempt reached the receiver");
    assert!(got
        .iter()
        .all(|r| r.headers["x-planqueue-delivery"] == got[0].headers["x-planqueue-delivery"]));
    assert!(app
        .metrics()
        .await
        .contains("plan_queue_callbacks_total{outcome=\"given_up\"} 1"));
}

#[tokio::test]
async fn a_2xx_whose_body_drips_for_15_s_is_delivered_after_one_attempt() {
    let receiver = Receiver::start(vec![Answer::Drip]).await;
    let app = app_with_callbacks(86_400).await;
    let id = run_and_finish(&app, &receiver.url).await;
    // the status came at once: delivered though the body is far from over
    wait_sql(
        &app,
        &format!(
            "SELECT count(*) AS n FROM callback_deliveries WHERE execution_id = {id} \
               AND delivered_at IS NOT NULL AND attempts = 1 AND last_status = 200 \
               AND last_error IS NULL"
        ),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(receiver.requests().len(), 1, "one attempt");
}

#[tokio::test]
async fn a_delivery_written_longer_ago_than_callback_retry_secs_is_given_up_after_its_first_failure(
) {
    let delivered = Receiver::start(vec![Answer::Status(200)]).await;
    let failing = Receiver::start(vec![Answer::Status(500)]).await;
    let app = app_with_callbacks(60).await;
    let id = run_and_finish(&app, &delivered.url).await;
    delivered.wait_for(1, Duration::from_secs(20)).await;
    // a delivery of the same execution written two minutes ago, first tried
    // now (as after plan-queue was down since the finish), to a receiver
    // that fails: the retry window started at the finish and is over
    app.sql(&format!(
        "INSERT INTO callback_deliveries (event_id, execution_id, url, body, created_at) \
         SELECT gen_random_uuid(), execution_id, '{}', body, now() - interval '2 minutes' \
           FROM callback_deliveries WHERE execution_id = {id}",
        failing.url
    ))
    .await;
    wait_sql(
        &app,
        &format!(
            "SELECT count(*) AS n FROM callback_deliveries WHERE url = '{}' \
               AND attempts = 1 AND last_status = 500 AND given_up_at IS NOT NULL \
               AND next_attempt_at IS NULL AND delivered_at IS NULL",
            failing.url
        ),
        Duration::from_secs(20),
    )
    .await;
    // the back-off (about 1 s) would have sent it again by now
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(failing.requests().len(), 1, "tried once, not again");
    assert!(app
        .metrics()
        .await
        .contains("plan_queue_callbacks_total{outcome=\"given_up\"} 1"));
}

#[tokio::test]
async fn a_callback_is_still_delivered_when_plan_queue_is_killed_between_attempts() {
    let receiver = Receiver::start(vec![Answer::Status(500), Answer::Status(200)]).await;
    let mut app = spawn_app_with(|_| {}).await;
    app.stop().await;
    let env = [
        ("CALLBACK_ALLOWED_HOSTS", "127.0.0.1".to_owned()),
        ("CALLBACK_SECRET", SECRET.to_owned()),
    ];
    let (mut first, url) = app.spawn_binary(&env).await;
    let id = run_and_finish_at(&app, &url, &receiver.url).await;
    wait_sql(
        &app,
        &format!(
            "SELECT count(*) AS n FROM callback_deliveries WHERE execution_id = {id} \
               AND attempts = 1 AND last_status = 500 AND next_attempt_at IS NOT NULL"
        ),
        Duration::from_secs(30),
    )
    .await;
    first.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    first.wait().unwrap();
    assert_eq!(
        receiver.requests().len(),
        1,
        "killed after the first attempt, before the second (back-off at least 0.8 s)"
    );
    let (mut second, _) = app.spawn_binary(&env).await;
    let got = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(
        got[1].headers["x-planqueue-delivery"], got[0].headers["x-planqueue-delivery"],
        "the same delivery id after the restart"
    );
    assert_eq!(got[1].body, got[0].body);
    wait_sql(
        &app,
        &format!(
            "SELECT count(*) AS n FROM callback_deliveries WHERE execution_id = {id} \
               AND attempts = 2 AND last_status = 200 AND delivered_at IS NOT NULL"
        ),
        Duration::from_secs(10),
    )
    .await;
    second.kill().unwrap();
    second.wait().unwrap();
}

#[tokio::test]
async fn a_slow_receiver_delays_neither_runs_nor_reruns_nor_other_callbacks() {
    let slow = Receiver::start(vec![Answer::Late(Duration::from_secs(30), 200)]).await;
    let fast = Receiver::start(vec![Answer::Status(204)]).await;
    let app = app_with_callbacks(86_400).await;
    let slow_id = run_and_finish(&app, &slow.url).await;
    slow.wait_for(1, Duration::from_secs(20)).await;

    // while the slow callback hangs
    let token = app.token(13, &["PLAN_RUN"]);
    let (status, body) = app
        .post(
            "/queue/run",
            Some(&token),
            &json!({"planId": 614, "userId": 13, "force": true}),
        )
        .await;
    assert_eq!(status, 200, "a run answers: {body}");
    let (status, body) = app.rerun(&valid_rerun(false)).await;
    assert_eq!(status, 200, "a rerun answers: {body}");
    let fast_id = run_and_finish(&app, &fast.url).await;
    let got = fast.wait_for(1, Duration::from_secs(5)).await;
    let event: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(event["executionId"], fast_id);
    assert_eq!(
        app.count_sql(&format!(
            "SELECT count(*) AS n FROM callback_deliveries WHERE execution_id = {slow_id} \
               AND attempts = 0 AND delivered_at IS NULL"
        ))
        .await,
        1,
        "the slow callback was still waiting for its answer meanwhile"
    );
}

#[tokio::test]
async fn an_automatic_retry_inherits_the_callback_url_and_its_finish_calls_back_too() {
    let receiver = Receiver::start(vec![Answer::Status(200)]).await;
    let app = app_with_callbacks(86_400).await;
    wait_consumer(&app).await;
    let first = run_at(&app, &app.address, &receiver.url, 1).await;
    report(&app, first, &[(223, "FAILED")]).await;
    let retry = retry_of(&app, first).await.expect("a retry");
    let retry = retry["executionId"].as_i64().unwrap();
    report(&app, retry, &[(223, "PASSED")]).await;
    wait_finished(&app, retry, Duration::from_secs(20)).await;

    let got = receiver.wait_for(2, Duration::from_secs(30)).await;
    let events: Vec<Value> = got
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let of = |id: i64| {
        events
            .iter()
            .find(|e| e["executionId"] == id)
            .unwrap_or_else(|| panic!("no callback for execution {id}: {events:?}"))
    };
    assert_eq!(of(first)["trigger"], "USER", "{events:?}");
    assert_eq!(of(retry)["trigger"], "RETRY", "{events:?}");
    assert_eq!(of(retry)["retryOf"], first, "{events:?}");
    assert_ne!(
        got[0].headers["x-planqueue-delivery"], got[1].headers["x-planqueue-delivery"],
        "two events, two delivery ids"
    );
}

/// A TLS receiver on 127.0.0.1 with a self-signed certificate for
/// 127.0.0.1 (no CA trusts it): its https URL and the number of TLS
/// handshakes clients began (a ClientHello read).
async fn self_signed_receiver() -> (String, Arc<AtomicUsize>) {
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}/hook",
        listener.local_addr().unwrap().port()
    );
    let hellos = Arc::new(AtomicUsize::new(0));
    let counted = hellos.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut first = [0u8; 1];
                // 0x16: a TLS handshake record (the ClientHello)
                if socket.peek(&mut first).await.is_ok() && first[0] == 0x16 {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                // the client refuses the certificate: the handshake fails
                let _ = acceptor.accept(socket).await;
            });
        }
    });
    (url, hellos)
}

#[tokio::test]
async fn an_https_receiver_is_reached_over_tls_and_a_self_signed_certificate_is_refused() {
    let (url, hellos) = self_signed_receiver().await;
    let app = app_with_callbacks(86_400).await;
    let id = run_and_finish(&app, &url).await;
    wait_sql(
        &app,
        &format!(
            "SELECT count(*) AS n FROM callback_deliveries WHERE execution_id = {id} \
               AND attempts >= 1"
        ),
        Duration::from_secs(20),
    )
    .await;
    let (status, body) = read(
        app.client
            .get(format!("{}/executions/{id}/callbacks", app.address))
            .bearer_auth(app.token(13, &["PLAN_READ"]))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let delivery = &body["data"]["callbacks"][0];
    let error = delivery["lastError"].as_str().unwrap_or_default();
    assert!(
        error.contains("certificate"),
        "a certificate error, not an unsupported scheme: {delivery}"
    );
    assert!(delivery["deliveredAt"].is_null(), "{delivery}");
    assert!(hellos.load(Ordering::SeqCst) >= 1, "no TLS handshake began");
}
