//! The notifications table: key `id`; TTL attribute `expires_at`.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::{from_item, string, to_item};
use crate::aws::classify;
use crate::domain::notification::NotificationRecord;
use crate::error::DependencyError;

#[derive(Clone)]
pub struct NotificationStore {
    client: Client,
    table: String,
}

/// The result of logging a notification.
#[derive(Debug)]
pub enum Logged {
    Created,
    /// A live record with the same id exists: the request is a duplicate of it.
    Duplicate(Box<NotificationRecord>),
}

impl NotificationStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Writes the record unless a live one with the same id exists. One conditional put is
    /// both the log write and the idempotency check; on a duplicate the existing record comes
    /// back with the failure (ALL_OLD), so no second read is needed. An expired record (TTL
    /// deletion lags) counts as absent.
    pub async fn create(&self, record: &NotificationRecord, now_epoch: i64) -> Result<Logged, DependencyError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item("PutItem", record)?))
            .condition_expression("attribute_not_exists(id) OR expires_at < :now")
            .expression_attribute_values(":now", AttributeValue::N(now_epoch.to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Logged::Created),
            Err(error) => match error.as_service_error() {
                Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(failed)) => {
                    let existing = failed.item.clone().unwrap_or_default();
                    Ok(Logged::Duplicate(Box::new(from_item("PutItem", existing)?)))
                }
                _ => Err(classify("dynamodb", "PutItem", error, &[])),
            },
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<NotificationRecord>, DependencyError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", string(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| classify("dynamodb", "GetItem", error, &[]))?;
        output.item.map(|item| from_item("GetItem", item)).transpose()
    }
}
