//! `retryFailed` of a run or rerun body (contract, section 18): how many
//! automatic reruns of an execution's `FAILED` and `ERROR` pairs may follow
//! it, 0–5; it wins over the plan's own `retryFailed`.

use crate::rules::names::MAX_RETRY_FAILED;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A retry budget: a JSON integer from 0 to 5 (anything else is code 1001,
/// naming the field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct RetryFailed(i32);

impl RetryFailed {
    /// The budget as stored on the execution (`executions.retry_budget`).
    pub fn get(self) -> i32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for RetryFailed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BudgetVisitor;
        impl Visitor<'_> for BudgetVisitor {
            type Value = RetryFailed;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "an integer from 0 to {MAX_RETRY_FAILED}")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RetryFailed, E> {
                match i32::try_from(v) {
                    Ok(n) if n <= MAX_RETRY_FAILED => Ok(RetryFailed(n)),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RetryFailed, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
        }
        deserializer.deserialize_any(BudgetVisitor)
    }
}

impl utoipa::PartialSchema for RetryFailed {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int32)))
            .minimum(Some(0))
            .maximum(Some(MAX_RETRY_FAILED))
            .description(Some(
                "How many automatic reruns of this execution's FAILED and ERROR pairs may \
                 follow it (contract, section 18); wins over the plan's retryFailed. \
                 Absent: the plan's (default 0). Outside 0-5, a float, a string or null is \
                 code 1001",
            ))
            .examples([serde_json::json!(2)])
            .into()
    }
}

impl utoipa::ToSchema for RetryFailed {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_an_integer_from_0_to_5() {
        for n in 0..=5 {
            let budget: RetryFailed = serde_json::from_str(&n.to_string()).unwrap();
            assert_eq!(budget.get(), n);
        }
        for bad in ["6", "-1", "1.5", "\"2\"", "null", "true"] {
            assert!(
                serde_json::from_str::<RetryFailed>(bad).is_err(),
                "{bad} was accepted"
            );
        }
    }
}
