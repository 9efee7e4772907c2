//! The notification log record: written once at intake with a conditional put that is also
//! the idempotency check, then moved along by the dispatchers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::channel::Channel;
use super::failover::ProviderTrail;
use super::lifecycle::{CLAIMS, Current, Event, TimelineKind};
use crate::error::FailureClass;

/// How long the log (and so every idempotency key) is kept: 7 days, well over the 24 h a
/// caller may retry with the same key.
pub const RETENTION_SECONDS: i64 = 7 * 24 * 3600;

/// Names that are strings on the wire and in the log, kept apart by type: a notification's id
/// is never taken for a delivery's.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> Self {
                Self(text.to_string())
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> Self {
                Self(text)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

id_type!(
    /// A notification's id: the log's key (see [`notification_id`]).
    NotificationId
);
id_type!(
    /// A delivery's id within its notification: its channel, or for push the device's place
    /// (`sms`, `email`, `push-1`, …).
    DeliveryId
);

/// A notification id: a UUIDv7 for requests without an idempotency key, and for requests with
/// one a UUIDv8 derived from (app, key), so the log write itself detects the duplicate.
pub fn notification_id(app_key: &str, idempotency_key: Option<&str>) -> NotificationId {
    NotificationId(match idempotency_key {
        None => Uuid::now_v7().to_string(),
        Some(key) => {
            let digest = Sha256::digest(format!("{app_key}\n{key}").as_bytes());
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            Uuid::new_v8(bytes).to_string()
        }
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Queued,
    Sending,
    /// Its message is in the channel's dead-letter queue: the queue's last receive failed
    /// transiently. It is attempted again when on-call redrives the DLQ.
    Parked,
    Sent,
    /// Email only, from SES feedback: the receiving server accepted it.
    Delivered,
    /// Email only, from SES feedback: a hard bounce (the address is suppressed).
    Bounced,
    /// Email only, from SES feedback: the recipient marked it as spam (the address is suppressed).
    Complained,
    Failed,
    Skipped,
    /// The caller cancelled it before it started sending.
    Cancelled,
    /// Waiting for its `deliver_after` (a `send_at`, or the end of the recipient's quiet hours).
    Scheduled,
}

impl DeliveryStatus {
    /// Whether the delivery has an outcome: it is never attempted again.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            DeliveryStatus::Queued | DeliveryStatus::Sending | DeliveryStatus::Parked | DeliveryStatus::Scheduled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sending => "sending",
            DeliveryStatus::Parked => "parked",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Bounced => "bounced",
            DeliveryStatus::Complained => "complained",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
            DeliveryStatus::Cancelled => "cancelled",
            DeliveryStatus::Scheduled => "scheduled",
        }
    }
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
    /// The user was deleted between intake and sending.
    UserDeleted,
    /// The device's push endpoint was disabled or deleted.
    DeviceInactive,
    /// The user reached the channel's per-user limit (transactional templates are exempt).
    RateLimited,
    /// The address hard-bounced or complained before: it is on the suppression list.
    Suppressed,
}

impl SkipReason {
    /// As the API and the stats spell it (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::OptedOut => "opted_out",
            SkipReason::NoContact => "no_contact",
            SkipReason::NoContent => "no_content",
            SkipReason::UserDeleted => "user_deleted",
            SkipReason::DeviceInactive => "device_inactive",
            SkipReason::RateLimited => "rate_limited",
            SkipReason::Suppressed => "suppressed",
        }
    }
}

impl DeliveryFailure {
    /// Whether it pins the delivery to the provider that answered it: that answer left it
    /// unknown whether the message went out.
    pub fn pins(&self) -> bool {
        self.class == FailureClass::Ambiguous && self.provider.is_some()
    }
}

