//! The published documents against what the service really declares and
//! answers: every queue of `docs/asyncapi.yaml` declared by a client with
//! exactly the documented arguments (issue 17: a runner built from the
//! document alone got `406 PRECONDITION_FAILED`), the two JSON schemas that
//! name a `messageId` agreeing on it, and every method on every route the
//! binary serves answered the way the API's own routes answer.

use crate::helpers::{broker_channel, spawn_app, TestApp};
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;
use std::collections::BTreeMap;

/// The exchange name the documents use for the default deployment.
const DOCUMENTED_EXCHANGE: &str = "scenario-runs";

fn asyncapi() -> Value {
    let text = std::fs::read_to_string("docs/asyncapi.yaml").unwrap();
    serde_yaml_ng::from_str(&text).expect("asyncapi.yaml is YAML")
}

/// A documented queue: its name and `x-arguments`, for `app`'s exchange and
/// framework types (`{frameworkType}` expands to one queue per type).
#[derive(Debug, Clone, PartialEq)]
struct DocumentedQueue {
    name: String,
    arguments: BTreeMap<String, Value>,
}

fn for_app(text: &str, app: &TestApp) -> String {
    text.replacen(DOCUMENTED_EXCHANGE, &app.config.amqp.exchange, 1)
}

fn documented_queues(app: &TestApp) -> Vec<DocumentedQueue> {
    let doc = asyncapi();
    let mut queues = Vec::new();
    for (channel, body) in doc["channels"].as_object().unwrap() {
        let binding = &body["bindings"]["amqp"];
        if binding["is"] != "queue" {
            continue;
        }
        let queue = &binding["queue"];
        let template = queue["name"].as_str().unwrap();
        let arguments = queue["x-arguments"]
            .as_object()
            .unwrap_or_else(|| panic!("channel {channel}: the queue lists no x-arguments"));
        let arguments: BTreeMap<String, Value> = arguments
            .iter()
            .map(|(key, value)| match value {
                Value::String(text) => (key.clone(), Value::String(for_app(text, app))),
                other => (key.clone(), other.clone()),
            })
            .collect();
        let names: Vec<String> = if template.contains("{frameworkType}") {
            app.config
                .amqp
                .framework_types
                .iter()
                .map(|t| for_app(&template.replace("{frameworkType}", t), app))
                .collect()
        } else {
            vec![for_app(template, app)]
        };
        queues.extend(names.into_iter().map(|name| DocumentedQueue {
            name,
            arguments: arguments.clone(),
        }));
    }
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    queues
}

fn field_table(arguments: &BTreeMap<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in arguments {
        let value = match value {
            Value::String(text) => AMQPValue::LongString(text.as_str().into()),
            Value::Number(number) => AMQPValue::LongLongInt(number.as_i64().unwrap()),
            Value::Bool(flag) => AMQPValue::Boolean(*flag),
            other => panic!("x-arguments value {other} of {key} is not a scalar"),
        };
        table.insert(key.as_str().into(), value);
    }
    table
}

/// The queues the broker holds under `app`'s exchange, with their arguments,
/// as `rabbitmqctl list_queues` reports them.
fn declared_queues(app: &TestApp) -> Vec<DocumentedQueue> {
    let output = std::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_queues",
            "name",
            "arguments",
            "--formatter",
            "json",
        ])
        .output()
        .expect("rabbitmqctl runs");
    assert!(output.status.success(), "{output:?}");
    let listed: Vec<Value> = serde_json::from_slice(&output.stdout).expect("JSON");
    let prefix = format!("{}.", app.config.amqp.exchange);
    let mut queues: Vec<DocumentedQueue> = listed
        .into_iter()
        .filter(|queue| queue["name"].as_str().unwrap().starts_with(&prefix))
        .map(|queue| DocumentedQueue {
            name: queue["name"].as_str().unwrap().to_owned(),
            arguments: arguments_of(&queue["arguments"]),
        })
        .collect();
    queues.sort_by(|a, b| a.name.cmp(&b.name));
    queues
}

/// `rabbitmqctl`'s JSON of a queue's arguments: an object, or (older
/// releases) a list of `[key, type, value]` triples.
fn arguments_of(listed: &Value) -> BTreeMap<String, Value> {
    match listed {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Value::Array(triples) => triples
            .iter()
            .map(|triple| (triple[0].as_str().unwrap().to_owned(), triple[2].clone()))
            .collect(),
        other => panic!("unexpected arguments {other}"),
    }
}

#[tokio::test]
async fn asyncapi_lists_every_queue_the_service_declares_with_its_arguments() {
    let app = spawn_app().await;
    let documented = documented_queues(&app);
    // the relay and the results consumer declare the topology as they
    // connect, just after start-up
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut declared = declared_queues(&app);
    while declared.len() < documented.len() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        declared = declared_queues(&app);
    }
    assert_eq!(
        documented, declared,
        "docs/asyncapi.yaml (left) and the queues the service declared (right) differ"
    );
}

