//! HTTP handlers: thin — extract, parse, one service call, respond.

pub mod cancel;
pub mod catalog;
pub mod executions;
pub mod fallback;
pub mod flakiness;
pub mod health;
pub mod metrics;
pub mod page;
pub mod plans;
pub mod queue;
pub mod rerun;
pub mod run;

pub use cancel::{cancel_execution, cancel_plan};
pub use executions::{execution, execution_callbacks, plan_executions, plan_results};
pub use fallback::{method_not_allowed, not_found};
pub use health::{health, live, ready};
pub use metrics::metrics;
pub use rerun::rerun;
pub use run::run;