/// Why a delivery failed: what on-call needs to explain it without reading logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryFailure {
    pub class: FailureClass,
    pub code: String,
    pub message: String,
    /// The provider that answered so (absent when the failure was our own state's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub channel: Channel,
    pub target: String,
    pub status: DeliveryStatus,
    /// Attempts made (claims), those that waited included.
    pub attempts: u32,
    /// Attempts that ended waiting for the channel's send rate: not failures.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waits: u32,
    /// The retry budget spent: failed attempts (and attempts that died) since the delivery was
    /// logged or last redriven.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// The last failure: the permanent one for `failed`, the latest transient one otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<DeliveryFailure>,
    /// While `sending`: until when (epoch milliseconds) the attempt holds the delivery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<i64>,
    /// The provider the latest attempt sent through (written by its claim, before the call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// An answer from `provider` left it unknown whether it sent the message: only it may.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<SkipReason>,
    /// When the tracking pixel was first loaded (email with tracking on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<String>,
    /// How many times its tracked links were clicked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clicks: Option<u64>,
    pub updated_at: String,
    /// While `scheduled` (and after, as a record of it): when (epoch ms) it is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_after: Option<i64>,
    /// The queue message body, stored only when SQS did not take it (the recovery sweep's
    /// outbox). An enqueued message lives in SQS alone: keeping every body in the record would
    /// bill each of its later writes by the body's size (an email's HTML is often many KB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl DeliveryRecord {
    /// A delivery as intake logs it: queued, never attempted; `scheduled` when it is due only
    /// at `deliver_after` (epoch ms).
    pub fn queued(channel: Channel, target: String, now: &str, deliver_after: Option<i64>) -> Self {
        Self {
            channel,
            target,
            status: if deliver_after.is_some() { DeliveryStatus::Scheduled } else { DeliveryStatus::Queued },
            attempts: 0,
            waits: 0,
            failures: 0,
            error: None,
            lease_until: None,
            provider: None,
            pinned: false,
            provider_message_id: None,
            skip_reason: None,
            opened_at: None,
            clicks: None,
            updated_at: now.to_string(),
            deliver_after,
            message: None,
        }
    }
}

/// What a dispatcher may do with a delivery it received, given the delivery's state (the
/// lifecycle table's claims).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimDecision {
    /// Take it with this claim: it is queued, parked (redriven), or its lease expired (the
    /// attempt holding it died).
    Take(Event),
    /// Another attempt holds an unexpired lease: come back when it ends.
    HeldUntil(i64),
    /// It is scheduled for later (epoch ms) than the message that came for it says: a message
    /// deferred after this one holds it.
    NotDue(i64),
    /// It has an outcome already: acknowledge without calling the provider.
    Finished(DeliveryStatus),
}

fn is_zero(count: &u32) -> bool {
    *count == 0
}

impl DeliveryRecord {
    /// The delivery as the lifecycle table's guards see it.
    pub fn current(&self) -> Current {
        Current { status: self.status, lease_until: self.lease_until, deliver_after: self.deliver_after }
    }

    /// What this record says about the providers its attempts used.
    pub fn trail(&self) -> ProviderTrail {
        let failed = self
            .error
            .as_ref()
            .is_some_and(|error| error.provider == self.provider && error.class.is_providers_fault());
        ProviderTrail { provider: self.provider.clone(), pinned: self.pinned, failed }
    }

    /// What the lifecycle table says of a claim now.
    pub fn claim_decision(&self, now_ms: i64) -> ClaimDecision {
        let claim = CLAIMS.into_iter().find(|claim| claim.transition().allows(self.current(), now_ms, None));
        match (claim, self.status, self.lease_until) {
            (Some(claim), _, _) => ClaimDecision::Take(claim),
            (None, DeliveryStatus::Sending, Some(until)) => ClaimDecision::HeldUntil(until),
            (None, DeliveryStatus::Scheduled, _) => ClaimDecision::NotDue(self.deliver_after.unwrap_or(now_ms)),
            (None, status, _) => ClaimDecision::Finished(status),
        }
    }
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
    pub kind: TimelineKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// The delivery it happened to (absent for what happened to the whole notification, and on
    /// events logged before deliveries were named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRecord {
    pub id: NotificationId,
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
    pub deliveries: BTreeMap<DeliveryId, DeliveryRecord>,
    pub skipped: Vec<SkippedChannel>,
    pub events: Vec<TimelineEvent>,
    /// While some delivery may still need the recovery sweep (its enqueue failed): the shard of
    /// the sparse `pending` index, and when (epoch seconds) the sweep looks at the record next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep_shard: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation_key: Option<CancellationKey>,
    /// While a cancel by its key may still find something to cancel: its partition of the
    /// sparse `cancellation` index ([`CancellationKey::scope`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_scope: Option<String>,
    /// The caller's `send_at`, normalised to UTC, when it was in the future.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at: Option<String>,
    /// The conversion the calling app reported, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion: Option<Conversion>,
}

/// What a notification led to, as the calling app reports it (`POST
/// /v1/notifications/{id}/events`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversion {
    /// When it happened (RFC 3339, UTC): the app's `occurred_at`, or when it was reported.
    pub occurred_at: String,
    /// What it was worth, in the app's own unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Number>,
}