#[tokio::test]
async fn a_client_declaring_the_documented_queues_with_the_documented_arguments_is_accepted() {
    let app = spawn_app().await;
    let documented = documented_queues(&app);
    assert!(documented.len() >= 5, "{documented:?}");
    let (_connection, channel) = broker_channel().await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for queue in &documented {
        channel
            .queue_declare(
                queue.name.as_str().into(),
                durable,
                field_table(&queue.arguments),
            )
            .await
            .unwrap_or_else(|e| panic!("{} as documented: {e}", queue.name));
    }
    // The check can fail: one argument left out is refused, as RabbitMQ
    // refused the runner that read an older document.
    let mut without_group_size = documented[0].arguments.clone();
    without_group_size.remove("x-quorum-initial-group-size");
    let (_other, channel) = broker_channel().await;
    let refused = channel
        .queue_declare(
            documented[0].name.as_str().into(),
            durable,
            field_table(&without_group_size),
        )
        .await;
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .contains("inequivalent arg"),
        "a declaration without x-quorum-initial-group-size was accepted"
    );
}

fn schema_property(file: &str, property: &str) -> Value {
    let text = std::fs::read_to_string(file).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    let mut found = schema["properties"][property].clone();
    found.as_object_mut().map(|p| p.remove("description"));
    found
}

#[test]
fn the_run_message_and_the_result_schemas_define_message_id_alike() {
    let run = schema_property("docs/message.schema.json", "messageId");
    let result = schema_property("docs/result.schema.json", "messageId");
    assert!(run.is_object() && !run.as_object().unwrap().is_empty());
    assert_eq!(
        run, result,
        "the result echoes the run message's messageId: both schemas must accept the same values"
    );
}

/// Every path the binary serves, with an id that exists in the demo data,
/// and the methods it serves: the OpenAPI document's paths (GET implies
/// HEAD) and the routes the Swagger UI library mounts.
fn served_routes() -> Vec<(String, &'static str)> {
    let text = std::fs::read_to_string("docs/openapi.json").unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut routes: Vec<(String, &'static str)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| {
            let path = path
                .replace("{executionId}", "4980")
                .replace("{planId}", "614")
                .replace("{kind}", "plans")
                .replace("{id}", "614");
            let allow = if item.get("get").is_some() && item.get("put").is_some() {
                "GET, HEAD, PUT"
            } else if item.get("get").is_some() {
                "GET, HEAD"
            } else {
                "POST"
            };
            (path, allow)
        })
        .collect();
    for library in [
        "/openapi.json",
        "/docs",
        "/docs/",
        "/docs/index.html",
        "/docs/swagger-ui-bundle.js",
    ] {
        routes.push((library.to_owned(), "GET, HEAD"));
    }
    routes
}

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

