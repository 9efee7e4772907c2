//! The suppressions table: key `address` (an email address, lower-cased). An address that
//! hard-bounced or complained is never written to again; the first reason is kept.

use aws_sdk_dynamodb::Client;
use serde::{Deserialize, Serialize};

use super::{from_item, string, to_item};
use crate::aws::classify;
use crate::error::DependencyError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressionReason {
    Bounce,
    Complaint,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    pub address: String,
    pub reason: SuppressionReason,
    /// The provider's detail (bounce type and diagnostic, complaint type).
    pub detail: String,
    /// The notification whose feedback suppressed the address.
    pub notification_id: String,
    pub created_at: String,
}

#[derive(Clone)]
pub struct SuppressionStore {
    client: Client,
    table: String,
}

impl SuppressionStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub async fn get(&self, address: &str) -> Result<Option<Suppression>, DependencyError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("address", string(&address.to_ascii_lowercase()))
            .send()
            .await
            .map_err(|error| classify("dynamodb", "GetItem", error, &[]))?;
        output.item.map(|item| from_item("GetItem", item)).transpose()
    }

    /// Suppresses the address unless it already is (the first reason stays).
    pub async fn add(&self, suppression: &Suppression) -> Result<(), DependencyError> {
        let mut suppression = suppression.clone();
        suppression.address = suppression.address.to_ascii_lowercase();
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item("PutItem", &suppression)?))
            .condition_expression("attribute_not_exists(address)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            Err(error) => Err(classify("dynamodb", "PutItem", error, &[])),
        }
    }
}

impl crate::ports::Suppressions for SuppressionStore {
    async fn add(&self, suppression: &Suppression) -> Result<(), DependencyError> {
        SuppressionStore::add(self, suppression).await
    }
}
