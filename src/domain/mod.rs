//! The domain: the rerun and run requests as the API receives them, parsed
//! into checked types, and the AMQP message a runner receives.

pub mod events;
pub mod message;
pub mod reads;
pub mod request;
pub mod run_request;

pub use message::{EnvironmentInfo, RerunMessage, ScenarioInfo};
pub use reads::{parse_page_query, parse_path_id, PageRequest};
pub use request::{parse_rerun_request, Id, OnInFlight, RequestedPair, RerunRequest};
pub use run_request::{parse_run_request, RunRequest};
