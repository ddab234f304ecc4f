//! The OpenAPI 3.1 document of the HTTP API, generated from the code with
//! `utoipa`: served at `GET /openapi.json`, browsable at `GET /docs` (Swagger
//! UI, its assets compiled into the binary by `utoipa-swagger-ui`'s `vendored`
//! feature), and committed as `docs/openapi.json` (a test keeps the copy current).
//!
//! The error answers of the rerun operation are built from [`ApiError`]
//! itself: one example per row of the contract's error table, with the status,
//! code and message the service really sends.

use crate::error::{ApiError, ApiResult};
use crate::routes;
use std::collections::{BTreeMap, BTreeSet};
use utoipa::openapi::example::ExampleBuilder;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ArrayBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

/// The paths the Swagger UI library mounts, owned by the middleware that
/// makes them answer like the API's routes.
pub use crate::middleware::{DOCS_PATH, OPENAPI_PATH};

/// The OpenAPI document of plan-queue; `ApiDoc::openapi()` builds it.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "plan-queue",
        description = "Runs test plans and reruns scenario–environment pairs of their last \
executed results: validates the request against PostgreSQL, records the run or rerun and \
publishes one AMQP message per pair to RabbitMQ (see docs/asyncapi.yaml for the messages). \
Every answer is a `{data, result}` envelope; `result.code` 0 means success."
    ),
    paths(
        routes::rerun::rerun,
        routes::run::run,
        routes::health::health,
        routes::health::live,
        routes::health::ready,
        routes::metrics::metrics,
        routes::executions::execution,
        routes::executions::execution_callbacks,
        routes::executions::plan_executions,
        routes::executions::plan_results,
        routes::flakiness::plan_flakiness,
        routes::cancel::cancel_execution,
        routes::cancel::cancel_plan,
        routes::plans::plans,
        routes::plans::plan,
        routes::catalog::put_entity,
        routes::catalog::get_entity,
        routes::catalog::import
    ),
    components(schemas(ApiResult)),
    modifiers(
        &BearerAuth,
        &PairsOrShorthand,
        &ErrorAnswers,
        &QueueAlias,
        &ConditionalReads
    ),
    tags(
        (name = "rerun", description = "Rerun scenarios of a test plan"),
        (name = "run", description = "Run a whole test plan"),
        (name = "read", description = "Read executions and the consolidated results of a plan back"),
        (name = "cancel", description = "Cancel an execution or every execution of a plan"),
        (name = "catalog", description = "Keep plan-queue's copy of the catalogue in sync"),
        (name = "operations", description = "Probes and metrics")
    )
)]
pub struct ApiDoc;

/// Name of the bearer security scheme.
const BEARER: &str = "bearer";
/// Name of the error envelope schema.
const ERROR_ENVELOPE: &str = "ErrorEnvelope";

/// The HS256 JWT of the contract's section 3 as a bearer scheme.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256 JWT: `sub` = user id, `exp`, `authorities` (PLAN_RUN to rerun, \
                         QUEUE_ADMIN to act for another user and read every plan, PLAN_READ \
                         or PLAN_RUN to read the plans of the subject's projects)",
                    ))
                    .build(),
            ),
        );
    }
}

/// Name of the rerun request body schema.
const REQUEST_BODY: &str = "RerunRequestBody";

/// The pairs of a rerun come either as `scenarioEnvironmentPairs` (at least
/// one, else 1006), as the contract's top-level shorthand `scenarioId`
/// (with `environmentId`), "used only when `scenarioEnvironmentPairs` is
/// absent" (both: 1001; neither: 1006), or selected by `statuses` (section
/// 8; with either of the others: 1001). `RerunRequestBody` becomes `allOf`
/// its fields and `anyOf` these three shapes; an absent or null top-level
/// `scenarioId` is alike (a top-level `environmentId` beside the list is 1001
/// too, which the schema does not express).
struct PairsOrShorthand;

