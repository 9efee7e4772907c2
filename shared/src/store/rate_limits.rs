//! The rate-limits table: key `key` = `<user>#<channel>#<hour>`, TTL `expires_at`. One atomic
//! conditional `ADD` of the notification's id to the window's set counts it against the user's
//! hourly limit for the channel (a fixed window: at most `limit` notifications per clock hour).
//! Adding the same id again is free, so retries and a notification's several push devices count
//! once.

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

    /// Counts `notification_id` for `user_id` on `channel` now; false when the hour's limit is
    /// already reached by other notifications (nothing is counted then).
    pub async fn try_take(
        &self,
        user_id: &UserId,
        channel: Channel,
        notification_id: &str,
        now_epoch: i64,
    ) -> Result<bool, DependencyError> {
        let window = now_epoch - now_epoch.rem_euclid(WINDOW_SECONDS);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key", string(&format!("{user_id}#{channel}#{window}")))
            .update_expression("ADD #ids :ids SET expires_at = :expires")
            .condition_expression("attribute_not_exists(#ids) OR size(#ids) < :limit OR contains(#ids, :id)")
            .expression_attribute_names("#ids", "notification_ids")
            .expression_attribute_values(":ids", AttributeValue::Ss(vec![notification_id.to_string()]))
            .expression_attribute_values(":id", string(notification_id))
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
