//! The rate-limits table: key `key` = `<user>#<channel>#<hour>`, TTL `expires_at`. One atomic
//! conditional `ADD` per delivery counts it against the user's hourly limit for the channel (a
//! fixed window: at most `limit` per clock hour).

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;

use super::string;
use crate::aws::classify;
use crate::domain::channel::Channel;
use crate::domain::user::UserId;
use crate::error::DependencyError;

const WINDOW_SECONDS: i64 = 3600;

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

    /// Counts one notification to `user_id` on `channel` now; false when the hour's limit is
    /// already reached (nothing is counted then).
    pub async fn try_take(&self, user_id: &UserId, channel: Channel, now_epoch: i64) -> Result<bool, DependencyError> {
        let window = now_epoch - now_epoch.rem_euclid(WINDOW_SECONDS);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key", string(&format!("{user_id}#{channel}#{window}")))
            .update_expression("ADD #count :one SET expires_at = :expires")
            .condition_expression("attribute_not_exists(#count) OR #count < :limit")
            .expression_attribute_names("#count", "count")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":limit", AttributeValue::N(self.per_hour.to_string()))
            // Kept one window past its end; TTL deletion may lag, the key's hour never recurs.
            .expression_attribute_values(":expires", AttributeValue::N((window + 2 * WINDOW_SECONDS).to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Ok(false)
            }
            Err(error) => Err(classify("dynamodb", "UpdateItem", error, &[])),
        }
    }
}
