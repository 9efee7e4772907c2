//! The rate-limits table: key `key` = `<user>#<channel>`, TTL `expires_at`. One item per user
//! and channel holds the notifications counted in the last hour (`sends`: id → epoch seconds)
//! and a `version`. Counting one is a read, then a write conditional on the version (and the
//! expiry) read: two deliveries to the same user at once cannot both take the last place, and a
//! write applied whose answer was lost reads back as already counted when it is tried again.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::{from_item, string, to_item};
use crate::aws::classify;
use crate::domain::channel::Channel;
use crate::domain::rate_limit::{Admission, HourlyLimit, RecentSends};
use crate::domain::user::UserId;
use crate::error::{DependencyError, FailureClass};

/// The key of `user_id`'s record on `channel`.
pub fn record_key(user_id: &str, channel: Channel) -> String {
    format!("{user_id}#{channel}")
}

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
    per_hour: HourlyLimit,
}

impl RateLimiter {
    pub fn new(client: Client, table: impl Into<String>, per_hour: HourlyLimit) -> Self {
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
        let key = record_key(user_id.as_str(), channel);
        // A write loses only to another delivery's write, and each of those counts one more
        // notification: past the limit plus one, the next read is over the limit.
        let attempts = self.per_hour.get() as usize + 2;
        for attempt in 0..attempts {
            // The first read may be stale, at half the price. A stale record holds a subset of
            // what is counted now, so its "admitted" only makes the conditional write fail and
            // its "already counted" is still true; its "over the limit", which skips the
            // notification for good, is confirmed by a strongly consistent read.
            let consistent = attempt > 0;
            let stored = self.read(&key, consistent).await?;
            let (sends, read) = match stored {
                Some(stored) => (stored.sends, Some((stored.version, stored.expires_at))),
                None => (RecentSends::default(), None),
            };
            match sends.admit(notification_id, now_epoch, self.per_hour) {
                Admission::AlreadyCounted => return Ok(true),
                Admission::OverLimit if consistent => return Ok(false),
                Admission::OverLimit => continue,
                Admission::Admitted(sends) => {
                    if self.write(key.clone(), sends, read).await? {
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
            message: format!("{attempts} conditional writes of {key} lost to concurrent deliveries"),
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

    /// Stores `sends` as the version after the one read (`read`: its version and expiry); false
    /// when another write came first.
    async fn write(&self, key: String, sends: RecentSends, read: Option<(u64, i64)>) -> Result<bool, DependencyError> {
        // The record means nothing once its last send leaves the window; TTL deletion may lag.
        let expires_at = sends.expires_at().unwrap_or_default();
        let version = read.map_or(1, |(version, _)| version + 1);
        let stored = Stored { key, sends, version, expires_at };
        let request = self.client.put_item().table_name(&self.table).set_item(Some(to_item("PutItem", &stored)?));
        let request = match read {
            None => {
                request.condition_expression("attribute_not_exists(#key)").expression_attribute_names("#key", "key")
            }
            // The expiry too: versions start again at 1 after TTL deletes a record, and a stale
            // read of the deleted one must not match its successor.
            Some((version, expires_at)) => request
                .condition_expression("#version = :version AND #expires_at = :expires_at")
                .expression_attribute_names("#version", "version")
                .expression_attribute_names("#expires_at", "expires_at")
                .expression_attribute_values(":version", AttributeValue::N(version.to_string()))
                .expression_attribute_values(":expires_at", AttributeValue::N(expires_at.to_string())),
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

impl crate::ports::Allowance for RateLimiter {
    async fn try_take(
        &self,
        user_id: &UserId,
        channel: Channel,
        notification_id: &crate::domain::notification::NotificationId,
        now_epoch: i64,
    ) -> Result<bool, DependencyError> {
        RateLimiter::try_take(self, user_id, channel, notification_id.as_str(), now_epoch).await
    }
}
