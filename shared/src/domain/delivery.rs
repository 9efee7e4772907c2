//! What travels on a channel queue: one message per delivery, rendered at intake so that a
//! dispatcher needs nothing but the message (and the state checks) to send it.

use serde::{Deserialize, Serialize};

use super::channel::Channel;
use super::contact::{EmailAddress, PhoneNumber};
use super::notification::{DeliveryId, NotificationId};
use super::send_rate::Lane;
use super::template::TemplateName;
use super::user::UserId;

/// A queue message. `C` is the channel's content; intake writes [`OutboundContent`], each
/// dispatcher reads its own channel's content type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryMessage<C> {
    pub notification_id: NotificationId,
    pub delivery_id: DeliveryId,
    pub user_id: UserId,
    /// The app that sent it (whose stats count it). Empty on messages enqueued before the
    /// field existed.
    #[serde(default)]
    pub app_key: String,
    pub template: TemplateName,
    /// Transactional messages bypass per-user rate limits and quiet hours.
    pub transactional: bool,
    /// Held in the recipient's quiet hours (push and SMS unless transactional; email when
    /// the template asks).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub quiet_hours: bool,
    /// Not sent before this (epoch ms): a `send_at`, or the end of the recipient's quiet hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_after: Option<i64>,
    #[serde(flatten)]
    pub content: C,
}

/// What any delivery message says of its delivery, whatever its channel's content: how a DLQ's
/// messages are read without knowing their channel's shape.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct DeliveryRef {
    pub notification_id: NotificationId,
    pub delivery_id: DeliveryId,
    #[serde(default)]
    pub transactional: bool,
    #[serde(default)]
    pub deliver_after: Option<i64>,
}

impl DeliveryRef {
    /// The lane a message body travels in (bulk, for a body that does not say).
    pub fn lane_of(body: &str) -> Lane {
        Lane::of(serde_json::from_str::<DeliveryRef>(body).is_ok_and(|delivery| delivery.transactional))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsContent {
    pub to: PhoneNumber,
    pub body: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailContent {
    pub to: EmailAddress,
    pub subject: String,
    pub html: String,
    pub text: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Ios,
    Android,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Ios => "ios",
            Platform::Android => "android",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushContent {
    pub platform: Platform,
    pub token: String,
    pub title: String,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub badge: Option<u32>,
    /// The sealed token the app reports an open with (`POST /t/p/{token}`), in the payload's
    /// custom data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_token: Option<String>,
}

/// Any channel's content, tagged with `"channel"` on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "channel", rename_all = "lowercase")]
pub enum OutboundContent {
    Push(PushContent),
    Sms(SmsContent),
    Email(EmailContent),
}

impl OutboundContent {
    pub fn channel(&self) -> Channel {
        match self {
            OutboundContent::Push(_) => Channel::Push,
            OutboundContent::Sms(_) => Channel::Sms,
            OutboundContent::Email(_) => Channel::Email,
        }
    }

    /// Where it goes, as shown to API callers and on-call engineers.
    pub fn target(&self) -> String {
        match self {
            OutboundContent::Push(push) => {
                // Only the token's tail: enough to tell devices apart, not to reuse the token.
                let tail = &push.token[push.token.len().saturating_sub(8)..];
                format!("{}:…{tail}", push.platform.as_str())
            }
            OutboundContent::Sms(sms) => sms.to.to_string(),
            OutboundContent::Email(email) => email.to.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dispatcher_reads_its_channel_from_what_intake_wrote() {
        let outbound = DeliveryMessage {
            notification_id: "n-1".into(),
            delivery_id: "sms".into(),
            user_id: UserId::parse("u-1").unwrap(),
            app_key: "ak_0123456789abcdef0123".into(),
            template: TemplateName::parse("welcome").unwrap(),
            transactional: false,
            quiet_hours: true,
            deliver_after: Some(1_800_000_000_000),
            content: OutboundContent::Sms(SmsContent {
                to: PhoneNumber::parse("+12015550123").unwrap(),
                body: "hi".into(),
            }),
        };
        let body = serde_json::to_string(&outbound).unwrap();
        assert!(body.contains(r#""channel":"sms""#), "{body}");
        let inbound: DeliveryMessage<SmsContent> = serde_json::from_str(&body).unwrap();
        assert_eq!(inbound.content.to.as_str(), "+12015550123");
        assert_eq!((inbound.quiet_hours, inbound.deliver_after), (true, Some(1_800_000_000_000)));
        assert!(serde_json::from_str::<DeliveryMessage<EmailContent>>(&body).is_err());
    }
}
