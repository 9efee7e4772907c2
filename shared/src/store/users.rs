//! The users table. Partition key `pk`, sort key `sk`:
//! - `USER#<id>` / `PROFILE`: contact data, preferences and devices (a map keyed by the token's
//!   SHA-256), so one read addresses a user on every channel;
//! - `TOKEN#<sha256>` / `OWNER`: which user a push token belongs to, so a token registered by
//!   another user moves instead of reaching two people.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, Put, ReturnValue, TransactWriteItem, Update};

use super::{Item, from_item, string, to_item};
use crate::aws::classify;
use crate::domain::user::{
    Contacts, Device, DeviceToken, MAX_DEVICES, Preferences, PreferencesPatch, UserId, UserProfile,
};
use crate::error::{DependencyError, FailureClass};

const PROFILE: &str = "PROFILE";
/// The most keys one `BatchGetItem` takes.
const BATCH_GET_KEYS: usize = 100;
const OWNER: &str = "OWNER";

#[derive(Clone)]
pub struct UserStore {
    client: Client,
    table: String,
}

fn user_key(user_id: &UserId) -> AttributeValue {
    AttributeValue::S(format!("USER#{user_id}"))
}

fn token_key(token: &DeviceToken) -> AttributeValue {
    AttributeValue::S(format!("TOKEN#{}", token.key()))
}