#[tokio::test]
async fn every_route_answers_every_method_the_way_the_api_routes_do() {
    let app = spawn_app().await;
    // GET and HEAD of /health/ready are compared: start once the service is
    // ready, or the readiness can turn between the two (a loaded CI run saw
    // GET 503 while the broker links came up, then HEAD 200)
    app.wait_ready(&app.address, 200).await;
    let token = app.token(13, &["PLAN_RUN"]);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut wrong = Vec::new();
    for (path, allow) in served_routes() {
        let mut get_status = None;
        for method in METHODS {
            let response = client
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{}{path}", app.address),
                )
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let allow_header = response
                .headers()
                .get("allow")
                .map(|v| v.to_str().unwrap().to_owned());
            let body = response.text().await.unwrap();
            let served = allow.split(", ").any(|m| m == method);
            if method == "GET" {
                get_status = Some(status);
            }
            if !served {
                let envelope: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                // a HEAD answer has no body to carry the envelope
                let enveloped = method == "HEAD" || envelope["result"]["code"] == 1001;
                if status != 405 || !enveloped || allow_header.as_deref() != Some(allow) {
                    wrong.push(format!(
                        "{method} {path}: {status}, Allow {allow_header:?}, body {}",
                        &body[..body.len().min(120)]
                    ));
                }
            } else if method == "HEAD" && (Some(status) != get_status || !body.is_empty()) {
                wrong.push(format!(
                    "HEAD {path}: {status} with {} body bytes, GET was {get_status:?}",
                    body.len()
                ));
            } else if status == 405 || status == 404 {
                wrong.push(format!(
                    "{method} {path}: {status}, but the route serves it"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "answered unlike the API's routes:\n{}",
        wrong.join("\n")
    );
}

/// The shell blocks of the README (```sh … ```), each with its lines
/// trimmed at the start.
fn readme_shell_blocks() -> Vec<String> {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let mut blocks = Vec::new();
    let mut block: Option<String> = None;
    for line in readme.lines() {
        match (block.as_mut(), line.trim_start()) {
            (None, "```sh") => block = Some(String::new()),
            (Some(_), "```") => blocks.extend(block.take()),
            (Some(text), line) => {
                text.push_str(line);
                text.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

/// The shell blocks of the README, joined.
fn readme_shell() -> String {
    readme_shell_blocks().concat()
}

/// Whether `text` holds `word` with no letter, digit or `_` on either side.
fn holds_word(text: &str, word: &str) -> bool {
    let inside = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    text.match_indices(word).any(|(at, _)| {
        !inside(text[..at].chars().next_back()) && !inside(text[at + word.len()..].chars().next())
    })
}

#[test]
fn no_readme_command_sets_or_repeats_a_value_of_the_variables_block() {
    let blocks = readme_shell_blocks();
    let Some(variables) = blocks.iter().find(|b| b.starts_with("export JWT_SECRET=")) else {
        panic!("the README lost its variables block (`export JWT_SECRET=…`)");
    };
    // NAME=value pairs of the block, and the parts of a value a command
    // might repeat on its own: a port, a database name
    let mut names = Vec::new();
    let mut values = Vec::new();
    for word in variables.split_whitespace() {
        let Some((name, value)) = word.split_once('=') else {
            continue;
        };
        let name = name.trim_start_matches("export");
        if value.contains('$') {
            continue;
        }
        names.push(format!("{name}="));
        values.push(value.to_owned());
        if let Some((_, tail)) = value.rsplit_once([':', '/']) {
            values.push(tail.to_owned());
        }
    }
    assert!(
        names.len() >= 4 && values.contains(&DOCUMENTED_EXCHANGE.to_owned()),
        "{names:?} {values:?}"
    );
    let mut wrong = Vec::new();
    for line in blocks
        .iter()
        .filter(|b| *b != variables)
        .flat_map(|b| b.lines())
    {
        for name in &names {
            if holds_word(line, name.trim_end_matches('=')) && line.contains(name.as_str()) {
                wrong.push(format!("sets {name} outside the variables block: {line}"));
            }
        }
        for value in &values {
            if holds_word(line, value) {
                wrong.push(format!("repeats `{value}` of the variables block: {line}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_readme_commands_follow_the_readers_variables_and_name_served_routes() {
    let shell = readme_shell();
    let text = std::fs::read_to_string("docs/openapi.json").unwrap();
    let openapi: Value = serde_json::from_str(&text).unwrap();
    let mut wrong = Vec::new();
    let mut curls = 0;
    for line in shell.lines().filter(|l| l.contains("curl ")) {
        curls += 1;
        if line.contains("127.0.0.1:") || line.contains("localhost:") {
            wrong.push(format!("a literal address instead of $BASE: {line}"));
        }
        let Some(rest) = line.split("$BASE").nth(1) else {
            wrong.push(format!("no $BASE: {line}"));
            continue;
        };
        let path: String = rest
            .chars()
            .take_while(|c| !matches!(c, '"' | '?' | ' '))
            .collect();
        let served = openapi["paths"].as_object().unwrap().keys().any(|route| {
            let pattern: Vec<&str> = route.split('/').collect();
            let asked: Vec<&str> = path.split('/').collect();
            pattern.len() == asked.len()
                && pattern
                    .iter()
                    .zip(&asked)
                    .all(|(p, a)| p == a || p.starts_with('{'))
        });
        if !served {
            wrong.push(format!("{path} is not in docs/openapi.json: {line}"));
        }
    }
    for literal in ["DROP DATABASE plan_queue", "grep -E '^scenario-runs"] {
        if shell.contains(literal) {
            wrong.push(format!("a hard-coded name: {literal}"));
        }
    }
    assert!(curls >= 8, "the README lost its curls ({curls})");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_plan_queue_command_the_readme_runs_exists() {
    let shell = readme_shell();
    let mut named = std::collections::BTreeSet::new();
    for line in shell.lines() {
        for prefix in ["cargo run -q -- ", "plan-queue "] {
            let word = line
                .split(prefix)
                .nth(1)
                .and_then(|r| r.split_whitespace().next());
            if let Some(command) = word.filter(|w| w.chars().all(|c| c.is_ascii_lowercase())) {
                named.insert(command.to_owned());
            }
        }
    }
    assert!(
        named.contains("events") && named.contains("runner"),
        "{named:?}"
    );
    for command in named {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_plan-queue"))
            .args([command.as_str(), "--help"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "`plan-queue {command}` of the README is not a command: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn docs_contract_md_is_the_shared_contract_as_it_stands() {
    // the platform's contract sits beside the checkout (`../shared/`) where
    // the project is developed and in CI; a clone elsewhere has only the copy
    let Ok(shared) = std::fs::read_to_string("../shared/CONTRACT.md") else {
        println!("SKIPPED docs_contract_md_is_the_shared_contract_as_it_stands: no ../shared/CONTRACT.md beside the checkout");
        return;
    };
    let copy = std::fs::read_to_string("docs/CONTRACT.md").unwrap();
    assert!(
        copy == shared,
        "docs/CONTRACT.md differs from ../shared/CONTRACT.md: copy it again (cp ../shared/CONTRACT.md docs/)"
    );
}
