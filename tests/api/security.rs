//! Attacks on the service, each as a test: forged and confused tokens, callers
//! without the right, slow and oversized requests, hostile JSON, and what
//! error bodies and logs must never show (issue 4).

use crate::helpers::{
    assert_no_leak, assert_token_refused, code, logs, message, read, send_with_token, spawn_app,
    spawn_app_with, valid_rerun, TestApp,
};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use plan_queue::config::Config;
use plan_queue::startup::Application;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RSA_A_PRIVATE: &str = "tests/keys/rsa-a.private.pem";
const RSA_A_PUBLIC: &str = "tests/keys/rsa-a.public.pem";
const RSA_B_PRIVATE: &str = "tests/keys/rsa-b.private.pem";
const EC_PRIVATE: &str = "tests/keys/ec-p256.private.pem";
const EC_PUBLIC: &str = "tests/keys/ec-p256.public.pem";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Claims of a good token for user 13 with `PLAN_RUN`, valid ten minutes.
fn claims() -> Value {
    json!({"sub": "13", "exp": now() + 600, "authorities": ["PLAN_RUN"]})
}

fn rsa(path: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(path).unwrap()).unwrap()
}

fn sign(algorithm: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An HS256 token keyed with `secret` (for RS256/ES256 deployments: their public key).
fn hs256_keyed_with(secret: &[u8]) -> String {
    sign(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(secret),
        &claims(),
    )
}

/// A server that verifies RS256 tokens with key A's PEM public key.
async fn rs256_app() -> TestApp {
    spawn_app_with(|c| {
        c.tokens.secret = None;
        c.tokens.public_key_file = Some(RSA_A_PUBLIC.into());
    })
    .await
}

async fn assert_accepted(app: &TestApp, token: &str, what: &str) {
    let (status, _, body) = send_with_token(app, token).await;
    assert_eq!((status, code(&body)), (200, 0), "{what}: {body}");
}

// ---------------------------------------------------------------- tokens

#[tokio::test]
async fn an_rs256_deployment_accepts_its_key_and_refuses_every_other() {
    let app = rs256_app().await;
    let with = |algorithm, key| sign(algorithm, None, &rsa(key), &claims());
    assert_accepted(&app, &with(Algorithm::RS256, RSA_A_PRIVATE), "key A").await;
    assert_token_refused(&app, &with(Algorithm::RS256, RSA_B_PRIVATE), "key B").await;
    let hs256 = app.token(13, &["PLAN_RUN"]);
    assert_token_refused(&app, &hs256, "an HS256 token of the test secret").await;
    // RS512 with the right key: the family is right, the pinned algorithm is not
    assert_token_refused(&app, &with(Algorithm::RS512, RSA_A_PRIVATE), "RS512").await;
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_as_secret_is_refused() {
    let app = rs256_app().await;
    let public_pem = std::fs::read(RSA_A_PUBLIC).unwrap();
    let forged = hs256_keyed_with(&public_pem);
    assert_token_refused(&app, &forged, "HS256 keyed with the PEM").await;
    let trimmed = String::from_utf8(public_pem).unwrap();
    let forged = hs256_keyed_with(trimmed.trim().as_bytes());
    assert_token_refused(&app, &forged, "HS256 keyed with the trimmed PEM").await;
}

#[tokio::test]
async fn an_es256_deployment_accepts_its_key_only() {
    let app = spawn_app_with(|c| {
        c.tokens.secret = None;
        c.tokens.public_key_file = Some(EC_PUBLIC.into());
    })
    .await;
    let ec = EncodingKey::from_ec_pem(&std::fs::read(EC_PRIVATE).unwrap()).unwrap();
    assert_accepted(&app, &sign(Algorithm::ES256, None, &ec, &claims()), "ES256").await;
    let rs256 = sign(Algorithm::RS256, None, &rsa(RSA_A_PRIVATE), &claims());
    assert_token_refused(&app, &rs256, "RS256").await;
    let public_pem = std::fs::read(EC_PUBLIC).unwrap();
    let forged = hs256_keyed_with(&public_pem);
    assert_token_refused(&app, &forged, "HS256 keyed with the EC PEM").await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    let hs = spawn_app().await;
    let rs = rs256_app().await;
    let payload = b64(claims().to_string().as_bytes());
    for alg in ["none", "None", "NONE", "nOnE"] {
        let header = b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            assert_token_refused(&hs, &token, alg).await;
            assert_token_refused(&rs, &token, alg).await;
        }
    }
}

#[tokio::test]
async fn expiry_and_not_before_are_checked_with_the_leeway() {
    let app = spawn_app().await; // JWT_LEEWAY_SECS default: 60
    let key = EncodingKey::from_secret(crate::helpers::JWT_SECRET.as_bytes());
    let with = |extra: Value| {
        let mut c = claims();
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        sign(Algorithm::HS256, None, &key, &c)
    };
    let t = now();
    assert_token_refused(&app, &with(json!({"exp": t - 120})), "expired 120 s ago").await;
    assert_token_refused(&app, &with(json!({"exp": 0})), "exp 0").await;
    assert_accepted(
        &app,
        &with(json!({"exp": t - 20})),
        "expired 20 s ago, within the leeway",
    )
    .await;
    assert_token_refused(&app, &with(json!({"nbf": t + 600})), "nbf in 10 minutes").await;
    assert_accepted(
        &app,
        &with(json!({"nbf": t + 20})),
        "nbf in 20 s, within the leeway",
    )
    .await;
}

/// An HS256 token of the test secret: [`claims`] with `extra` added or replaced.
fn hs256_with(extra: Value) -> String {
    let mut c = claims();
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let key = EncodingKey::from_secret(crate::helpers::JWT_SECRET.as_bytes());
    sign(Algorithm::HS256, None, &key, &c)
}

#[tokio::test]
async fn fractional_exp_nbf_and_iat_are_accepted_and_compared_as_sent() {
    let app = spawn_app().await; // JWT_LEEWAY_SECS default: 60
    let t = now() as f64;
    // what a library sends for exp = time.time() + 3600 (RFC 7519, section 2)
    let common = json!({"exp": t + 3600.5, "iat": t + 0.5, "nbf": t - 0.5});
    assert_accepted(&app, &hs256_with(common), "fractional exp, iat and nbf").await;
    assert_accepted(
        &app,
        &hs256_with(json!({"exp": t + 600.0, "iat": t, "nbf": t})),
        "integer exp, iat and nbf",
    )
    .await;
    assert_accepted(&app, &hs256_with(json!({"iat": -1.5})), "iat before 1970").await;
    assert_token_refused(
        &app,
        &hs256_with(json!({"exp": t - 60.5})),
        "half a second past exp + leeway",
    )
    .await;
    assert_token_refused(
        &app,
        &hs256_with(json!({"nbf": t + 120.5})),
        "fractional nbf two minutes ahead",
    )
    .await;
    for (what, extra) in [
        (
            "exp a fractional string",
            json!({"exp": (t + 3600.5).to_string()}),
        ),
        (
            "nbf a fractional string",
            json!({"nbf": (t - 0.5).to_string()}),
        ),
        ("iat a string", json!({"iat": t.to_string()})),
    ] {
        assert_token_refused(&app, &hs256_with(extra), what).await;
    }
}

#[tokio::test]
async fn exp_or_nbf_as_strings_or_missing_exp_are_refused() {
    let app = spawn_app().await;
    let key = EncodingKey::from_secret(crate::helpers::JWT_SECRET.as_bytes());
    let far = (now() + 600).to_string();
    let cases = [
        (
            "exp as a string",
            json!({"sub": "13", "exp": far, "authorities": ["PLAN_RUN"]}),
        ),
        (
            "nbf as a string",
            json!({"sub": "13", "exp": now() + 600, "nbf": "99999999999", "authorities": ["PLAN_RUN"]}),
        ),
        (
            "nbf as a past string",
            json!({"sub": "13", "exp": now() + 600, "nbf": "1", "authorities": ["PLAN_RUN"]}),
        ),
        (
            "exp missing",
            json!({"sub": "13", "authorities": ["PLAN_RUN"]}),
        ),
        (
            "exp null",
            json!({"sub": "13", "exp": null, "authorities": ["PLAN_RUN"]}),
        ),
        (
            "sub missing",
            json!({"exp": now() + 600, "authorities": ["PLAN_RUN"]}),
        ),
        (
            "exp negative",
            json!({"sub": "13", "exp": -1, "authorities": ["PLAN_RUN"]}),
        ),
    ];
    for (what, claims) in cases {
        assert_token_refused(&app, &sign(Algorithm::HS256, None, &key, &claims), what).await;
    }
}

#[tokio::test]
async fn a_wrong_or_missing_issuer_or_audience_is_refused_when_configured() {
    let app = spawn_app_with(|c| {
        c.tokens.issuer = Some("https://id.example".into());
        c.tokens.audience = Some("plan-queue".into());
    })
    .await;
    let key = EncodingKey::from_secret(crate::helpers::JWT_SECRET.as_bytes());
    let token = |iss: Value, aud: Value| {
        let mut c = claims();
        if !iss.is_null() {
            c["iss"] = iss;
        }
        if !aud.is_null() {
            c["aud"] = aud;
        }
        sign(Algorithm::HS256, None, &key, &c)
    };
    let (iss, aud) = (json!("https://id.example"), json!("plan-queue"));
    assert_accepted(&app, &token(iss.clone(), aud.clone()), "right iss and aud").await;
    assert_accepted(
        &app,
        &token(iss.clone(), json!(["other", "plan-queue"])),
        "aud list",
    )
    .await;
    assert_token_refused(
        &app,
        &token(json!("https://evil.example"), aud.clone()),
        "wrong iss",
    )
    .await;
    assert_token_refused(&app, &token(Value::Null, aud.clone()), "no iss").await;
    assert_token_refused(
        &app,
        &token(iss.clone(), json!("other-service")),
        "wrong aud",
    )
    .await;
    assert_token_refused(&app, &token(iss.clone(), Value::Null), "no aud").await;
    assert_token_refused(&app, &token(json!(42), aud), "iss a number").await;
}

/// A JWKS file of RSA key A under `kid` "a" (and key B under "b" when `with_b`).
fn write_jwks(path: &PathBuf, with_b: bool) {
    let jwk = |key_path: &str, kid: &str| {
        let mut jwk = Jwk::from_encoding_key(&rsa(key_path), Algorithm::RS256).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        jwk
    };
    let mut keys = vec![jwk(RSA_A_PRIVATE, "a")];
    if with_b {
        keys.push(jwk(RSA_B_PRIVATE, "b"));
    }
    std::fs::write(path, serde_json::to_vec(&JwkSet { keys }).unwrap()).unwrap();
}

#[tokio::test]
async fn a_jwks_picks_the_key_by_kid_refuses_unknown_kids_and_follows_rotation() {
    let path = std::env::temp_dir().join(format!("jwks-{}.json", uuid::Uuid::new_v4()));
    write_jwks(&path, false);
    let app = spawn_app_with(|c| {
        c.tokens.secret = None;
        c.tokens.jwks_file = Some(path.clone());
    })
    .await;
    let (a, b) = (rsa(RSA_A_PRIVATE), rsa(RSA_B_PRIVATE));
    let rs = |kid: Option<&str>, key: &EncodingKey| sign(Algorithm::RS256, kid, key, &claims());
    assert_accepted(&app, &rs(Some("a"), &a), "kid a").await;
    assert_token_refused(&app, &rs(Some("b"), &b), "unknown kid b").await;
    assert_token_refused(&app, &rs(None, &a), "no kid").await;
    assert_token_refused(&app, &rs(Some("a"), &b), "kid a, key B").await;
    // rotation: key B is published; the changed file is read again
    write_jwks(&path, true);
    assert_accepted(&app, &rs(Some("b"), &b), "kid b after rotation").await;
    assert_accepted(&app, &rs(Some("a"), &a), "kid a still").await;
    // a broken file keeps the keys read before
    std::fs::write(&path, b"{not json").unwrap();
    assert_accepted(&app, &rs(Some("b"), &b), "kid b, file broken").await;
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn a_tampered_payload_or_oversized_token_is_refused() {
    let app = spawn_app().await;
    let token = app.token(13, &["PLAN_RUN"]);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut forged = claims();
    forged["authorities"] = json!(["PLAN_RUN", "QUEUE_ADMIN"]);
    parts[1] = b64(forged.to_string().as_bytes());
    assert_token_refused(&app, &parts.join("."), "payload with QUEUE_ADMIN added").await;
    let mut flipped = token.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    assert_token_refused(
        &app,
        &String::from_utf8(flipped).unwrap(),
        "signature changed",
    )
    .await;
    let mut big = claims();
    big["padding"] = json!("x".repeat(9 * 1024));
    let key = EncodingKey::from_secret(crate::helpers::JWT_SECRET.as_bytes());
    assert_token_refused(
        &app,
        &sign(Algorithm::HS256, None, &key, &big),
        "token over 8 KiB",
    )
    .await;
    for junk in ["a.b.c", "....", "Ünïcödé", "%00%00"] {
        assert_token_refused(&app, junk, junk).await;
    }
}

#[tokio::test]
async fn a_token_for_a_deleted_user_is_1002() {
    let app = spawn_app().await;
    let token = app.token(21, &["PLAN_RUN"]);
    app.sql("UPDATE executions SET requested_by = 13 WHERE requested_by = 21; DELETE FROM users WHERE id = 21")
        .await;
    let mut body = valid_rerun(true);
    body["userId"] = json!(21);
    let (status, got) = app.post("/queue/rerun", Some(&token), &body).await;
    assert_eq!(
        (status, code(&got), message(&got)),
        (400, 1002, "User not found!")
    );
}

#[tokio::test]
async fn several_or_no_token_key_sources_refuse_to_start() {
    let refusal = |adjust: &dyn Fn(&mut Config)| {
        let mut config = crate::helpers::test_config();
        adjust(&mut config);
        let built = Application::build(config, false);
        built.err().expect("refused to start").to_string()
    };
    let both = refusal(&|c| c.tokens.public_key_file = Some(RSA_A_PUBLIC.into()));
    assert!(
        both.contains("JWT_SECRET and JWT_PUBLIC_KEY_FILE"),
        "{both}"
    );
    let none = refusal(&|c| c.tokens.secret = None);
    assert!(none.starts_with("no token key"), "{none}");
    let private = refusal(&|c| {
        c.tokens.secret = None;
        c.tokens.public_key_file = Some(RSA_A_PRIVATE.into());
    });
    assert!(private.contains("private key"), "{private}");
}

// ---------------------------------------------------------------- authorisation

#[tokio::test]
async fn queue_admin_may_rerun_for_another_user_and_plan_run_alone_may_not() {
    let app = spawn_app().await;
    let admin = app.token(1, &["PLAN_RUN", "QUEUE_ADMIN"]);
    let (status, body) = app
        .post("/queue/rerun", Some(&admin), &valid_rerun(true))
        .await;
    assert_eq!((status, code(&body)), (200, 0), "{body}");
    let admin_without_plan_run = app.token(1, &["QUEUE_ADMIN"]);
    let (status, body) = app
        .post(
            "/queue/rerun",
            Some(&admin_without_plan_run),
            &valid_rerun(true),
        )
        .await;
    assert_eq!((status, code(&body)), (403, 1010), "{body}");
    let other = app.token(21, &["PLAN_RUN"]);
    let (status, body) = app
        .post("/queue/rerun", Some(&other), &valid_rerun(true))
        .await;
    assert_eq!((status, code(&body)), (403, 1010), "{body}");
}

#[tokio::test]
async fn a_non_member_acting_for_itself_is_1010_and_an_inactive_user_1002() {
    let app = spawn_app().await;
    let mut body = valid_rerun(true);
    body["userId"] = json!(55); // member of project 8 only; plan 614 is project 7's
    let (status, got) = app
        .post("/queue/rerun", Some(&app.token(55, &["PLAN_RUN"])), &body)
        .await;
    assert_eq!((status, code(&got)), (403, 1010), "{got}");
    assert!(message(&got).starts_with("Access denied: "), "{got}");
    body["userId"] = json!(34); // inactive
    let (status, got) = app
        .post("/queue/rerun", Some(&app.token(34, &["PLAN_RUN"])), &body)
        .await;
    assert_eq!(
        (status, code(&got), message(&got)),
        (400, 1002, "User not found!")
    );
}

// ---------------------------------------------------------------- HTTP

/// Reads one HTTP response from `stream`: up to the end of its body (by
/// `Content-Length`) or the end of the connection, at most `within`.
async fn read_raw_response(stream: &mut TcpStream, within: Duration) -> String {
    let deadline = Instant::now() + within;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => buffer.extend_from_slice(&chunk[..n]),
        }
        let text = String::from_utf8_lossy(&buffer).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buffer).to_string()
}

