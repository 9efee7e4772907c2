//! The templates table: key `name`.

use aws_sdk_dynamodb::Client;

use super::{from_item, string, to_item};
use crate::aws::classify;
use crate::domain::template::{Template, TemplateName};
use crate::error::DependencyError;

#[derive(Clone)]
pub struct TemplateStore {
    client: Client,
    table: String,
}

impl TemplateStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub async fn get(&self, name: &TemplateName) -> Result<Option<Template>, DependencyError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("name", string(name.as_str()))
            .send()
            .await
            .map_err(|error| classify("dynamodb", "GetItem", error, &[]))?;
        output.item.map(|item| from_item("GetItem", item)).transpose()
    }

    /// Stores a template; true when it did not exist before.
    pub async fn put(&self, template: &Template) -> Result<bool, DependencyError> {
        let output = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item("PutItem", template)?))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
            .send()
            .await
            .map_err(|error| classify("dynamodb", "PutItem", error, &[]))?;
        Ok(output.attributes.is_none_or(|old| old.is_empty()))
    }
}
