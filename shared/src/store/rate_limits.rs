//! The rate-limits table: key `key` = `<user>#<channel>`, TTL `expires_at`. One item per user
//! and channel holds the notifications counted in the last hour (`sends`: id → epoch seconds)
//! and a `version`. Counting one is a read, then a write conditional on the version read: two
//! deliveries to the same user at once cannot both take the last place, and a write applied
//! whose answer was lost reads back as already counted when it is tried again.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{from_item, string, to_item};
use crate::aws::classify;
use crate::domain::channel::Channel;
use crate::domain::rate_limit::{Admission, RecentSends};
use crate::domain::user::UserId;
use crate::error::{DependencyError, FailureClass};

/// Reads and writes before giving up on a user whose other deliveries keep winning the race
/// (each round, one of them does): the delivery is then retried later, like any transient error.
const ATTEMPTS: usize = 12;

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    key: String,
    sends: RecentSends,
    version: u64,
    expires_at: i64,
}

#[derive(Clone)]
pub struct RateLimiter {
    client: Client,
    table: String,
    per_hour: u32,
}

impl RateLimiter {
    pub fn new(client: Client, table: impl Into<String>, per_hour: u32) -> Self {
        Self { client, table: table.into(), per_hour }
    }

    /// Counts `notification_id` for `user_id` on `channel` at `now_epoch`; false when the
    /// user's limit for the last hour is already reached by other notifications (nothing is
    /// counted then).
    pub async fn try_take(
        &self,
        user_id: &UserId,
        channel: Channel,
        notification_id: &str,
        now_epoch: i64,
    ) -> Result<bool, DependencyError> {
        let key = format!("{user_id}#{channel}");
        for attempt in 0..ATTEMPTS {
            // The first read may be stale, at half the price: a stale item only makes the
            // conditional write fail, and the next read is strongly consistent.
            let stored = self.read(&key, attempt > 0).await?;
            let (sends, version) = stored.map(|stored| (stored.sends, Some(stored.version))).unwrap_or_default();
            match sends.admit(notification_id, now_epoch, self.per_hour) {
                Admission::AlreadyCounted => return Ok(true),
                Admission::OverLimit => return Ok(false),
                Admission::Admitted(sends) => {
                    if self.write(key.clone(), sends, version).await? {
                        return Ok(true);
                    }
                }
            }
        }
        Err(DependencyError {
            class: FailureClass::Transient,
            service: "dynamodb",
            operation: "PutItem",
            code: "RateLimitContention".into(),
            message: format!("{ATTEMPTS} conditional writes of {key} lost to concurrent deliveries"),
        })
    }

    async fn read(&self, key: &str, consistent: bool) -> Result<Option<Stored>, DependencyError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key", string(key))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(|error| classify("dynamodb", "GetItem", error, &[]))?;
        output.item.map(|item| from_item("GetItem", item)).transpose()
    }

    /// Stores `sends` as the version after `read_version`; false when another write came first.
    async fn write(&self, key: String, sends: RecentSends, read_version: Option<u64>) -> Result<bool, DependencyError> {
        // The record means nothing once its last send leaves the window; TTL deletion may lag.
        let expires_at = sends.expires_at().unwrap_or_default();
        let stored = Stored { key, sends, version: read_version.map_or(1, |version| version + 1), expires_at };
        let request = self.client.put_item().table_name(&self.table).set_item(Some(to_item("PutItem", &stored)?));
        let request = match read_version {
            None => {
                request.condition_expression("attribute_not_exists(#key)").expression_attribute_names("#key", "key")
            }
            Some(version) => request
                .condition_expression("#version = :version")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":version", AttributeValue::N(version.to_string())),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Ok(false)
            }
            Err(error) => Err(classify("dynamodb", "PutItem", error, &[])),
        }
    }
}