impl Modify for PairsOrShorthand {
    fn modify(&self, openapi: &mut Document) {
        let Some(body) = openapi
            .components
            .as_mut()
            .and_then(|c| c.schemas.get_mut(REQUEST_BODY))
        else {
            return;
        };
        let null = || ObjectBuilder::new().schema_type(Type::Null);
        let pairs = ObjectBuilder::new()
            .title(Some("pairs"))
            .required("scenarioEnvironmentPairs")
            .property(
                "scenarioEnvironmentPairs",
                ArrayBuilder::new().min_items(Some(1)),
            )
            .property("scenarioId", null())
            .property("statuses", null());
        let shorthand = ObjectBuilder::new()
            .title(Some("shorthand"))
            .required("scenarioId")
            .property("scenarioEnvironmentPairs", null())
            .property(
                "scenarioId",
                ObjectBuilder::new().schema_type(Type::Integer),
            )
            .property("statuses", null());
        let by_status = ObjectBuilder::new()
            .title(Some("statuses"))
            .required("statuses")
            .property("scenarioEnvironmentPairs", null())
            .property("scenarioId", null())
            .property("environmentId", null());
        let either = AnyOfBuilder::new()
            .description(Some(
                "One of `scenarioEnvironmentPairs` (at least one), the top-level \
                 `scenarioId` (with `environmentId`) or `statuses`: not two (code 1001), \
                 not none (code 1006)",
            ))
            .item(pairs)
            .item(shorthand)
            .item(by_status);
        *body = AllOfBuilder::new().item(body.clone()).item(either).into();
    }
}

/// The examples of the answers every queueing operation shares: 401, the
/// body checks, and the infrastructure and Idempotency-Key answers.
fn common_examples() -> Vec<(&'static str, ApiError)> {
    use ApiError::*;
    vec![
        ("unauthenticated", Unauthorized { token_sent: false }),
        ("bodyTooLarge", BodyTooLarge(65_536)),
        (
            "unsupportedMediaType",
            UnsupportedMediaType("text/plain".to_owned()),
        ),
        ("bodyTimeout", BodyTimeout(10_000)),
        ("planIdMandatory", Mandatory("planId is mandatory")),
        ("userIdMandatory", Mandatory("userId is mandatory")),
        (
            "frameworkTypeMandatory",
            ApiError::framework_type_mandatory(),
        ),
        (
            "frameworkTypeNotSupported",
            UnsupportedFrameworkType("CYPRESS".to_owned()),
        ),
        (
            "tooManyPairs",
            TooManyPairs {
                count: 1001,
                max: 1000,
            },
        ),
        (
            "accessDenied",
            AccessDenied("the token lacks the PLAN_RUN authority".to_owned()),
        ),
        ("planNotFound", PlanNotFound),
        ("userNotFound", UserNotFound),
        (
            "frameworkTypeMismatch",
            FrameworkTypeMismatch {
                plan_id: 614,
                plan_framework_type: "APPIUM".to_owned(),
                asked: "GAUGE".to_owned(),
            },
        ),
        (
            "internal",
            Unexpected(anyhow::anyhow!("never shown to the client")),
        ),
        ("databaseUnavailable", Unavailable("database")),
        ("idempotencyKeyReused", IdempotencyKeyReused),
        ("idempotencyKeyInFlight", IdempotencyKeyInFlight),
    ]
}

/// One example error per row of the contract's error table of the rerun
/// (sections 1 and 8), by name.
pub fn error_examples() -> Vec<(&'static str, ApiError)> {
    use ApiError::*;
    let mut examples = common_examples();
    examples.extend([
        (
            "unknownField",
            InvalidRequest(
                "scenarioEnvironmentPairs[0]: unknown field `environment`, expected \
                 `scenarioId` or `environmentId`"
                    .to_owned(),
            ),
        ),
        (
            "badStatuses",
            InvalidRequest(
                "statuses[0]: QUEUED is in flight, not a result; select by FAILED, ERROR, \
                 ABORTED, SKIPPED, PASSED (and see onInFlight)"
                    .to_owned(),
            ),
        ),
        (
            "pairMandatory",
            Mandatory("At least one scenarioEnvironmentPair is required"),
        ),
        ("scenarioIdMandatory", Mandatory("scenarioId is mandatory")),
        (
            "duplicatePair",
            DuplicatePair {
                scenario_id: 111,
                environment_id: 222,
            },
        ),
        ("noExecutedResults", NoExecutedResults(614)),
        (
            "pairNotInLastRun",
            PairNotInLastRun {
                plan_id: 614,
                scenario_id: 111,
                environment_id: Some(999),
            },
        ),
        (
            "noPairWithStatus",
            NoPairWithStatus {
                plan_id: 614,
                statuses: "FAILED,ERROR".to_owned(),
            },
        ),
        (
            "pairInFlight",
            PairInFlight {
                scenario_id: 111,
                environment_id: 222,
                execution_id: 5012,
            },
        ),
        (
            "attemptLimit",
            AttemptLimit {
                scenario_id: 111,
                environment_id: 222,
                max: 50,
            },
        ),
    ]);
    examples
}

