//! The apps table: key `app_key`.

use aws_sdk_dynamodb::Client;

use super::{from_item, string, to_item};
use crate::aws::classify;
use crate::domain::app::AppRecord;
use crate::error::{DependencyError, FailureClass};

#[derive(Clone)]
pub struct AppStore {
    client: Client,
    table: String,
}

impl AppStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub async fn get(&self, app_key: &str) -> Result<Option<AppRecord>, DependencyError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("app_key", string(app_key))
            .send()
            .await
            .map_err(|error| classify("dynamodb", "GetItem", error, &[]))?;
        output.item.map(|item| from_item("GetItem", item)).transpose()
    }

    /// Stores a new app; fails permanently if the key is taken (a 80-bit random collision).
    pub async fn create(&self, record: &AppRecord) -> Result<(), DependencyError> {
        self.put_if(record, "attribute_not_exists(app_key)", "AppExists", "already exists").await
    }

    /// Replaces an existing app (rotation, disabling); fails if it does not exist.
    pub async fn update(&self, record: &AppRecord) -> Result<(), DependencyError> {
        self.put_if(record, "attribute_exists(app_key)", "NoSuchApp", "does not exist").await
    }

    async fn put_if(
        &self,
        record: &AppRecord,
        condition: &str,
        code: &str,
        failure: &str,
    ) -> Result<(), DependencyError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_item("PutItem", record)?))
            .condition_expression(condition)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Err(DependencyError {
                    class: FailureClass::Permanent,
                    service: "dynamodb",
                    operation: "PutItem",
                    code: code.into(),
                    message: format!("app {} {failure}", record.app_key),
                })
            }
            Err(error) => Err(classify("dynamodb", "PutItem", error, &[])),
        }
    }

    /// Every app (an admin listing: a paginated Scan of a small table).
    pub async fn list(&self) -> Result<Vec<AppRecord>, DependencyError> {
        let mut apps = Vec::new();
        let mut pages = self.client.scan().table_name(&self.table).into_paginator().items().send();
        while let Some(item) = pages.next().await {
            let item = item.map_err(|error| classify("dynamodb", "Scan", error, &[]))?;
            apps.push(from_item("Scan", item)?);
        }
        apps.sort_by(|a: &AppRecord, b: &AppRecord| a.created_at.cmp(&b.created_at));
        Ok(apps)
    }
}
