//! SMS through SNS `Publish` to an E.164 number.

use std::str::FromStr;

use aws_sdk_sns::Client;
use aws_sdk_sns::types::MessageAttributeValue;

use super::Provider;
use crate::aws::classify;
use crate::config::Settings;
use crate::domain::channel::Channel;
use crate::domain::delivery::{DeliveryMessage, SmsContent};
use crate::domain::notification::SkipReason;
use crate::domain::user::UserProfile;
use crate::error::DependencyError;

/// SNS errors caused by the number or the text, which no retry can fix. Account-level errors
/// (authorization, spend limit) stay transient: they need on-call, so they must reach the DLQ.
const PERMANENT: &[&str] = &["InvalidParameter", "InvalidParameterValue", "OptedOut", "EndpointDisabled"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmsType {
    /// Critical messages (OTPs, alerts): highest deliverability.
    Transactional,
    /// Marketing: cheaper, and blocked in some countries at night.
    Promotional,
}

impl FromStr for SmsType {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "Transactional" => Ok(SmsType::Transactional),
            "Promotional" => Ok(SmsType::Promotional),
            other => Err(format!("expected Transactional or Promotional, got {other:?}")),
        }
    }
}

impl SmsType {
    fn as_str(self) -> &'static str {
        match self {
            SmsType::Transactional => "Transactional",
            SmsType::Promotional => "Promotional",
        }
    }
}

#[derive(Clone)]
pub struct SnsSms {
    client: Client,
    sms_type: SmsType,
    sender_id: Option<String>,
}

impl SnsSms {
    pub fn new(client: Client, sms_type: SmsType, sender_id: Option<String>) -> Self {
        Self { client, sms_type, sender_id }
    }

    /// `SMS_TYPE` (default Transactional) and optional `SMS_SENDER_ID`.
    pub fn load(client: Client, settings: &mut Settings<'_>) -> Self {
        let sms_type = settings.parsed_or("SMS_TYPE", SmsType::Transactional);
        let sender_id = settings.optional("SMS_SENDER_ID");
        Self::new(client, sms_type, sender_id)
    }
}

fn string_attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder().data_type("String").string_value(value).build().expect("data type is set")
}

impl Provider for SnsSms {
    type Content = SmsContent;
    const CHANNEL: Channel = Channel::Sms;

    async fn send(
        &self,
        message: &DeliveryMessage<SmsContent>,
        _recipient: &UserProfile,
        _provider: &str,
    ) -> Result<String, DependencyError> {
        let mut publish = self
            .client
            .publish()
            .phone_number(message.content.to.as_str())
            .message(&message.content.body)
            .message_attributes("AWS.SNS.SMS.SMSType", string_attribute(self.sms_type.as_str()));
        if let Some(sender_id) = &self.sender_id {
            publish = publish.message_attributes("AWS.SNS.SMS.SenderID", string_attribute(sender_id));
        }
        let output = publish.send().await.map_err(|error| classify("sns", "Publish", error, PERMANENT))?;
        Ok(output.message_id.unwrap_or_default())
    }

    /// A number the user removed or changed since intake may be someone else's now.
    fn unreachable(&self, message: &DeliveryMessage<SmsContent>, recipient: &UserProfile) -> Option<SkipReason> {
        (recipient.phone.as_ref() != Some(&message.content.to)).then_some(SkipReason::NoContact)
    }
}