fn is_conditional_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(
    error: &aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> bool {
    error.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}

/// The outcome of a device registration.
#[derive(Debug, PartialEq, Eq)]
pub enum Registration {
    Added(Device),
    AlreadyRegistered(Device),
    NoSuchUser,
    TooManyDevices,
}

impl UserStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Reads one item, strongly consistent: an API caller reads its own writes.
    async fn get_item(&self, pk: AttributeValue, sk: &str) -> Result<Option<Item>, DependencyError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", pk)
            .key("sk", string(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| classify("dynamodb", "GetItem", error, &[]))?;
        Ok(output.item)
    }

    pub async fn get(&self, user_id: &UserId) -> Result<Option<UserProfile>, DependencyError> {
        self.get_item(user_key(user_id), PROFILE).await?.map(|item| from_item("GetItem", item)).transpose()
    }

    /// The profiles of `user_ids` that exist, read as [`UserStore::get`] reads one, in one
    /// request per 100 (again for any keys DynamoDB leaves unprocessed, a few times).
    pub async fn profiles(&self, user_ids: &[UserId]) -> Result<HashMap<UserId, UserProfile>, DependencyError> {
        let mut found = HashMap::with_capacity(user_ids.len());
        for chunk in user_ids.chunks(BATCH_GET_KEYS) {
            let keys = chunk
                .iter()
                .map(|user_id| {
                    HashMap::from([("pk".to_string(), user_key(user_id)), ("sk".to_string(), string(PROFILE))])
                })
                .collect();
            let request = KeysAndAttributes::builder().set_keys(Some(keys)).consistent_read(true).build();
            let mut asking = Some(request.expect("the keys, its one required field, are set"));
            // The first try at once; unprocessed keys again after a growing pause.
            for pause_ms in [0, 50, 200, 800] {
                let Some(request) = asking.take() else { break };
                tokio::time::sleep(std::time::Duration::from_millis(pause_ms)).await;
                let output = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|error| classify("dynamodb", "BatchGetItem", error, &[]))?;
                for item in output.responses.unwrap_or_default().remove(&self.table).unwrap_or_default() {
                    let profile: UserProfile = from_item("BatchGetItem", item)?;
                    found.insert(profile.user_id.clone(), profile);
                }
                asking = output.unprocessed_keys.and_then(|mut left| left.remove(&self.table));
            }
            if asking.is_some() {
                return Err(DependencyError {
                    class: FailureClass::Throttled,
                    service: "dynamodb",
                    operation: "BatchGetItem",
                    code: "UnprocessedKeys".into(),
                    message: "DynamoDB left some users unread after four tries".into(),
                });
            }
        }
        Ok(found)
    }

    /// Writes a whole profile (imports, seeding).
    pub async fn put(&self, profile: &UserProfile) -> Result<(), DependencyError> {
        let mut item: Item = to_item("PutItem", profile)?;
        item.insert("pk".into(), user_key(&profile.user_id));
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

    /// Replaces a user's contact data, creating the user if needed; preferences and devices are
    /// kept. Returns the user and whether it was created.
    pub async fn put_contacts(
        &self,
        user_id: &UserId,
        contacts: &Contacts,
        now: &str,
    ) -> Result<(UserProfile, bool), DependencyError> {
        // Every attribute through a placeholder: several of these names (`timezone`, …) are
        // DynamoDB reserved words.
        let mut sets = vec![
            "#user_id = :user_id".to_string(),
            "#updated_at = :now".to_string(),
            "#created_at = if_not_exists(#created_at, :now)".to_string(),
            "#preferences = if_not_exists(#preferences, :preferences)".to_string(),
            "#devices = if_not_exists(#devices, :devices)".to_string(),
        ];
        let mut removes = Vec::new();
        let mut names: HashMap<String, String> = ["user_id", "updated_at", "created_at", "preferences", "devices"]
            .into_iter()
            .map(|name| (format!("#{name}"), name.to_string()))
            .collect();
        let mut values: HashMap<String, AttributeValue> = HashMap::from([
            (":user_id".into(), string(user_id.as_str())),
            (":now".into(), string(now)),
            (":preferences".into(), AttributeValue::M(to_item("UpdateItem", &Preferences::default())?)),
            (":devices".into(), AttributeValue::M(HashMap::new())),
        ]);
        let fields: [(&str, Option<&str>); 4] = [
            ("email", contacts.email.as_ref().map(|v| v.as_str())),
            ("phone", contacts.phone.as_ref().map(|v| v.as_str())),
            ("locale", contacts.locale.as_ref().map(|v| v.as_str())),
            ("timezone", contacts.timezone.as_ref().map(|v| v.as_str())),
        ];
        for (name, value) in fields {
            names.insert(format!("#{name}"), name.to_string());
            match value {
                Some(value) => {
                    sets.push(format!("#{name} = :{name}"));
                    values.insert(format!(":{name}"), string(value));
                }
                None => removes.push(format!("#{name}")),
            }
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        let output = self
            .update_profile(user_id)
            .update_expression(expression)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|error| classify("dynamodb", "UpdateItem", error, &[]))?;
        let profile: UserProfile = from_item("UpdateItem", output.attributes.unwrap_or_default())?;
        let created = profile.created_at == now;
        Ok((profile, created))
    }

    /// Erases a user: contacts, preferences, devices and the devices' ownership records.
    pub async fn delete(&self, user_id: &UserId) -> Result<(), DependencyError> {
        let output = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", user_key(user_id))
            .key("sk", string(PROFILE))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(|error| classify("dynamodb", "DeleteItem", error, &[]))?;
        let Some(old) = output.attributes else { return Ok(()) };
        let profile: UserProfile = from_item("DeleteItem", old)?;
        for device in profile.devices.values() {
            let token =
                DeviceToken::parse(device.platform, &device.token).map_err(|message| corrupt_device(&message))?;
            self.release_token(&token, user_id).await?;
        }
        Ok(())
    }

    /// Applies a partial preferences update and returns the profile it leaves; `None` when the
    /// user does not exist or, given `unchanged_since`, when the preferences changed since that
    /// [`UserProfile::preferences_revision`] (a form rendered from older preferences changes nothing).
    pub async fn set_preferences(
        &self,
        user_id: &UserId,
        patch: PreferencesPatch,
        now: &str,
        unchanged_since: Option<&str>,
    ) -> Result<Option<UserProfile>, DependencyError> {
        let mut sets = vec!["updated_at = :now".to_string(), "preferences_updated_at = :now".to_string()];
        let mut values = HashMap::from([(":now".to_string(), string(now))]);
        for (channel, value) in [("push", patch.push), ("sms", patch.sms), ("email", patch.email)] {
            if let Some(value) = value {
                sets.push(format!("preferences.{channel} = :{channel}"));
                values.insert(format!(":{channel}"), AttributeValue::Bool(value));
            }
        }
        let mut expression = String::new();
        match patch.quiet_hours {
            None => {}
            Some(None) => expression = " REMOVE preferences.quiet_hours".into(),
            Some(Some(window)) => {
                sets.push("preferences.quiet_hours = :quiet_hours".into());
                values.insert(":quiet_hours".into(), AttributeValue::M(to_item("UpdateItem", &window)?));
            }
        }
        let mut condition = "attribute_exists(pk)".to_string();
        match unchanged_since {
            None => {}
            Some("") => condition.push_str(" AND attribute_not_exists(preferences_updated_at)"),
            Some(revision) => {
                condition.push_str(" AND preferences_updated_at = :seen");
                values.insert(":seen".into(), string(revision));
            }
        }
        let result = self
            .update_profile(user_id)
            .update_expression(format!("SET {}{expression}", sets.join(", ")))
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => Ok(Some(from_item("UpdateItem", output.attributes.unwrap_or_default())?)),
            Err(error) if is_conditional_failure(&error) => Ok(None),
            Err(error) => Err(classify("dynamodb", "UpdateItem", error, &[])),
        }
    }

    /// Registers a device with a user, moving the token from another user if it was theirs.
    pub async fn register_device(
        &self,
        user_id: &UserId,
        token: &DeviceToken,
        device: Device,
        now: &str,
    ) -> Result<Registration, DependencyError> {
        let Some(profile) = self.get(user_id).await? else { return Ok(Registration::NoSuchUser) };
        let key = token.key();
        if let Some(existing) = profile.devices.get(&key)
            && existing.active
        {
            return Ok(Registration::AlreadyRegistered(existing.clone()));
        }
        if !profile.devices.contains_key(&key) && profile.devices.len() >= MAX_DEVICES {
            return Ok(Registration::TooManyDevices);
        }
        let previous_owner = self.token_owner(token).await?;

        let profile_update = self
            .device_update(user_id, "SET devices.#key = :device, updated_at = :now", &key)
            .expression_attribute_values(":device", AttributeValue::M(to_item("TransactWriteItems", &device)?))
            .expression_attribute_values(":now", string(now));
        let mut operations = vec![
            TransactWriteItem::builder().update(profile_update.build().expect("key and expression are set")).build(),
        ];
        let mut owner_item: Item = HashMap::from([
            ("pk".into(), token_key(token)),
            ("sk".into(), string(OWNER)),
            ("user_id".into(), string(user_id.as_str())),
        ]);
        owner_item.insert("token".into(), string(token.as_str()));
        let owner_put = Put::builder().table_name(&self.table).set_item(Some(owner_item));
        let owner_put = match &previous_owner {
            None => owner_put.condition_expression("attribute_not_exists(pk)"),
            Some(previous) => owner_put
                .condition_expression("user_id = :previous")
                .expression_attribute_values(":previous", string(previous.as_str())),
        };
        operations.push(TransactWriteItem::builder().put(owner_put.build().expect("table and item are set")).build());
        if let Some(previous) = previous_owner.as_ref().filter(|previous| *previous != user_id)
            && self.get(previous).await?.is_some()
        {
            let moved_from = self.device_update(previous, "REMOVE devices.#key", &key);
            operations.push(
                TransactWriteItem::builder().update(moved_from.build().expect("key and expression are set")).build(),
            );
        }
        self.client
            .transact_write_items()
            .set_transact_items(Some(operations))
            .send()
            .await
            .map_err(|error| classify("dynamodb", "TransactWriteItems", error, &[]))?;
        Ok(Registration::Added(device))
    }

    /// An UpdateItem of a user's profile item.
    fn update_profile(
        &self,
        user_id: &UserId,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client.update_item().table_name(&self.table).key("pk", user_key(user_id)).key("sk", string(PROFILE))
    }

    /// An update of one device entry (`#key`) in an existing user's profile, for a transaction.
    fn device_update(
        &self,
        user_id: &UserId,
        expression: &str,
        key: &str,
    ) -> aws_sdk_dynamodb::types::builders::UpdateBuilder {
        Update::builder()
            .table_name(&self.table)
            .key("pk", user_key(user_id))
            .key("sk", string(PROFILE))
            .update_expression(expression)
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#key", key)
    }

    /// Removes a device from a user (no-op when it is not theirs).
    pub async fn remove_device(&self, user_id: &UserId, token: &DeviceToken) -> Result<(), DependencyError> {
        let result = self
            .update_profile(user_id)
            .update_expression("REMOVE devices.#key")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#key", token.key())
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(error) if is_conditional_failure(&error) => return Ok(()),
            Err(error) => return Err(classify("dynamodb", "UpdateItem", error, &[])),
        }
        self.release_token(token, user_id).await
    }

    async fn token_owner(&self, token: &DeviceToken) -> Result<Option<UserId>, DependencyError> {
        let owner = self.get_item(token_key(token), OWNER).await?.and_then(|item| match item.get("user_id") {
            Some(AttributeValue::S(user_id)) => UserId::parse(user_id).ok(),
            _ => None,
        });
        Ok(owner)
    }

    /// Deletes the ownership record if `user_id` still owns the token.
    async fn release_token(&self, token: &DeviceToken, user_id: &UserId) -> Result<(), DependencyError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", token_key(token))
            .key("sk", string(OWNER))
            .condition_expression("user_id = :user_id")
            .expression_attribute_values(":user_id", string(user_id.as_str()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_conditional_failure(&error) => Ok(()),
            Err(error) => Err(classify("dynamodb", "DeleteItem", error, &[])),
        }
    }

    /// Remembers a device's SNS endpoint, if the device is still the user's.
    pub async fn set_device_endpoint(
        &self,
        user_id: &UserId,
        token: &DeviceToken,
        endpoint_arn: &str,
    ) -> Result<(), DependencyError> {
        self.update_device(user_id, token, "endpoint_arn", string(endpoint_arn)).await
    }

    /// Marks a device inactive (its endpoint is disabled or gone): it is never used again.
    pub async fn deactivate_device(&self, user_id: &UserId, token: &DeviceToken) -> Result<(), DependencyError> {
        self.update_device(user_id, token, "active", AttributeValue::Bool(false)).await
    }

    async fn update_device(
        &self,
        user_id: &UserId,
        token: &DeviceToken,
        attribute: &str,
        value: AttributeValue,
    ) -> Result<(), DependencyError> {
        let result = self
            .update_profile(user_id)
            .update_expression("SET devices.#key.#attribute = :value")
            .condition_expression("attribute_exists(devices.#key)")
            .expression_attribute_names("#key", token.key())
            .expression_attribute_names("#attribute", attribute)
            .expression_attribute_values(":value", value)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_conditional_failure(&error) => Ok(()),
            Err(error) => Err(classify("dynamodb", "UpdateItem", error, &[])),
        }
    }
}

fn corrupt_device(message: &str) -> DependencyError {
    DependencyError {
        class: FailureClass::Permanent,
        service: "dynamodb",
        operation: "DeleteItem",
        code: "CorruptItem".into(),
        message: format!("a stored device token {message}"),
    }
}

impl crate::ports::Recipients for UserStore {
    async fn profile(&self, user_id: &UserId) -> Result<Option<UserProfile>, DependencyError> {
        self.get(user_id).await
    }

    async fn profiles(&self, user_ids: &[UserId]) -> Result<HashMap<UserId, UserProfile>, DependencyError> {
        UserStore::profiles(self, user_ids).await
    }
}