/// How far ahead of our clock a reported `occurred_at` may be (the app's clock may run ahead).
pub const CONVERSION_CLOCK_SKEW_MS: i64 = 5 * 60 * 1000;
/// The largest conversion value, either sign: well inside what DynamoDB stores exactly enough.
pub const MAX_CONVERSION_VALUE: f64 = 1e15;

impl Conversion {
    /// From an app's report `{"type": "converted", "value"?: number, "occurred_at"?: time}`,
    /// at `now_ms`; every problem with its field.
    pub fn parse(body: &serde_json::Value, now_ms: i64) -> Result<Self, Vec<super::FieldError>> {
        use super::FieldError;
        let Some(object) = body.as_object() else {
            return Err(vec![FieldError::new("body", "must be a JSON object")]);
        };
        let mut errors: Vec<FieldError> = object
            .keys()
            .filter(|key| !["type", "value", "occurred_at"].contains(&key.as_str()))
            .map(|key| FieldError::new(key.as_str(), "is not a field of an event (type, value, occurred_at)"))
            .collect();
        match object.get("type").and_then(serde_json::Value::as_str) {
            Some("converted") => {}
            Some(_) | None => errors.push(FieldError::new("type", "must be \"converted\"")),
        }
        let value = match object.get("value") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Number(number))
                if number.as_f64().is_some_and(|value| value.abs() <= MAX_CONVERSION_VALUE) =>
            {
                Some(number.clone())
            }
            Some(_) => {
                errors.push(FieldError::new("value", "must be a number between -1e15 and 1e15"));
                None
            }
        };
        let occurred_ms = match object.get("occurred_at") {
            None | Some(serde_json::Value::Null) => Some(now_ms),
            Some(raw) => match raw.as_str().and_then(crate::time::parse_rfc3339_millis) {
                Some(at) if at > now_ms + CONVERSION_CLOCK_SKEW_MS => {
                    errors.push(FieldError::new("occurred_at", "must not be in the future"));
                    None
                }
                Some(at) => Some(at),
                None => {
                    errors.push(FieldError::new(
                        "occurred_at",
                        "must be an RFC 3339 time with its offset, such as 2026-11-22T10:00:00Z",
                    ));
                    None
                }
            },
        };
        match occurred_ms {
            Some(at) if errors.is_empty() => Ok(Self { occurred_at: crate::time::rfc3339_millis(at), value }),
            _ => Err(errors),
        }
    }
}

/// A caller's name for notifications it may cancel together (`POST /v1/notifications/cancel`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CancellationKey(String);

/// Shards of the `cancellation` index: one key's notifications (a whole campaign's) spread over
/// this many partitions, so accepting them never makes one partition hot.
pub const CANCELLATION_SHARDS: u32 = 8;

impl CancellationKey {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.chars().count() {
            1..=255 => Ok(Self(raw.to_string())),
            _ => Err("must be a string of 1 to 255 characters".into()),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The partition of the `cancellation` index that holds, in `shard`, the notifications of
    /// app `app_key` with this key.
    pub fn scope(&self, app_key: &str, shard: u32) -> String {
        format!("{app_key}#{shard}#{}", self.0)
    }

    /// The partition notification `id` goes in: a shard picked by its id (FNV-1a), so one key's
    /// notifications spread evenly and a replay of the same request picks the same.
    pub fn scope_of(&self, app_key: &str, id: &NotificationId) -> String {
        self.scope(app_key, fnv1a(id.as_str()) % CANCELLATION_SHARDS)
    }
}

/// FNV-1a of `text`: a stable, evenly spread hash for picking shards and short names.
pub fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193))
}

/// Shards of the `pending` index, so its writes spread over partitions.
pub const SWEEP_SHARDS: u32 = 4;

/// A shard of the `pending` index, as its key spells it: `pending#<n>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SweepShard(pub u32);

impl std::fmt::Display for SweepShard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pending#{}", self.0)
    }
}
/// How long after a failed enqueue the sweep first looks at the notification (it runs every
/// minute): soon, since nothing of it is in flight, but not within a moment of the failure.
pub const FIRST_SWEEP_AFTER_SECONDS: i64 = 60;

