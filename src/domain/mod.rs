//! The domain: the rerun request as the API receives it, parsed into checked
//! types, and the AMQP message a runner receives.

pub mod message;
pub mod request;

pub use message::{EnvironmentInfo, RerunMessage, ScenarioInfo};
pub use request::{parse_rerun_request, Id, RequestedPair, RerunRequest};