/// One example error per row of the error table of the run (section 7), by name.
pub fn run_error_examples() -> Vec<(&'static str, ApiError)> {
    use ApiError::*;
    let mut examples = common_examples();
    examples.extend([
        (
            "unknownField",
            InvalidRequest(
                "unknown field `scenarioEnvironmentPairs`, expected one of `planId`, \
                 `userId`, `frameworkType`, `scenarioIds`, `environmentIds`, `force`, `dryRun`"
                    .to_owned(),
            ),
        ),
        (
            "scenarioNotInPlan",
            ScenarioNotInPlan {
                scenario_id: 999,
                plan_id: 614,
            },
        ),
        (
            "environmentNotInPlan",
            EnvironmentNotInPlan {
                environment_id: 999,
                plan_id: 614,
            },
        ),
        ("nothingToRun", NothingToRun(615)),
        (
            "planInFlight",
            PlanInFlight {
                plan_id: 614,
                execution_id: 5013,
            },
        ),
    ]);
    examples
}

/// The example errors of the read endpoints (contract, section 11) for the
/// operation at `path`, by name.
pub fn read_error_examples(path: &str) -> Vec<(&'static str, ApiError)> {
    use ApiError::*;
    let mut errors = vec![
        ("unauthenticated", Unauthorized { token_sent: false }),
        (
            "accessDenied",
            AccessDenied(
                "the token lacks the PLAN_READ, PLAN_RUN or QUEUE_ADMIN authority".to_owned(),
            ),
        ),
        (
            "idNotAPositiveInteger",
            NotFound(path.replace("{executionId}", "0").replace("{planId}", "0")),
        ),
        (
            "internal",
            Unexpected(anyhow::anyhow!("never shown to the client")),
        ),
        ("databaseUnavailable", Unavailable("database")),
    ];
    match path {
        routes::executions::EXECUTION_PATH | routes::executions::EXECUTION_CALLBACKS_PATH => {
            errors.push(("executionNotFound", ExecutionNotFound(5012)));
        }
        routes::executions::PLAN_EXECUTIONS_PATH => {
            errors.push(("planNotFound", PlanNotFoundToRead));
            errors.push((
                "limitOutOfRange",
                InvalidRequest("limit must be an integer from 1 to 100, got `0`".to_owned()),
            ));
            errors.push((
                "beforeNotOfThePlan",
                InvalidRequest("before: 5100 is not an execution of plan 614".to_owned()),
            ));
            errors.push((
                "unknownParameter",
                InvalidRequest(
                    "unknown query parameter `page`, expected `limit` or `before`".to_owned(),
                ),
            ));
        }
        routes::plans::PLANS_PATH => errors.retain(|(name, _)| *name != "idNotAPositiveInteger"),
        routes::plans::PLAN_PATH => errors.push(("planNotFound", PlanNotFoundToRead)),
        routes::flakiness::PLAN_FLAKINESS_PATH => {
            errors.push(("planNotFound", PlanNotFoundToRead));
            errors.push((
                "runsOutOfRange",
                InvalidRequest("runs must be an integer from 1 to 100, got `0`".to_owned()),
            ));
        }
        _ => {
            errors.push(("planNotFound", PlanNotFoundToRead));
            errors.push(("neverRan", NoExecutedResults(615)));
        }
    }
    errors
}

