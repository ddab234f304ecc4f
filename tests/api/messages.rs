//! The message documents for runner authors: `docs/message.schema.json`
//! holds for the messages really published, and `docs/asyncapi.yaml`
//! describes the topology the service declares.

use crate::helpers::spawn_app;
use plan_queue::config::Config;
use serde_json::{json, Value};
use std::time::Duration;

fn message_schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string("docs/message.schema.json").unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).expect("a valid JSON Schema")
}

fn asyncapi() -> Value {
    let text = std::fs::read_to_string("docs/asyncapi.yaml").unwrap();
    serde_yaml_ng::from_str(&text).expect("asyncapi.yaml is YAML")
}

#[tokio::test]
async fn published_messages_satisfy_the_message_schema() {
    let app = spawn_app().await;
    let (status, body) = app
        .rerun(&json!({"planId": 614, "userId": 13, "frameworkType": "appium",
            "scenarioEnvironmentPairs": [{"scenarioId": 111}, {"scenarioId": 112, "environmentId": 223}]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let queued = body["data"]["queued"].as_array().unwrap().len();
    assert!(queued >= 2, "{body}");
    let messages = app.consume("APPIUM", queued, Duration::from_secs(10)).await;
    assert_eq!(messages.len(), queued);
    let validator = message_schema();
    for message in &messages {
        let errors: Vec<String> = validator
            .iter_errors(&message.body)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", message.body);
    }
    // the schema is not vacuous: a message missing a field or with a bad id fails
    let mut missing = messages[0].body.clone();
    missing.as_object_mut().unwrap().remove("messageId");
    assert!(!validator.is_valid(&missing));
    let mut bad_id = messages[0].body.clone();
    bad_id["environmentId"] = json!(0);
    assert!(!validator.is_valid(&bad_id));
}

#[test]
fn the_asyncapi_example_satisfies_the_message_schema() {
    let doc = asyncapi();
    let message = &doc["components"]["messages"]["scenarioRerun"];
    assert_eq!(
        message["payload"]["schema"]["$ref"], "./message.schema.json",
        "the payload is the committed JSON Schema"
    );
    let example = &message["examples"][0]["payload"];
    assert!(message_schema().is_valid(example), "{example}");
}

#[test]
fn asyncapi_names_the_default_topology_of_the_service() {
    let doc = asyncapi();
    let config = Config::from_lookup(|_| None).unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");
    let exchange = &doc["channels"]["scenarioRuns"]["bindings"]["amqp"]["exchange"];
    assert_eq!(exchange["name"], config.amqp.exchange.as_str());
    assert_eq!(exchange["type"], "direct");
    assert_eq!(exchange["durable"], true);
    let types: Vec<&str> = doc["components"]["parameters"]["frameworkType"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(types, config.amqp.framework_types.as_slice());
    let queue = &doc["channels"]["frameworkQueue"]["bindings"]["amqp"]["queue"]["name"];
    assert_eq!(queue, &config.amqp.queue_name("{frameworkType}"));
    assert_eq!(
        doc["channels"]["deadLetter"]["address"],
        config.amqp.dead_letter_name().as_str()
    );
    let bindings = &doc["components"]["messages"]["scenarioRerun"]["bindings"]["amqp"];
    assert_eq!(
        bindings["messageType"],
        plan_queue::db::models::MESSAGE_RERUN
    );
    assert_eq!(
        doc["operations"]["publishScenarioRerun"]["bindings"]["amqp"]["deliveryMode"],
        plan_queue::amqp::PERSISTENT
    );
}