impl NotificationRecord {
    /// The notification as callers and on-call see it (`GET /v1/notifications/{id}`,
    /// `notifyctl status`): `completed` once every delivery has an outcome, else `accepted`.
    pub fn view(&self) -> serde_json::Value {
        use serde_json::json;
        let deliveries: Vec<serde_json::Value> = self
            .deliveries
            .values()
            .map(|delivery| {
                let mut body = json!({
                    "channel": delivery.channel,
                    "target": delivery.target,
                    "status": delivery.status,
                    "attempts": delivery.attempts,
                    "updated_at": delivery.updated_at,
                });
                if delivery.waits > 0 {
                    body["waits"] = json!(delivery.waits);
                }
                if let Some(error) = &delivery.error {
                    body["error"] = json!(error);
                }
                if let Some(reason) = delivery.skip_reason {
                    body["reason"] = json!(reason);
                }
                if let Some(provider) = &delivery.provider {
                    body["provider"] = json!(provider);
                }
                if let Some(id) = &delivery.provider_message_id {
                    body["provider_message_id"] = json!(id);
                }
                if let Some(at) = &delivery.opened_at {
                    body["opened_at"] = json!(at);
                }
                if let Some(clicks) = delivery.clicks {
                    body["clicks"] = json!(clicks);
                }
                if let Some(due) = delivery.deliver_after {
                    body["deliver_after"] = json!(crate::time::rfc3339_millis(due));
                }
                body
            })
            .collect();
        let mut view = json!({
            "id": self.id,
            "status": self.status(),
            "user_id": self.user_id,
            "template": self.template,
            "created_at": self.created_at,
            "deliveries": deliveries,
            "skipped": self.skipped,
            "events": self.events,
        });
        if let Some(key) = &self.cancellation_key {
            view["cancellation_key"] = json!(key);
        }
        if let Some(send_at) = &self.send_at {
            view["send_at"] = json!(send_at);
        }
        if let Some(conversion) = &self.conversion {
            view["conversion"] = json!(conversion);
        }
        view
    }

    /// `completed` once every delivery has an outcome; `scheduled` while every one without an
    /// outcome waits for its time; else `accepted`.
    pub fn status(&self) -> &'static str {
        let unfinished: Vec<DeliveryStatus> =
            self.deliveries.values().map(|delivery| delivery.status).filter(|status| !status.is_final()).collect();
        if unfinished.is_empty() {
            "completed"
        } else if unfinished.iter().all(|status| *status == DeliveryStatus::Scheduled) {
            "scheduled"
        } else {
            "accepted"
        }
    }

    /// The deliveries a cancel would move now (the lifecycle table's cancel row allows it).
    pub fn cancellable(&self, now_ms: i64) -> Vec<(DeliveryId, Channel)> {
        let cancel = Event::Cancel.transition();
        self.deliveries
            .iter()
            .filter(|(_, delivery)| cancel.allows(delivery.current(), now_ms, None))
            .map(|(id, delivery)| (id.clone(), delivery.channel))
            .collect()
    }

    /// Every delivery has an outcome.
    pub fn finished(&self) -> bool {
        self.deliveries.values().all(|delivery| delivery.status.is_final())
    }

    /// Deliveries whose message may be gone: never attempted (the enqueue after the log write
    /// was lost), or whose attempt died holding an expired lease. Deliveries retrying through
    /// SQS (or parked in a DLQ, or held for quiet hours) have a message and are left alone.
    pub fn stranded(&self, now_ms: i64) -> impl Iterator<Item = (&DeliveryId, &DeliveryRecord)> {
        self.deliveries.iter().filter(move |(_, delivery)| match delivery.status {
            DeliveryStatus::Queued | DeliveryStatus::Scheduled => delivery.attempts == 0,
            DeliveryStatus::Sending => delivery.lease_until.is_none_or(|until| until < now_ms),
            _ => false,
        })
    }
}