fn raw_status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

fn raw_json(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|_| panic!("no JSON body in {response:?}"))
}

fn host_port(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// A good request is answered promptly while slow clients hold connections.
async fn assert_served_promptly(app: &TestApp) {
    let started = Instant::now();
    let (status, body) = app.rerun(&valid_rerun(true)).await;
    assert_eq!((status, code(&body)), (200, 0), "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "a good request took {:?} while slow clients were connected",
        started.elapsed()
    );
}

#[tokio::test]
async fn slow_headers_get_408_while_other_clients_are_served() {
    let app = spawn_app_with(|c| c.http.header_read_timeout = Duration::from_millis(700)).await;
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(host_port(&app)).await.unwrap();
        stream
            .write_all(b"POST /queue/rerun HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(stream);
    }
    assert_served_promptly(&app).await;
    for stream in &mut slow {
        let _ = stream.write_all(b"a").await; // still dribbling
    }
    for mut stream in slow {
        let response = read_raw_response(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(raw_status(&response), 408, "{response:?}");
    }
}

#[tokio::test]
async fn a_slow_body_gets_408_code_1001_while_other_clients_are_served() {
    let app = spawn_app_with(|c| c.http.body_read_timeout = Duration::from_millis(800)).await;
    let token = app.token(13, &["PLAN_RUN"]);
    let body = valid_rerun(true).to_string();
    let mut stream = TcpStream::connect(host_port(&app)).await.unwrap();
    let head = format!(
        "POST /queue/rerun HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // one byte every 100 ms: each arrives in time, the whole body never does
    let dribble = async {
        for byte in body.as_bytes().iter().take(30) {
            if stream.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let ((), ()) = tokio::join!(dribble, assert_served_promptly(&app));
    let response = read_raw_response(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(raw_status(&response), 408, "{response:?}");
    let got = raw_json(&response);
    assert_eq!(code(&got), 1001);
    assert_eq!(
        message(&got),
        "Invalid request: body not received within 800 ms"
    );
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert_eq!(app.counts().await.1, 0);
}

#[tokio::test]
async fn headers_over_the_limit_are_431_and_the_server_keeps_serving() {
    let app = spawn_app_with(|c| c.http.header_limit = 4096).await;
    let token = app.token(13, &["PLAN_RUN"]);
    let response = app
        .post_raw("/queue/rerun")
        .bearer_auth(&token)
        .header("x-padding", "p".repeat(5000))
        .json(&valid_rerun(true))
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!((status, code(&body)), (431, 1001), "{body}");
    assert_eq!(
        message(&body),
        "Invalid request: headers larger than 4096 bytes"
    );
    // beyond actix's own limits (128 KiB head, 96 headers): a bare 431
    for head in [
        format!("X-Huge: {}\r\n", "h".repeat(140 * 1024)),
        (0..120)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>(),
    ] {
        let mut stream = TcpStream::connect(host_port(&app)).await.unwrap();
        let request = format!("GET /health HTTP/1.1\r\nHost: x\r\n{head}\r\n");
        let _ = stream.write_all(request.as_bytes()).await;
        let response = read_raw_response(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(
            raw_status(&response),
            431,
            "{}",
            &response[..response.len().min(200)]
        );
    }
    assert_served_promptly(&app).await;
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413_code_1001() {
    let app = spawn_app_with(|c| c.http.body_limit = 1024).await;
    let token = app.token(13, &["PLAN_RUN"]);
    let mut stream = TcpStream::connect(host_port(&app)).await.unwrap();
    let head = format!(
        "POST /queue/rerun HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..4 {
        let chunk = " ".repeat(512);
        let _ = stream
            .write_all(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes())
            .await;
    }
    let response = read_raw_response(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(raw_status(&response), 413, "{response:?}");
    let got = raw_json(&response);
    assert_eq!(
        (code(&got), message(&got)),
        (1001, "Invalid request: body larger than 1024 bytes")
    );
}

#[tokio::test]
async fn hostile_json_is_1001_and_never_a_server_error() {
    let app = spawn_app().await;
    let token = app.token(13, &["PLAN_RUN"]);
    let deep = format!(
        "{{\"planId\": {}1{}}}",
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    let deep_object = format!("{}{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let bodies: Vec<Vec<u8>> = vec![
        br#"{"planId": 99999999999999999999999999999, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111}"#.to_vec(),
        br#"{"planId": 9223372036854775808, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111}"#.to_vec(),
        br#"{"planId": 1e400, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111}"#.to_vec(),
        br#"{"planId": 614.0, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111}"#.to_vec(),
        br#"{"planId": 614, "userId": 13.5, "frameworkType": "APPIUM", "scenarioId": 111}"#.to_vec(),
        br#"{"planId": 614, "userId": -0, "frameworkType": "APPIUM", "scenarioId": 111}"#.to_vec(),
        br#"{"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioId": NaN}"#.to_vec(),
        br#"{"planId": 614, "planId": 615, "userId": 13, "frameworkType": "APPIUM", "scenarioId": 111}"#.to_vec(),
        br#"{"planId": 614, "userId": 13, "frameworkType": "APPIUM", "scenarioEnvironmentPairs": [{"scenarioId": 111, "scenarioId": 112}]}"#.to_vec(),
        b"{\"planId\": 614, \"userId\": 13, \"frameworkType\": \"APP\xffIUM\", \"scenarioId\": 111}".to_vec(),
        br#"{"planId": 614, "userId": 13, "frameworkType": "\ud800", "scenarioId": 111}"#.to_vec(),
        b"\xef\xbb\xbf{\"planId\": 614}".to_vec(),
        b"{\"planId\": 614\x00}".to_vec(),
        deep.into_bytes(),
        deep_object.into_bytes(),
        b"".to_vec(),
        b"null".to_vec(),
        b"\"text\"".to_vec(),
        b"{} {}".to_vec(),
    ];
    for body in bodies {
        let response = app
            .post_raw("/queue/rerun")
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let shown = String::from_utf8_lossy(&body[..body.len().min(80)]).to_string();
        let (status, got) = read(response).await;
        assert_eq!((status, code(&got)), (400, 1001), "{shown}: {got}");
        assert!(
            message(&got).starts_with("Invalid request: "),
            "{shown}: {got}"
        );
    }
    assert_served_promptly(&app).await;
    assert_eq!(app.counts().await.1, 0);
}

// ---------------------------------------------------------------- leaks

#[tokio::test]
async fn a_500_leaks_no_sql_path_secret_or_token_in_body_or_logs() {
    let app = spawn_app().await;
    app.sql("ALTER TABLE users RENAME TO users_gone").await;
    let token = app.token(13, &["PLAN_RUN"]);
    let bad_token = format!("{}x", app.token(13, &["PLAN_RUN", "QUEUE_ADMIN"]));
    let (status, body) = app
        .post("/queue/rerun", Some(&token), &valid_rerun(true))
        .await;
    assert_eq!((status, code(&body)), (500, 1099));
    assert_eq!(message(&body), "INTERNAL_SERVER_ERROR");
    let (status, _, _) = send_with_token(&app, &bad_token).await;
    assert_eq!(status, 401);
    let secrets = [
        crate::helpers::JWT_SECRET,
        token.as_str(),
        bad_token.as_str(),
    ];
    assert_no_leak(&body.to_string(), &secrets);
    assert_no_leak(&body.to_string(), &["users"]);
    let lines = logs();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("internal error") && l.contains("users")),
        "the cause of the 500 is logged for operators"
    );
    assert!(lines.iter().any(|l| l.contains("bearer token refused")));
    for line in &lines {
        assert_no_leak(line, &secrets);
        // no signature or payload part of a token either
        for part in token.split('.').chain(bad_token.split('.')) {
            assert!(!line.contains(part), "a token part leaked in {line:?}");
        }
    }
}
