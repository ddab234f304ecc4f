//! The domain: the rerun and run requests as the API receives them, parsed
//! into checked types, the AMQP messages a runner receives and sends back,
//! the pair statuses, and the refusals of the server functions.

pub mod callback;
pub mod events;
pub mod message;
pub mod reads;
pub mod refusal;
pub mod request;
pub mod retry;
pub mod run_request;

pub use crate::rules::{PairStatus, Refusal, RefusalArgs, UnknownRefusal};
pub use callback::check_callback_url;
pub use message::{EnvironmentInfo, RerunMessage, ResultMessage, ScenarioInfo};
pub use reads::{
    parse_flakiness_query, parse_page_query, parse_path_id, parse_results_query, AttemptsView,
    KnownTags, PageRequest, ReadTag,
};
pub use refusal::Refused;
pub use request::{parse_rerun_request, Id, OnInFlight, RequestedPair, RerunRequest};
pub use retry::RetryFailed;
pub use run_request::{parse_run_request, RunRequest};
