//! DynamoDB adapters, one per table. Each holds just `{client, table}` and maps SDK errors
//! onto the error taxonomy.

pub mod apps;
pub mod notifications;
pub mod rate_limits;
pub mod send_timeline;
pub mod sms_providers;
pub mod stats;
pub mod suppressions;
pub mod templates;
pub mod users;

use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;

use crate::error::{DependencyError, FailureClass};

pub type Item = HashMap<String, AttributeValue>;

/// A stored item that no longer reads as its type: a bug or a manual edit, never retried away.
pub(crate) fn corrupt(operation: &'static str, error: serde_dynamo::Error) -> DependencyError {
    DependencyError {
        class: FailureClass::Permanent,
        service: "dynamodb",
        operation,
        code: "CorruptItem".into(),
        message: error.to_string(),
    }
}

pub(crate) fn to_item<T: serde::Serialize>(operation: &'static str, value: &T) -> Result<Item, DependencyError> {
    serde_dynamo::to_item(value).map_err(|error| corrupt(operation, error))
}

pub(crate) fn from_item<T: serde::de::DeserializeOwned>(
    operation: &'static str,
    item: Item,
) -> Result<T, DependencyError> {
    serde_dynamo::from_item(item).map_err(|error| corrupt(operation, error))
}

pub(crate) fn string(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}
