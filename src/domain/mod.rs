//! The domain: the rerun request as the API receives it, parsed into checked
//! types, and the AMQP message a runner receives.

pub mod message;
pub mod reads;
pub mod request;

pub use message::{EnvironmentInfo, RerunMessage, ScenarioInfo};
pub use reads::{parse_page_query, parse_path_id, PageRequest};
pub use request::{parse_rerun_request, Id, RequestedPair, RerunRequest};
