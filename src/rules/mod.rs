//! The contract's names and codes, each defined once and used by every
//! layer: the pair statuses ([`PairStatus`]), the execution kinds, message
//! types and reasons the schema allows ([`names`]), and the refusal codes the
//! server functions return ([`Refusal`]). Uses nothing else of the crate, so
//! the database layer, the domain, the results consumer and the runner all
//! can.

pub mod names;
pub mod refusal;
pub mod status;

pub use refusal::{Refusal, RefusalArgs, UnknownRefusal};
pub use status::PairStatus;
