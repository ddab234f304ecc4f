//! The values the schema's `CHECK` constraints allow: defined once in
//! [`crate::rules::names`] (the contract's names, used by the runner too),
//! re-exported here for the queries of `db`.

pub use crate::rules::names::*;