/// The example errors of the cancel operation at `path` (contract, section 16), by name.
pub fn cancel_error_examples(path: &str) -> Vec<(&'static str, ApiError)> {
    use ApiError::*;
    let mut errors = vec![
        ("unauthenticated", Unauthorized { token_sent: false }),
        (
            "bodyNotEmpty",
            InvalidRequest("unknown field `force`".to_owned()),
        ),
        (
            "accessDenied",
            AccessDenied("the token lacks the PLAN_RUN authority".to_owned()),
        ),
        (
            "idNotAPositiveInteger",
            NotFound(path.replace("{executionId}", "0").replace("{planId}", "0")),
        ),
        (
            "internal",
            Unexpected(anyhow::anyhow!("never shown to the client")),
        ),
        ("databaseUnavailable", Unavailable("database")),
    ];
    if path == routes::cancel::EXECUTION_CANCEL_PATH {
        errors.push(("executionNotFound", ExecutionNotFound(5012)));
        errors.push(("alreadyFinished", ExecutionAlreadyFinished(5012)));
    } else {
        errors.push(("planNotFound", PlanNotFoundToRead));
        errors.push(("nothingInFlight", NothingInFlight(614)));
    }
    errors
}

/// The example errors of the catalogue operations (contract, section 20),
/// by name; `put` for `PUT /catalog/{kind}/{id}` and `POST /catalog/import`.
pub fn catalog_error_examples(put: bool) -> Vec<(&'static str, ApiError)> {
    use ApiError::*;
    let mut errors = vec![
        ("unauthenticated", Unauthorized { token_sent: false }),
        (
            "accessDenied",
            AccessDenied("the token lacks the CATALOG_WRITE authority".to_owned()),
        ),
        ("unknownKind", NotFound("/catalog/devices/222".to_owned())),
        (
            "internal",
            Unexpected(anyhow::anyhow!("never shown to the client")),
        ),
        ("databaseUnavailable", Unavailable("database")),
    ];
    if put {
        errors.extend([
            (
                "unknownReference",
                InvalidRequest("plan 614: scenario 999 does not exist".to_owned()),
            ),
            (
                "scenarioOfAnotherProject",
                InvalidRequest(
                    "plan 614: scenario 201 is in project 8, not in the plan's project 7"
                        .to_owned(),
                ),
            ),
            (
                "badField",
                InvalidRequest("plan 614: runTimeoutSecs must be between 5 and 604800".to_owned()),
            ),
            ("versionMismatch", VersionMismatch(4)),
            (
                "callbackHostNotAllowed",
                CallbackHostNotAllowed("evil.example.net".to_owned()),
            ),
            ("bodyTooLarge", BodyTooLarge(65_536)),
            (
                "unsupportedMediaType",
                UnsupportedMediaType("text/plain".to_owned()),
            ),
        ]);
    } else {
        errors.push((
            "neverWritten",
            NotInCatalogue {
                entity: "plan",
                id: 999,
            },
        ));
    }
    errors
}

/// Adds the error envelope schema and, to the rerun and run operations, one
/// response per error status with an example per error of that status.
struct ErrorAnswers;

