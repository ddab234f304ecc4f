//! The "nothing lost" ledger: a couple of thousand reruns while the broker
//! connection is cut again and again; every accepted pair must arrive.

use crate::helpers::{pair_body, spawn_app_with, DEMO_PAIRS};
use crate::proxy::{Mode, Proxy};
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

const RERUNS: usize = 2000;
const CUTS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_reruns_with_the_broker_cut_six_times_lose_nothing() {
    let proxy = Proxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let app = spawn_app_with(|c| {
        c.amqp.url = proxy.amqp_url();
        // ~330 reruns of each pair, far beyond the default 50 attempts
        c.limits.max_attempts = 1000;
    })
    .await;
    app.wait_ready(&app.address, 200).await;
    let token = app.token(13, &["PLAN_RUN"]);

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cutter = {
        let done = done.clone();
        let proxy = &proxy;
        async move {
            let mut cuts = 0;
            while cuts < CUTS && !done.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(400)).await;
                proxy.reset_all();
                cuts += 1;
            }
            cuts
        }
    };
    let load = async {
        let answers: Vec<(u16, serde_json::Value)> = futures_util::stream::iter(0..RERUNS)
            .map(|i| {
                let (s, e) = DEMO_PAIRS[i % DEMO_PAIRS.len()];
                let body = pair_body(s, e);
                let request = app.post_raw("/queue/rerun").bearer_auth(&token).json(&body);
                async move { crate::helpers::read(request.send().await.unwrap()).await }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        answers
    };
    let (answers, cuts) = tokio::join!(load, cutter);
    proxy.set(Mode::Forward);

    let mut ledger = HashSet::new();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        ledger.insert(
            body["data"]["queued"][0]["messageId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let started = Instant::now();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut unknown = 0;
    while seen.len() < ledger.len() && started.elapsed() < Duration::from_secs(60) {
        for m in app.consume("APPIUM", 5000, Duration::from_secs(2)).await {
            let id = m.message_id.unwrap();
            if !ledger.contains(&id) {
                unknown += 1;
            }
            *seen.entry(id).or_default() += 1;
        }
    }
    let delivered: usize = seen.values().sum();
    let lost = ledger.iter().filter(|id| !seen.contains_key(*id)).count();
    let duplicates = delivered - seen.len();
    println!(
        "nothing-lost ledger: accepted={} delivered={} unique={} duplicates={} lost={} unknown={} broker cuts={}",
        ledger.len(),
        delivered,
        seen.len(),
        duplicates,
        lost,
        unknown,
        cuts
    );
    assert_eq!(ledger.len(), RERUNS);
    assert!(
        cuts >= 3,
        "the connection was cut several times while reruns came in"
    );
    assert_eq!(lost, 0, "every accepted pair was delivered");
    assert_eq!(
        unknown, 0,
        "every duplicate carries an already-seen messageId"
    );
}
