//! The page for testers at `/`, in a real browser: headless Chromium driven
//! through chromedriver (WebDriver) by `fantoccini`, against a real server,
//! database, broker and `plan-queue runner`. Each test saves screenshots of
//! the pages it visits under `target/screenshots/`, at 1280 px and at a
//! phone's 390 px. Skipped (with a SKIPPED line) when chromium or
//! chromedriver is not installed.
//! Also: cancel in flight (section 16), the flakiness heat map of a history
//! with automatic retries (sections 18 and 19), and a gateway that injects
//! `Authorization` in front of the page.

use crate::helpers::{code, plan_queue, read, spawn_app, spawn_app_with, TestApp, JWT_SECRET};
use crate::results::wait_consumer;
use crate::retries::history_run;
use crate::runner::start_runner;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Chromium's flags for a test besides `--headless`: no sandbox (tests may
/// run as root), no network of its own, no first-run work.
pub(crate) const CHROMIUM_FLAGS: &[&str] = &[
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
];

/// The first of `names` found on `PATH`.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|path| path.is_file())
}

/// A headless Chromium session through a chromedriver of its own; the
/// driver and the browser it started (one process group) are killed on drop.
struct Browser {
    client: Client,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a browser session, or `None` (after printing
    /// SKIPPED for `test`) when chromium or chromedriver is missing.
    async fn start(test: &str) -> Option<Browser> {
        let (Some(_), Some(chromedriver)) = (
            on_path(&["chromium", "chromium-browser", "google-chrome"]),
            on_path(&["chromedriver"]),
        ) else {
            println!(
                "SKIPPED {test}: chromium or chromedriver is not on PATH \
                 (apt-get install chromium chromium-driver)"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("start chromedriver")
        };
        let profile =
            std::env::temp_dir().join(format!("plan-queue-page-{}", uuid::Uuid::new_v4()));
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push("--headless=new".to_owned());
        args.push(format!("--user-data-dir={}", profile.display()));
        args.push("--window-size=1280,900".to_owned());
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".to_owned(), json!({ "args": args }));
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        let client = loop {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if started.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no WebDriver session: {e}"),
            }
        };
        Some(Browser {
            client,
            driver,
            profile,
        })
    }

    /// Ends the session (the browser exits), then the driver.
    async fn finish(self) {
        let _ = self.client.clone().close().await;
    }

    /// Evaluates `expression` in the page.
    async fn eval(&self, expression: &str) -> Value {
        self.client
            .execute(&format!("return {expression};"), vec![])
            .await
            .unwrap_or_else(|e| panic!("{expression}: {e}"))
    }

    /// Waits until `expression` is truthy in the page; panics naming `what`.
    async fn wait_for(&self, expression: &str, within: Duration, what: &str) {
        let started = Instant::now();
        loop {
            let value = self
                .client
                .execute(&format!("return !!({expression});"), vec![])
                .await;
            if matches!(value, Ok(Value::Bool(true))) {
                return;
            }
            assert!(
                started.elapsed() < within,
                "{what}: not within {within:?}; page text: {}",
                self.eval("document.body.innerText").await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a screenshot as `target/screenshots/<name>-<width>.png` at each
    /// width (desktop and phone), then restores the desktop width.
    async fn screenshots(&self, name: &str) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        for (width, height) in [(390, 844), (1280, 900)] {
            self.client.set_window_size(width, height).await.unwrap();
            tokio::time::sleep(Duration::from_millis(250)).await;
            let png = self.client.screenshot().await.unwrap();
            std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
        }
    }

    /// Opens `url` and waits until `ready` is truthy in it.
    async fn visit(&self, url: &str, ready: &str, what: &str) {
        self.client.goto(url).await.unwrap();
        self.wait_for(ready, Duration::from_secs(10), what).await;
    }

    /// Clicks the element `css` selects.
    async fn click(&self, css: &str) {
        let element = self.client.find(Locator::Css(css)).await;
        element
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// The rendered text of the element `css` selects.
    async fn text(&self, css: &str) -> String {
        let text = self
            .client
            .execute(
                "return document.querySelector(arguments[0]).innerText;",
                vec![json!(css)],
            )
            .await;
        text.unwrap_or_else(|e| panic!("no {css}: {e}"))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Presses `key` on whatever has the focus.
    async fn press(&self, key: Key) {
        let focused = self.client.active_element().await.unwrap();
        focused
            .send_keys(&char::from(key).to_string())
            .await
            .unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // the driver and the browser it started share the driver's process group
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `GET path` through the API as user 13 with `PLAN_READ`: the `data`.
async fn api_data(app: &TestApp, path: &str) -> Value {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(app.token(13, &["PLAN_READ"]))
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, 200, "{path}: {body}");
    body["data"].clone()
}

/// The consolidated results of plan 614 through the API.
async fn results_614(app: &TestApp) -> Value {
    api_data(app, "/plans/614/results").await
}

/// Waits until plan 614's consolidated counts have `passed` and `failed`.
async fn wait_for_counts(app: &TestApp, passed: i64, failed: i64) {
    let started = Instant::now();
    loop {
        let counts = results_614(app).await["counts"].clone();
        if counts["PASSED"] == passed && counts["FAILED"] == failed {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the runner never brought plan 614 to {passed} PASSED, {failed} FAILED: {counts}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs plan 614 (its twelve pairs) as user 13 through the API; the run's id.
async fn run_614(app: &TestApp) -> i64 {
    let (status, body) = app
        .post(
            "/queue/run",
            Some(&app.token(13, &["PLAN_RUN"])),
            &json!({"planId": 614, "userId": 13}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["executionId"].as_i64().unwrap()
}

/// Runs plan 614 and has `plan-queue runner` fail "Checkout with saved
/// card" (scenario 113) on its three environments and pass the nine other
/// pairs: the demo run the page shows.
async fn demo_run(app: &TestApp) {
    run_614(app).await;
    let mut runner = start_runner(app, r#"test "$PQ_SCENARIO_ID" != 113"#);
    wait_for_counts(app, 9, 3).await;
    runner.kill().unwrap();
    runner.wait().unwrap();
}

/// The `aria-label` of every cell of the grid (`<scenario> on <environment>:
/// <status>, attempt <n>…`), sorted.
async fn cell_labels(browser: &Browser) -> Vec<String> {
    let labels = browser
        .eval("[...document.querySelectorAll('#grid button.cell')].map(b => b.getAttribute('aria-label')).sort()")
        .await;
    serde_json::from_value(labels).unwrap()
}

const FAILED_CELLS: [&str; 3] = [
    "Checkout with saved card on Galaxy S23: FAILED, attempt 1",
    "Checkout with saved card on Pixel 8: FAILED, attempt 1",
    "Checkout with saved card on iPhone 15: FAILED, attempt 1",
];

/// Seconds a page gets to show what the test waits for.
const SHOWN_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_tester_signs_in_reruns_what_failed_and_watches_the_grid_turn_green() {
    let test = "a_tester_signs_in_reruns_what_failed_and_watches_the_grid_turn_green";
    let Some(browser) = Browser::start(test).await else {
        return;
    };
    let app = spawn_app().await;
    demo_run(&app).await;
    let at = |fragment: &str| format!("{}/{fragment}", app.address);

    // sign in by pasting a token
    let form = "document.getElementById('token-input')";
    browser.visit(&at(""), form, "the sign-in form").await;
    browser.screenshots("sign-in").await;
    let input = browser.client.find(Locator::Id("token-input")).await;
    let token = app.token(13, &["PLAN_RUN"]);
    input.unwrap().send_keys(&token).await.unwrap();
    browser.click("#signin-form button[type=submit]").await;
    let listed = "document.querySelector('[data-plan=\"614\"]')";
    browser
        .wait_for(listed, SHOWN_WITHIN, "plan 614 listed")
        .await;
    let plans = browser.text("main").await;
    assert!(plans.contains("Checkout smoke"), "{plans}");
    assert!(
        plans.contains("Web smoke"),
        "13 is in both projects: {plans}"
    );
    assert!(
        plans.contains("9 PASSED") && plans.contains("3 FAILED"),
        "{plans}"
    );
    assert_eq!(browser.eval("sessionStorage.length").await, 1);
    browser.screenshots("plans").await;

    // the grid: 9 PASSED and 3 FAILED, named
    browser.click("[data-plan=\"614\"] a").await;
    let grid = "document.querySelectorAll('#grid button.cell').length === 12";
    browser
        .wait_for(grid, SHOWN_WITHIN, "the grid of plan 614")
        .await;
    let labels = cell_labels(&browser).await;
    let failed: Vec<&String> = labels.iter().filter(|l| l.contains("FAILED")).collect();
    assert_eq!(
        failed,
        FAILED_CELLS.iter().collect::<Vec<_>>(),
        "{labels:?}"
    );
    let passed = labels.iter().filter(|l| l.contains(": PASSED, attempt 1"));
    assert_eq!(passed.count(), 9, "{labels:?}");
    let login = "Login with valid credentials on iPhone 15: PASSED, attempt 1";
    assert!(labels.contains(&login.to_owned()), "{labels:?}");
    let headers = browser
        .eval("[...document.querySelectorAll('#grid thead th')].map(t => t.innerText.split('\\n')[0])")
        .await;
    let expected = [
        "Scenario \\ Environment",
        "Pixel 8",
        "iPhone 15",
        "Galaxy S23",
    ];
    assert_eq!(headers, json!(expected));
    let text = browser.text("#grid").await;
    assert_eq!(
        text.matches("FAILED").count(),
        3,
        "status as text too: {text}"
    );

    // keyboard: Tab from the toolbar reaches a cell; Space selects it and
    // opens its attempts
    browser.eval("document.getElementById('run').focus()").await;
    let mut tabs = 0;
    let on_cell = "document.activeElement.classList.contains('cell')";
    while browser.eval(on_cell).await != json!(true) {
        browser.press(Key::Tab).await;
        tabs += 1;
        assert!(tabs < 30, "Tab never reached a cell of the grid");
    }
    let outline = "getComputedStyle(document.activeElement).outlineStyle";
    assert_ne!(
        browser.eval(outline).await,
        json!("none"),
        "no visible focus"
    );
    let pressed = "document.activeElement.getAttribute('aria-pressed')";
    browser.press(Key::Space).await;
    assert_eq!(browser.eval(pressed).await, json!("true"));
    let attempts = "document.querySelector('#attempts .attempt')";
    browser
        .wait_for(attempts, SHOWN_WITHIN, "the cell's attempts")
        .await;
    let panel = browser.text("#panel").await;
    assert!(panel.contains("Attempt 1"), "{panel}");
    browser.screenshots("plan-grid").await;
    browser.press(Key::Space).await;
    assert_eq!(browser.eval(pressed).await, json!("false"));

    // "Rerun failed" queues exactly the three failed pairs
    browser.eval("window.sameDocument = true").await;
    browser.click("#rerun-failed").await;
    let queued = "document.querySelectorAll('#grid button.cell.s-QUEUED').length === 3";
    browser
        .wait_for(queued, SHOWN_WITHIN, "three queued cells")
        .await;
    let results = results_614(&app).await;
    let mut queued: Vec<(i64, i64, i64)> = results["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"] == "QUEUED")
        .map(|p| {
            let id = |name: &str| p[name].as_i64().unwrap();
            (id("scenarioId"), id("environmentId"), id("attempt"))
        })
        .collect();
    queued.sort();
    assert_eq!(queued, [(113, 222, 2), (113, 223, 2), (113, 224, 2)]);
    let rerun = results["pairs"][6]["executionId"].as_i64().unwrap();
    let execution = api_data(&app, &format!("/executions/{rerun}")).await;
    assert_eq!(execution["kind"], "RERUN");
    assert_eq!(execution["pairs"].as_array().unwrap().len(), 3);
    let notice = browser.text("#notice").await;
    assert!(notice.contains("3 pairs"), "{notice}");

    // the runner reports; the grid turns green without a reload
    let mut runner = start_runner(&app, "true");
    let green = "document.querySelectorAll('#grid button.cell.s-PASSED').length === 12";
    let wait = browser.wait_for(green, Duration::from_secs(30), "a green grid");
    wait.await;
    runner.kill().unwrap();
    runner.wait().unwrap();
    let same = browser.eval("window.sameDocument").await;
    assert_eq!(same, json!(true), "the page was reloaded");
    let labels = cell_labels(&browser).await;
    let rerun_cell = "Checkout with saved card on Pixel 8: PASSED, attempt 2, flaky";
    assert!(labels.contains(&rerun_cell.to_owned()), "{labels:?}");
    browser.screenshots("plan-grid-green").await;

    // the history, an execution, the flakiness view (not served yet)
    let rows = "document.querySelectorAll('#history tbody tr').length >= 4";
    browser
        .visit(&at("#/plans/614/history"), rows, "the history")
        .await;
    let older = browser.eval("getComputedStyle(document.getElementById('older')).display");
    assert_eq!(
        older.await,
        json!("none"),
        "four executions fit on one page"
    );
    let newest = browser.text("#history tbody tr").await;
    assert!(
        newest.contains(&format!("#{rerun}")),
        "newest first: {newest}"
    );
    browser.screenshots("history").await;
    let rows = "document.querySelectorAll('main table.list tbody tr').length === 3";
    let execution = at(&format!("#/executions/{rerun}"));
    browser.visit(&execution, rows, "the rerun's pairs").await;
    let pairs = browser.text("main table.list").await;
    assert!(pairs.contains("Checkout with saved card"), "{pairs}");
    browser.screenshots("execution").await;
    browser.finish().await;
}

/// Signs `browser` in as user 13 (`PLAN_RUN`) through the link that
/// `plan-queue token --link` prints, then opens `fragment` of the page
/// and waits until `ready` is truthy.
async fn open_signed_in(browser: &Browser, app: &TestApp, fragment: &str, ready: &str) {
    let token = app.token(13, &["PLAN_RUN"]);
    let listed = "document.querySelector('[data-plan=\"614\"]')";
    let link = format!("{}/#token={token}", app.address);
    browser.visit(&link, listed, "the plans list").await;
    let page = format!("{}/{fragment}", app.address);
    browser.visit(&page, ready, fragment).await;
}

#[tokio::test]
async fn cancel_ends_a_queued_pair() {
    let test = "cancel_ends_a_queued_pair";
    let Some(browser) = Browser::start(test).await else {
        return;
    };
    let app = spawn_app().await;
    // the fixture's last run (4980) of six pairs
    let grid = "document.querySelectorAll('#grid button.cell').length === 6";
    open_signed_in(&browser, &app, "#/plans/614", grid).await;
    let cancel_disabled = "document.getElementById('cancel').disabled";
    let disabled = browser.eval(cancel_disabled).await;
    assert_eq!(disabled, json!(true), "nothing in flight yet");

    // run the plan from the page; no runner: every pair stays queued
    browser.click("#run").await;
    let queued = "document.querySelectorAll('#grid button.cell.s-QUEUED').length === 12";
    browser
        .wait_for(queued, SHOWN_WITHIN, "twelve queued cells")
        .await;
    let enabled = "!document.getElementById('cancel').disabled";
    browser
        .wait_for(
            enabled,
            SHOWN_WITHIN,
            "cancel enabled while pairs are queued",
        )
        .await;
    let run = results_614(&app).await["sourceExecutionId"].clone();

    browser.click("#cancel").await;
    let aborted = "document.querySelectorAll('#grid button.cell.s-ABORTED').length === 12";
    browser
        .wait_for(aborted, SHOWN_WITHIN, "twelve aborted cells")
        .await;
    let notice = browser.text("#notice").await;
    assert!(notice.contains("Cancelled 12 pairs"), "{notice}");
    let labels = cell_labels(&browser).await;
    let login = "Login with valid credentials on iPhone 15: ABORTED, attempt 1, cancelled";
    assert!(labels.contains(&login.to_owned()), "{labels:?}");
    let text = browser.text("#grid").await;
    assert_eq!(
        text.matches("cancelled").count(),
        12,
        "said in text: {text}"
    );
    let disabled = browser.eval(cancel_disabled).await;
    assert_eq!(disabled, json!(true), "nothing left in flight");
    browser.screenshots("plan-grid-cancelled").await;

    // the API agrees: the same run, every pair ABORTED for CANCELLED
    let results = results_614(&app).await;
    assert_eq!(results["sourceExecutionId"], run);
    assert_eq!(results["counts"]["ABORTED"], 12, "{results}");
    for pair in results["pairs"].as_array().unwrap() {
        assert_eq!(pair["status"], "ABORTED", "{pair}");
        assert_eq!(pair["reason"], "CANCELLED", "{pair}");
    }
    let execution = api_data(&app, &format!("/executions/{run}")).await;
    assert_eq!(execution["status"], "FINISHED");

    // a cell's attempts say why it ended
    browser.click("#grid button.cell").await;
    let reason = "document.querySelector('#attempts .attempt dl')";
    browser
        .wait_for(reason, SHOWN_WITHIN, "the cell's attempts")
        .await;
    let panel = browser.text("#panel").await;
    assert!(panel.contains("CANCELLED (cancelled)"), "{panel}");

    // an execution's own cancel, from its page
    let second = run_614(&app).await;
    let button = "document.getElementById('cancel-execution')";
    let page = format!("#/executions/{second}");
    open_signed_in(&browser, &app, &page, button).await;
    browser.click("#cancel-execution").await;
    let ended = "document.querySelectorAll('main table.list .s-ABORTED').length === 12 \
                 && !document.getElementById('cancel-execution')";
    browser
        .wait_for(ended, SHOWN_WITHIN, "the execution cancelled")
        .await;
    let pairs = browser.text("main table.list").await;
    assert_eq!(pairs.matches("cancelled").count(), 12, "{pairs}");
    let execution = api_data(&app, &format!("/executions/{second}")).await;
    assert_eq!(execution["status"], "FINISHED");
    assert_eq!(execution["counts"]["ABORTED"], 12, "{execution}");
    browser.screenshots("execution-cancelled").await;
    browser.finish().await;
}

#[tokio::test]
async fn the_flakiness_view_marks_the_suspect_environment_of_a_prepared_history() {
    let test = "the_flakiness_view_marks_the_suspect_environment_of_a_prepared_history";
    let Some(browser) = Browser::start(test).await else {
        return;
    };
    let app = spawn_app_with(|_| {}).await;
    wait_consumer(&app).await;
    // as in tests/api/retries.rs: three full runs of scenario 113 on iPhone
    // 15 (223) and Galaxy S23 (224), each with one automatic retry; 223
    // fails first and passes on its retry every time, 224 once
    type Reports<'a> = &'a [(i64, &'a str)];
    let fail_then_pass: &[(Reports, Reports)] = &[
        (&[(223, "FAILED"), (224, "PASSED")], &[(223, "PASSED")]),
        (&[(223, "FAILED"), (224, "PASSED")], &[(223, "PASSED")]),
        (
            &[(223, "ERROR"), (224, "FAILED")],
            &[(223, "PASSED"), (224, "PASSED")],
        ),
    ];
    for (first, then) in fail_then_pass {
        history_run(&app, first, then).await;
    }
    let figures = api_data(&app, "/plans/614/flakiness?runs=3").await;
    let suspects: Vec<&Value> = figures["environments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["suspect"] == true)
        .collect();
    assert_eq!(suspects.len(), 1, "{figures}");
    assert_eq!(suspects[0]["environmentId"], 223);

    let map = "document.querySelector('#heat-map')";
    open_signed_in(&browser, &app, "#/plans/614/flakiness?runs=3", map).await;
    let cell = |key: &str| format!("#heat-map td[data-key=\"{key}\"]");
    assert_eq!(browser.text(&cell("113:223")).await, "3/3");
    assert_eq!(browser.text(&cell("113:224")).await, "1/3");
    let label = browser
        .eval("document.querySelector('#heat-map td[data-key=\"113:223\"]').getAttribute('aria-label')")
        .await;
    assert_eq!(
        label,
        json!("Checkout with saved card on iPhone 15: flaky in 3 of 3 runs, failed first in 3")
    );
    assert_eq!(
        browser
            .eval("document.querySelector('#heat-map td[data-key=\"113:223\"]').className")
            .await,
        json!("h7"),
        "the darkest shade for a pair flaky in every run"
    );
    let marked = browser
        .eval("[...document.querySelectorAll('#heat-map thead th.suspect')].map(t => t.dataset.environment + ' ' + t.innerText.replace(/\\s+/g, ' ').trim())")
        .await;
    assert_eq!(marked, json!(["223 iPhone 15 ⚠ suspect"]));
    let said = browser.text("#suspects").await;
    assert!(said.contains("Suspect environment: iPhone 15"), "{said}");
    browser.screenshots("flakiness").await;

    // all runs (the fixture's two as well): 113 on 223 flaky in 3 of 4
    let all = "document.querySelector('#heat-map td[data-key=\"113:223\"]')?.innerText === '3/4'";
    open_signed_in(&browser, &app, "#/plans/614/flakiness", all).await;
    let marked = browser
        .eval("[...document.querySelectorAll('#heat-map thead th.suspect')].map(t => t.dataset.environment)")
        .await;
    assert_eq!(marked, json!(["223"]));

    // the history says which executions were automatic retries, and of what
    let retries = "document.querySelectorAll('#history .t-RETRY').length === 3";
    open_signed_in(&browser, &app, "#/plans/614/history", retries).await;
    let page = api_data(&app, "/plans/614/executions?limit=20").await;
    let rows = browser
        .eval("[...document.querySelectorAll('#history tbody tr')].map(r => r.querySelector('.trig').innerText.trim())")
        .await;
    let expected: Vec<String> = page["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| match x["retryOf"].as_i64() {
            Some(of) => format!("RETRY of #{of}"),
            None => x["trigger"].as_str().unwrap().to_owned(),
        })
        .collect();
    assert_eq!(rows, json!(expected));
    assert!(expected.iter().filter(|t| *t == "USER").count() >= 3);
    browser.screenshots("history-retries").await;
    browser.click("#history .t-RETRY + a").await;
    let retried = page["executions"][0]["retryOf"].as_i64().unwrap();
    let opened =
        format!("document.querySelector('main h1')?.innerText.startsWith('Execution #{retried}')");
    browser
        .wait_for(&opened, SHOWN_WITHIN, "the retried execution")
        .await;
    let said = browser.text("main > p").await;
    assert!(said.starts_with("USER"), "{said}");
    browser.screenshots("execution-retried").await;
    browser.finish().await;
}

/// A gateway in front of the page, as a company's single sign-on proxy:
/// forwards every request to `app` with `Authorization: Bearer <token>`
/// added. The address it listens on.
async fn gateway(app: &TestApp, token: String) -> String {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    struct Upstream {
        address: String,
        token: String,
        client: reqwest::Client,
    }
    async fn forward(
        request: HttpRequest,
        body: web::Bytes,
        upstream: web::Data<Upstream>,
    ) -> HttpResponse {
        let url = format!("{}{}", upstream.address, request.uri());
        let method = request.method().as_str().parse().unwrap();
        let mut outgoing = upstream.client.request(method, url).body(body.to_vec());
        for (name, value) in request.headers() {
            if name != "host" && name != "authorization" {
                outgoing = outgoing.header(name.as_str(), value.as_bytes());
            }
        }
        let answer = outgoing.bearer_auth(&upstream.token).send().await.unwrap();
        let mut reply = HttpResponse::build(
            actix_web::http::StatusCode::from_u16(answer.status().as_u16()).unwrap(),
        );
        for (name, value) in answer.headers() {
            if name != "content-length" && name != "transfer-encoding" {
                let value = actix_web::http::header::HeaderValue::from_bytes(value.as_bytes());
                reply.insert_header((name.as_str(), value.unwrap()));
            }
        }
        reply.body(answer.bytes().await.unwrap())
    }
    let upstream = web::Data::new(Upstream {
        address: app.address.clone(),
        token,
        client: reqwest::Client::new(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(upstream.clone())
            .default_service(web::to(forward))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let address = format!("http://{}", server.addrs()[0]);
    tokio::spawn(server.run());
    address
}

#[tokio::test]
async fn behind_a_gateway_that_injects_authorization_the_page_needs_no_sign_in() {
    let test = "behind_a_gateway_that_injects_authorization_the_page_needs_no_sign_in";
    let Some(browser) = Browser::start(test).await else {
        return;
    };
    let app = spawn_app().await;
    demo_run(&app).await;
    let gateway = gateway(&app, app.token(13, &["PLAN_RUN"])).await;

    let listed = "document.querySelector('[data-plan=\"614\"]')";
    browser
        .visit(&format!("{gateway}/"), listed, "plans through the gateway")
        .await;
    assert_eq!(
        browser.eval("sessionStorage.length").await,
        json!(0),
        "no token kept"
    );
    assert_eq!(
        browser.eval("document.getElementById('token-input')").await,
        Value::Null,
        "no sign-in form"
    );
    let grid = "document.querySelectorAll('#grid button.cell').length === 12";
    browser
        .visit(
            &format!("{gateway}/#/plans/614"),
            grid,
            "the grid through the gateway",
        )
        .await;
    let labels = cell_labels(&browser).await;
    let failed: Vec<&String> = labels.iter().filter(|l| l.contains("FAILED")).collect();
    assert_eq!(
        failed,
        FAILED_CELLS.iter().collect::<Vec<_>>(),
        "{labels:?}"
    );

    // without the gateway, the same browser is asked to sign in
    let form = "document.getElementById('token-input')";
    browser
        .visit(&format!("{}/", app.address), form, "the sign-in form")
        .await;
    browser.finish().await;
}

#[tokio::test]
async fn a_user_of_another_project_sees_no_plan_of_ours() {
    let test = "a_user_of_another_project_sees_no_plan_of_ours";
    let Some(browser) = Browser::start(test).await else {
        return;
    };
    let app = spawn_app().await;
    // the link that `plan-queue token --link` prints, for the web team's lead
    let bind_addr = app.address.trim_start_matches("http://");
    let output = plan_queue(
        &["token", "--user-id", "55", "--link"],
        &[("JWT_SECRET", JWT_SECRET), ("BIND_ADDR", bind_addr)],
    );
    assert!(output.status.success(), "{output:?}");
    let link = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(
        link.starts_with(&format!("{}/#token=", app.address)),
        "{link}"
    );
    let listed = "document.querySelector('[data-plan]')";
    browser.visit(&link, listed, "the plans list").await;
    let url = browser.client.current_url().await.unwrap();
    assert!(
        !url.as_str().contains("token"),
        "token left in the address: {url}"
    );
    let shown = browser
        .eval("[...document.querySelectorAll('[data-plan]')].map(c => c.dataset.plan)")
        .await;
    assert_eq!(shown, json!(["700"]), "only the plan of project 8");
    let text = browser.text("main").await;
    assert!(!text.contains("Checkout smoke"), "{text}");
    let refused = "document.querySelector('main .notice.error')";
    let ours = format!("{}/#/plans/614", app.address);
    browser.visit(&ours, refused, "a refusal").await;
    let text = browser.text("main").await;
    assert!(text.contains("Plan not found!"), "{text}");
    assert!(!text.contains("Checkout"), "{text}");
    browser.screenshots("foreign-plan").await;
    browser.finish().await;
}

#[tokio::test]
async fn the_page_and_its_assets_answer_head_and_wrong_methods_as_the_api_does() {
    let app = spawn_app().await;
    let send = |method: &str, path: &str| {
        app.client
            .request(method.parse().unwrap(), format!("{}{path}", app.address))
            .send()
    };
    let page = send("GET", "/").await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    assert!(page.text().await.unwrap().contains("/ui/app.js"));
    for (path, content_type) in [
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let got = send("GET", path).await.unwrap();
        assert_eq!(got.status(), 200, "{path}");
        assert_eq!(got.headers()["content-type"], content_type, "{path}");
    }
    for path in ["/", "/ui/app.js", "/plans", "/plans/614"] {
        let head = send("HEAD", path).await.unwrap();
        let status = head.status().as_u16();
        assert!(status == 200 || status == 401, "HEAD {path}: {status}");
        assert_eq!(head.text().await.unwrap(), "", "HEAD {path} has no body");
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let wrong = send(method, path).await.unwrap();
            assert_eq!(wrong.headers()["allow"], "GET, HEAD", "{method} {path}");
            let (status, body) = read(wrong).await;
            assert_eq!(
                (status, code(&body)),
                (405, 1001),
                "{method} {path}: {body}"
            );
        }
    }
    for path in ["/ui/missing.js", "/ui/", "/ui/app.js/x"] {
        let (status, body) = read(send("GET", path).await.unwrap()).await;
        assert_eq!((status, code(&body)), (404, 1001), "{path}: {body}");
    }
}

/// Plan 9000 of project 7: 200 scenarios × 10 environments, one full run
/// 900000 whose 2 000 pairs are PASSED, every tenth FAILED, and the last ten
/// still QUEUED (so the page polls as while pairs run).
const LARGE_PLAN_SQL: &str = "
INSERT INTO scenarios (id, project_id, name)
     SELECT 100000 + s, 7, 'Scenario number ' || s || ' of the large plan'
       FROM generate_series(1, 200) s;
INSERT INTO environments (id, name, platform, version)
     SELECT 9000 + e, 'Device ' || e, 'ANDROID', '1' || e FROM generate_series(1, 10) e;
INSERT INTO plans (id, project_id, name, framework_type)
     VALUES (9000, 7, 'Large plan (200 x 10)', 'APPIUM');
INSERT INTO plan_scenarios (plan_id, scenario_id)
     SELECT 9000, 100000 + s FROM generate_series(1, 200) s;
INSERT INTO plan_environments (plan_id, environment_id)
     SELECT 9000, 9000 + e FROM generate_series(1, 10) e;
INSERT INTO executions (id, plan_id, kind, requested_by, framework_type, requested_at,
                        started_at, open_pairs)
     VALUES (900000, 9000, 'RUN', 13, 'APPIUM', now(), now(), 10);
INSERT INTO execution_pairs (execution_id, scenario_id, environment_id, status, attempt,
                             source_execution_id, started_at, finished_at, duration_ms)
     SELECT 900000, 100000 + s, 9000 + e,
            CASE WHEN s = 200 THEN 'QUEUED' WHEN (s * 10 + e) % 10 = 3 THEN 'FAILED'
                 ELSE 'PASSED' END,
            1, 900000, now(), CASE WHEN s = 200 THEN NULL ELSE now() END,
            CASE WHEN s = 200 THEN NULL ELSE 1000 END
       FROM generate_series(1, 200) s, generate_series(1, 10) e;";

/// The benchmark of bench/BENCHMARKS.md ("The page"): the plan page of 200
/// scenarios × 10 environments, from navigation to the grid rendered, and
/// from a result committed to its cell changed. Prints the timings; run with
/// `cargo test --test api -- --ignored --nocapture page_of_200`.
#[tokio::test]
#[ignore = "a benchmark: prints timings, asserts none"]
async fn page_of_200_scenarios_by_10_environments_render_and_update_times() {
    let test = "page_of_200_scenarios_by_10_environments_render_and_update_times";
    let Some(browser) = Browser::start(test).await else {
        return;
    };
    let app = spawn_app().await;
    app.sql(LARGE_PLAN_SQL).await;
    let token = app.token(13, &["PLAN_RUN"]);
    let listed = "document.querySelector('[data-plan=\"9000\"]')";
    let link = format!("{}/#token={token}", app.address);
    browser.visit(&link, listed, "the large plan listed").await;
    let grid = "document.querySelectorAll('#grid button.cell').length === 2000";
    let mut renders = Vec::new();
    for _ in 0..7 {
        // a new document each time: navigation start is the time origin
        browser.client.goto("about:blank").await.unwrap();
        let plan = format!("{}/#/plans/9000", app.address);
        browser.visit(&plan, grid, "the grid of 2 000 cells").await;
        let mark = "performance.getEntriesByName('planQueue:grid')[0].startTime";
        let build = "window.planQueueStats.lastRenderMs";
        let (mark, build) = (browser.eval(mark).await, browser.eval(build).await);
        renders.push((mark.as_f64().unwrap(), build.as_f64().unwrap()));
    }
    browser.screenshots("large-plan").await;
    let mut updates = Vec::new();
    for s in 0..5 {
        let (scenario, environment) = (100_200, 9001 + s);
        let cell = format!("document.querySelector('[data-key=\"{scenario}:{environment}\"]')");
        let changed = format!("{cell}.classList.contains('s-PASSED')");
        let patches = browser.eval("window.planQueueStats.gridPatches").await;
        let committed = Instant::now();
        app.sql(&format!(
            "UPDATE execution_pairs SET status = 'PASSED', finished_at = now() \
              WHERE execution_id = 900000 AND scenario_id = {scenario} \
                AND environment_id = {environment}"
        ))
        .await;
        let wait = browser.wait_for(&changed, Duration::from_secs(10), "the updated cell");
        wait.await;
        let seen = committed.elapsed().as_secs_f64() * 1000.0;
        let patch = browser.eval("window.planQueueStats.lastPatchMs").await;
        let after = browser.eval("window.planQueueStats.gridPatches").await;
        assert_eq!(after.as_i64(), patches.as_i64().map(|n| n + 1), "one patch");
        updates.push((seen, patch.as_f64().unwrap()));
    }
    let results = Instant::now();
    api_data(&app, "/plans/9000/results").await;
    let fetch = results.elapsed().as_secs_f64() * 1000.0;
    println!("page of 200 x 10: navigation to grid rendered, ms (grid DOM build, ms):");
    for (mark, build) in &renders {
        println!("  {mark:.0} ({build:.1})");
    }
    println!("result committed to cell changed, ms (patch of the changed cell, ms):");
    for (seen, patch) in &updates {
        println!("  {seen:.0} ({patch:.2})");
    }
    println!("GET /plans/9000/results (2 000 pairs) from the test: {fetch:.0} ms");
    browser.finish().await;
}
