//! The users table: partition key `pk` = `USER#<id>`, sort key `sk`: `PROFILE` holds contact
//! data and preferences; later items under the same partition hold the user's devices, so one
//! Query reads everything needed to address a user.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{Item, from_item, string, to_item};
use crate::aws::classify;
use crate::domain::user::{UserId, UserProfile};
use crate::error::DependencyError;

const PROFILE: &str = "PROFILE";

#[derive(Clone)]
pub struct UserStore {
    client: Client,
    table: String,
}

fn partition(user_id: &UserId) -> AttributeValue {
    AttributeValue::S(format!("USER#{user_id}"))
}

impl UserStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub async fn get_profile(&self, user_id: &UserId) -> Result<Option<UserProfile>, DependencyError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", partition(user_id))
            .key("sk", string(PROFILE))
            .send()
            .await
            .map_err(|error| classify("dynamodb", "GetItem", error, &[]))?;
        output.item.map(|item| from_item("GetItem", item)).transpose()
    }

    pub async fn put_profile(&self, profile: &UserProfile) -> Result<(), DependencyError> {
        let mut item: Item = to_item("PutItem", profile)?;
        item.insert("pk".into(), partition(&profile.user_id));
        item.insert("sk".into(), string(PROFILE));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|error| classify("dynamodb", "PutItem", error, &[]))?;
        Ok(())
    }
}