impl Modify for ErrorAnswers {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.schemas.insert(
            ERROR_ENVELOPE.to_owned(),
            ObjectBuilder::new()
                .description(Some("The body of every error: `data` is null."))
                .property("data", ObjectBuilder::new().schema_type(Type::Null))
                .required("data")
                .property("result", Ref::from_schema_name(ApiResult::name()))
                .required("result")
                .into(),
        );
        for (path, examples) in [
            (routes::rerun::RERUN_PATH, error_examples()),
            (routes::run::RUN_PATH, run_error_examples()),
            (
                routes::cancel::EXECUTION_CANCEL_PATH,
                cancel_error_examples(routes::cancel::EXECUTION_CANCEL_PATH),
            ),
            (
                routes::cancel::PLAN_CANCEL_PATH,
                cancel_error_examples(routes::cancel::PLAN_CANCEL_PATH),
            ),
        ] {
            if let Some(operation) = openapi
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.post.as_mut())
            {
                add_error_answers(operation, examples);
            }
        }
        if let Some(item) = openapi.paths.paths.get_mut(routes::catalog::ENTITY_PATH) {
            if let Some(operation) = item.put.as_mut() {
                add_error_answers(operation, catalog_error_examples(true));
            }
            if let Some(operation) = item.get.as_mut() {
                add_error_answers(operation, catalog_error_examples(false));
            }
        }
        if let Some(operation) = openapi
            .paths
            .paths
            .get_mut(routes::catalog::IMPORT_PATH)
            .and_then(|item| item.post.as_mut())
        {
            let mut examples = catalog_error_examples(true);
            examples.retain(|(name, _)| *name != "versionMismatch");
            examples.push((
                "executionsRefused",
                ApiError::InvalidRequest(
                    "executions are not part of the catalogue; plan-queue seed --file loads them"
                        .to_owned(),
                ),
            ));
            add_error_answers(operation, examples);
        }
        for path in [
            routes::executions::EXECUTION_PATH,
            routes::executions::EXECUTION_CALLBACKS_PATH,
            routes::executions::PLAN_EXECUTIONS_PATH,
            routes::executions::PLAN_RESULTS_PATH,
            routes::flakiness::PLAN_FLAKINESS_PATH,
            routes::plans::PLANS_PATH,
            routes::plans::PLAN_PATH,
        ] {
            if let Some(operation) = openapi
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.get.as_mut())
            {
                add_error_answers(operation, read_error_examples(path));
            }
        }
    }
}

/// Adds to `operation` one response per error status of `examples`, with an
/// example per error of that status.
fn add_error_answers(operation: &mut Operation, examples: Vec<(&'static str, ApiError)>) {
    let mut by_status: BTreeMap<u16, Vec<(&str, ApiError)>> = BTreeMap::new();
    for (name, error) in examples {
        use actix_web::ResponseError;
        by_status
            .entry(error.status_code().as_u16())
            .or_default()
            .push((name, error));
    }
    for (status, errors) in by_status {
        let codes: BTreeSet<String> = errors.iter().map(|(_, e)| e.code().to_string()).collect();
        let examples = errors.iter().map(|(name, error)| {
            (
                *name,
                ExampleBuilder::new()
                    .summary(format!("code {}", error.code()))
                    .value(serde_json::to_value(error.envelope()).ok())
                    .build(),
            )
        });
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ERROR_ENVELOPE)))
            .examples_from_iter(examples)
            .build();
        let codes: Vec<String> = codes.into_iter().collect();
        let mut response = ResponseBuilder::new()
            .description(format!("code {}", codes.join(", ")))
            .content("application/json", content);
        if let Some((name, description)) = header_of(status) {
            response = response.header(
                name,
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::String))
                    .description(Some(description))
                    .build(),
            );
        }
        operation
            .responses
            .responses
            .insert(status.to_string(), response.build().into());
    }
}

/// The header an error status carries, if any.
fn header_of(status: u16) -> Option<(&'static str, &'static str)> {
    match status {
        401 => Some((
            "WWW-Authenticate",
            "`Bearer`, or `Bearer error=\"invalid_token\"`",
        )),
        503 => Some(("Retry-After", "Seconds to wait before retrying")),
        _ => None,
    }
}

/// Contract, section 22: the reads of sections 11, 19 and 20 answer with an
/// `ETag`, take `If-None-Match`, and answer 304 with no body when it names
/// the current tag. Added here to every such read, so none is forgotten.
struct ConditionalReads;

