//! The notification log record: written once at intake with a conditional put that is also
//! the idempotency check, then moved along by the dispatchers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::channel::Channel;
use crate::error::FailureClass;

/// How long the log (and so every idempotency key) is kept: 7 days, well over the 24 h a
/// caller may retry with the same key.
pub const RETENTION_SECONDS: i64 = 7 * 24 * 3600;

/// A notification id: a UUIDv7 for requests without an idempotency key, and for requests with
/// one a UUIDv8 derived from (app, key), so the log write itself detects the duplicate.
pub fn notification_id(app_key: &str, idempotency_key: Option<&str>) -> String {
    match idempotency_key {
        None => Uuid::now_v7().to_string(),
        Some(key) => {
            let digest = Sha256::digest(format!("{app_key}\n{key}").as_bytes());
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            Uuid::new_v8(bytes).to_string()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Queued,
    Sending,
    Sent,
    Failed,
    Skipped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The user opted out of the channel.
    OptedOut,
    /// The user has no contact (address, number, active device) for the channel.
    NoContact,
    /// The template has no content for the channel.
    NoContent,
}

/// Why a delivery failed: what on-call needs to explain it without reading logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryFailure {
    pub class: FailureClass,
    pub code: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub channel: Channel,
    pub target: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeliveryFailure>,
    pub updated_at: String,
    /// The queue message body, kept so a delivery that was logged but never enqueued can be.
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedChannel {
    pub channel: Channel,
    pub reason: SkipReason,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEvent {
    pub at: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRecord {
    pub id: String,
    pub app_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// SHA-256 of the request body: the same key with another body is refused.
    pub request_hash: String,
    pub user_id: String,
    pub template: String,
    pub created_at: String,
    /// Epoch seconds; the table's TTL attribute (and compared by code, since TTL lags).
    pub expires_at: i64,
    /// Keyed by delivery id.
    pub deliveries: BTreeMap<String, DeliveryRecord>,
    pub skipped: Vec<SkippedChannel>,
    pub events: Vec<TimelineEvent>,
}

pub fn request_hash(body: &[u8]) -> String {
    super::app::hex(&Sha256::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_from_the_same_app_and_key_agree_and_differ_otherwise() {
        let first = notification_id("ak_1", Some("order-42"));
        assert_eq!(first, notification_id("ak_1", Some("order-42")));
        assert_ne!(first, notification_id("ak_2", Some("order-42")));
        assert_ne!(first, notification_id("ak_1", Some("order-43")));
        assert_ne!(notification_id("ak_1", None), notification_id("ak_1", None));
        assert!(Uuid::parse_str(&first).is_ok());
    }
}
