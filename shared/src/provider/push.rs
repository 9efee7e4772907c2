//! Mobile push through SNS: one platform application per platform (APNs for iOS, FCM for
//! Android); the device's platform endpoint is created idempotently (SNS returns the existing
//! endpoint for a known token) and the message is published to it as `MessageStructure=json`.

use aws_sdk_sns::Client;

use super::Provider;
use crate::aws::classify;
use crate::config::Settings;
use crate::domain::channel::Channel;
use crate::domain::delivery::{DeliveryMessage, Platform, PushContent};
use crate::error::DependencyError;

/// A disabled or deleted endpoint, or a token SNS refuses, will never work again.
const PERMANENT: &[&str] = &["EndpointDisabled", "NotFound", "InvalidParameter", "InvalidParameterValue"];

#[derive(Clone)]
pub struct SnsPush {
    client: Client,
    apns_application_arn: String,
    fcm_application_arn: String,
}

impl SnsPush {
    /// `APNS_PLATFORM_APPLICATION_ARN` and `FCM_PLATFORM_APPLICATION_ARN`.
    pub fn load(client: Client, settings: &mut Settings<'_>) -> Self {
        Self {
            client,
            apns_application_arn: settings.required("APNS_PLATFORM_APPLICATION_ARN"),
            fcm_application_arn: settings.required("FCM_PLATFORM_APPLICATION_ARN"),
        }
    }

    fn application_arn(&self, platform: Platform) -> &str {
        match platform {
            Platform::Ios => &self.apns_application_arn,
            Platform::Android => &self.fcm_application_arn,
        }
    }
}

/// The per-platform payload SNS forwards: APNs `aps.alert`, FCM notification + data.
pub fn payload(platform: Platform, content: &PushContent, notification_id: &str) -> String {
    let platform_message = match platform {
        Platform::Ios => serde_json::json!({
            "aps": {"alert": {"title": content.title, "body": content.body}},
            "notification_id": notification_id,
        }),
        Platform::Android => serde_json::json!({
            "fcmV1Message": {"message": {
                "notification": {"title": content.title, "body": content.body},
                "data": {"notification_id": notification_id},
            }}
        }),
    };
    let key = match platform {
        Platform::Ios => "APNS",
        Platform::Android => "GCM",
    };
    serde_json::json!({ "default": content.body, key: platform_message.to_string() }).to_string()
}

impl Provider for SnsPush {
    type Content = PushContent;
    const CHANNEL: Channel = Channel::Push;

    async fn send(&self, message: &DeliveryMessage<PushContent>) -> Result<String, DependencyError> {
        let push = &message.content;
        let endpoint = self
            .client
            .create_platform_endpoint()
            .platform_application_arn(self.application_arn(push.platform))
            .token(&push.token)
            .send()
            .await
            .map_err(|error| classify("sns", "CreatePlatformEndpoint", error, PERMANENT))?;
        let endpoint_arn = endpoint.endpoint_arn.unwrap_or_default();
        let output = self
            .client
            .publish()
            .target_arn(endpoint_arn)
            .message_structure("json")
            .message(payload(push.platform, push, &message.notification_id))
            .send()
            .await
            .map_err(|error| classify("sns", "Publish", error, PERMANENT))?;
        Ok(output.message_id.unwrap_or_default())
    }
}