impl Modify for ConditionalReads {
    fn modify(&self, openapi: &mut Document) {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::Required;
        let string = || ObjectBuilder::new().schema_type(Type::String);
        for (path, example) in [
            (routes::executions::EXECUTION_PATH, "\"x5012.41.3.m13\""),
            (
                routes::executions::PLAN_EXECUTIONS_PATH,
                "\"e614.l20.b0.41.3.m13\"",
            ),
            (
                routes::executions::PLAN_RESULTS_PATH,
                "\"r614.none.41.3.m13\"",
            ),
            (
                routes::flakiness::PLAN_FLAKINESS_PATH,
                "\"f614.n20.41.3.m13\"",
            ),
            (routes::catalog::ENTITY_PATH, "\"4\""),
        ] {
            let Some(operation) = openapi
                .paths
                .paths
                .get_mut(path)
                .and_then(|item| item.get.as_mut())
            else {
                continue;
            };
            let etag = || {
                HeaderBuilder::new()
                    .schema(string().examples([example]))
                    .description(Some(
                        "The answer's entity tag: it changes whenever the answer would",
                    ))
                    .build()
            };
            operation.parameters.get_or_insert_with(Vec::new).push(
                ParameterBuilder::new()
                    .name("If-None-Match")
                    .parameter_in(ParameterIn::Header)
                    .required(Required::False)
                    .description(Some(
                        "The `ETag` of an earlier answer (or a list of them, or `*`): \
                             when it is still current the answer is 304 with no body",
                    ))
                    .schema(Some(string()))
                    .example(Some(serde_json::json!(example)))
                    .build(),
            );
            if let Some(utoipa::openapi::RefOr::T(ok)) =
                operation.responses.responses.get_mut("200")
            {
                ok.headers.entry("ETag".to_owned()).or_insert_with(etag);
            }
            operation.responses.responses.insert(
                "304".to_owned(),
                ResponseBuilder::new()
                    .description(
                        "`If-None-Match` names the current tag: nothing changed since, no body",
                    )
                    .header("ETag", etag())
                    .build()
                    .into(),
            );
        }
    }
}

/// `POST /queue` is served by the same handler as `POST /queue/rerun`
/// (contract, section 1): the same operation under its own id.
struct QueueAlias;

impl Modify for QueueAlias {
    fn modify(&self, openapi: &mut Document) {
        let Some(mut item) = openapi.paths.paths.get(routes::rerun::RERUN_PATH).cloned() else {
            return;
        };
        if let Some(operation) = item.post.as_mut() {
            operation.operation_id = Some("rerunAlias".to_owned());
            operation.summary =
                Some("Same as POST /queue/rerun (the URL the original API page names)".to_owned());
        }
        openapi.paths.paths.insert("/queue".to_owned(), item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_with_every_error_code_of_the_contract() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let text = doc["paths"]["/queue/rerun"]["post"]["responses"].to_string();
        for code in [
            1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
            1099,
        ] {
            assert!(
                text.contains(&format!("\"code\":{code}")),
                "no example of {code}"
            );
        }
        assert!(doc["paths"]["/queue"]["post"].is_object());
        for code in [1014, 1015, 1016] {
            assert!(
                text.contains(&format!("\"code\":{code}")),
                "no rerun example of {code}"
            );
        }
    }

    #[test]
    fn the_run_operation_has_every_error_code_of_section_7() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let text = doc["paths"]["/queue/run"]["post"]["responses"].to_string();
        for code in [
            1000, 1001, 1002, 1003, 1006, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 1018, 1019,
            1099,
        ] {
            assert!(
                text.contains(&format!("\"code\":{code}")),
                "no example of {code}"
            );
        }
        assert!(doc["paths"]["/queue/run"]["post"]["responses"]["409"].is_object());
    }

    #[test]
    fn every_read_operation_documents_its_errors() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        for (path, codes) in [
            (
                "/executions/{executionId}",
                &[1001, 1009, 1010, 1011, 1017, 1099][..],
            ),
            (
                "/plans/{planId}/executions",
                &[1000, 1001, 1009, 1010, 1011, 1099][..],
            ),
            (
                "/plans/{planId}/results",
                &[1000, 1001, 1004, 1009, 1010, 1011, 1099][..],
            ),
        ] {
            let responses = &doc["paths"][path]["get"]["responses"];
            for status in ["200", "401", "403", "404", "500", "503"] {
                assert!(responses[status].is_object(), "{path}: no {status}");
            }
            let text = responses.to_string();
            for code in codes {
                assert!(
                    text.contains(&format!("\"code\":{code}")),
                    "{path}: no {code}"
                );
            }
        }
    }
}