pub fn request_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(status: DeliveryStatus, lease_until: Option<i64>) -> DeliveryRecord {
        let queued = DeliveryRecord::queued(Channel::Sms, "+12015550123".into(), "t", None);
        DeliveryRecord { status, attempts: 1, lease_until, ..queued }
    }

    #[test]
    fn skip_reasons_are_spelled_as_serde_spells_them() {
        use SkipReason::*;
        for reason in [OptedOut, NoContact, NoContent, UserDeleted, DeviceInactive, RateLimited, Suppressed] {
            assert_eq!(serde_json::to_value(reason).unwrap(), reason.as_str());
        }
    }

    #[test]
    fn stranded_deliveries_are_the_never_attempted_and_the_abandoned() {
        // Not a parked one: its message waits in the DLQ for on-call.
        let parked = delivery(DeliveryStatus::Parked, None);
        let mut never = delivery(DeliveryStatus::Queued, None);
        never.attempts = 0;
        let retrying = delivery(DeliveryStatus::Queued, None);
        let abandoned = delivery(DeliveryStatus::Sending, Some(500));
        let held = delivery(DeliveryStatus::Sending, Some(5_000));
        let sent = delivery(DeliveryStatus::Sent, None);
        let record = NotificationRecord {
            id: "n".into(),
            app_key: "a".into(),
            idempotency_key: None,
            request_hash: "h".into(),
            user_id: "u".into(),
            template: "t".into(),
            created_at: "c".into(),
            expires_at: 0,
            deliveries: BTreeMap::from([
                ("a".into(), never),
                ("b".into(), retrying),
                ("c".into(), abandoned),
                ("d".into(), held),
                ("e".into(), sent),
                ("f".into(), parked),
            ]),
            skipped: vec![],
            events: vec![],
            sweep_shard: None,
            sweep_at: None,
            cancellation_key: None,
            cancel_scope: None,
            send_at: None,
            conversion: None,
        };
        let stranded: Vec<&str> = record.stranded(1_000).map(|(id, _)| id.as_str()).collect();
        assert_eq!(stranded, vec!["a", "c"]);
        assert!(!record.finished());
    }

    #[test]
    fn a_queued_or_parked_delivery_is_taken() {
        assert_eq!(delivery(DeliveryStatus::Queued, None).claim_decision(1_000), ClaimDecision::Take(Event::Claim));
        // Its message is back from the DLQ: on-call redrove it.
        assert_eq!(
            delivery(DeliveryStatus::Parked, None).claim_decision(1_000),
            ClaimDecision::Take(Event::ClaimAfterRedrive)
        );
    }

    #[test]
    fn a_held_lease_sends_the_message_back_until_it_ends() {
        assert_eq!(
            delivery(DeliveryStatus::Sending, Some(5_000)).claim_decision(1_000),
            ClaimDecision::HeldUntil(5_000)
        );
    }

    #[test]
    fn an_expired_lease_is_taken_over() {
        let take_over = ClaimDecision::Take(Event::TakeOver);
        assert_eq!(delivery(DeliveryStatus::Sending, Some(500)).claim_decision(1_000), take_over);
        assert_eq!(delivery(DeliveryStatus::Sending, None).claim_decision(1_000), take_over);
    }

    #[test]
    fn finished_deliveries_are_never_sent_again() {
        for status in [DeliveryStatus::Sent, DeliveryStatus::Failed, DeliveryStatus::Skipped] {
            assert_eq!(delivery(status, Some(5_000)).claim_decision(1_000), ClaimDecision::Finished(status));
        }
    }

    #[test]
    fn ids_from_the_same_app_and_key_agree_and_differ_otherwise() {
        let first = notification_id("ak_1", Some("order-42"));
        assert_eq!(first, notification_id("ak_1", Some("order-42")));
        assert_ne!(first, notification_id("ak_2", Some("order-42")));
        assert_ne!(first, notification_id("ak_1", Some("order-43")));
        assert_ne!(notification_id("ak_1", None), notification_id("ak_1", None));
        assert!(Uuid::parse_str(first.as_str()).is_ok());
    }

    #[test]
    fn a_conversion_report_parses_with_its_value_and_time_and_every_problem_is_named() {
        let now = crate::time::parse_rfc3339_millis("2026-12-05T12:00:00Z").unwrap();
        let parsed = Conversion::parse(
            &serde_json::json!({"type": "converted", "value": 42.5, "occurred_at": "2026-12-05T13:00:00+02:00"}),
            now,
        )
        .unwrap();
        assert_eq!(parsed.occurred_at, "2026-12-05T11:00:00Z");
        assert_eq!(parsed.value, serde_json::Number::from_f64(42.5));
        let bare = Conversion::parse(&serde_json::json!({"type": "converted"}), now).unwrap();
        assert_eq!((bare.occurred_at.as_str(), bare.value), ("2026-12-05T12:00:00Z", None));
        let fields = |body: serde_json::Value| -> Vec<String> {
            Conversion::parse(&body, now).unwrap_err().into_iter().map(|error| error.field).collect()
        };
        assert_eq!(
            fields(serde_json::json!({"type": "opened", "value": "12", "occurred_at": "yesterday"})),
            ["type", "value", "occurred_at"]
        );
        assert_eq!(
            fields(serde_json::json!({"type": "converted", "occurred_at": "2026-12-05T12:06:00Z"})),
            ["occurred_at"]
        );
        assert_eq!(fields(serde_json::json!({"type": "converted", "amount": 1})), ["amount"]);
        assert_eq!(fields(serde_json::json!({"type": "converted", "value": 1e300})), ["value"]);
        assert_eq!(fields(serde_json::json!([1])), ["body"]);
    }
}
