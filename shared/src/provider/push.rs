//! Mobile push through SNS: one platform application per platform (APNs for iOS, FCM for
//! Android). The first send to a device creates its platform endpoint (idempotent in SNS for a
//! known token) and stores the endpoint's ARN with the device; a disabled or deleted endpoint
//! retires the device until the app registers the token again.

use aws_sdk_sns::Client;

use super::Provider;
use crate::aws::classify;
use crate::config::Settings;
use crate::domain::channel::Channel;
use crate::domain::delivery::{DeliveryMessage, Platform, PushContent};
use crate::domain::notification::SkipReason;
use crate::domain::user::{DeviceToken, UserProfile};
use crate::error::{DependencyError, FailureClass};
use crate::store::users::UserStore;

/// A disabled or deleted endpoint, or a token SNS refuses, will never work again.
const PERMANENT: &[&str] = &["EndpointDisabled", "NotFound", "InvalidParameter", "InvalidParameterValue"];
/// The errors that mean the device itself is gone.
const DEVICE_GONE: &[&str] = &["EndpointDisabled", "NotFound"];

pub struct SnsPush {
    client: Client,
    users: UserStore,
    apns_application_arn: String,
    fcm_application_arn: String,
}

impl SnsPush {
    /// `APNS_PLATFORM_APPLICATION_ARN` and `FCM_PLATFORM_APPLICATION_ARN`.
    pub fn load(client: Client, users: UserStore, settings: &mut Settings<'_>) -> Self {
        Self {
            client,
            users,
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

    async fn endpoint(
        &self,
        message: &DeliveryMessage<PushContent>,
        recipient: &UserProfile,
    ) -> Result<String, DependencyError> {
        let push = &message.content;
        let token = token(push)?;
        if let Some(arn) = recipient.devices.get(&token.key()).and_then(|device| device.endpoint_arn.clone()) {
            return Ok(arn);
        }
        let created = self
            .client
            .create_platform_endpoint()
            .platform_application_arn(self.application_arn(push.platform))
            .token(&push.token)
            .send()
            .await
            .map_err(|error| classify("sns", "CreatePlatformEndpoint", error, PERMANENT));
        // SNS refuses to create an endpoint for a known token whose endpoint attributes differ
        // (e.g. it was disabled) and names the existing endpoint: AWS's documented way to find it.
        let arn = match created {
            Ok(created) => created.endpoint_arn.unwrap_or_default(),
            Err(error) => existing_endpoint(&error).ok_or(error)?,
        };
        // SNS hands back the existing endpoint for a known token, disabled if the platform once
        // rejected it; a device registered again has a live token, so the endpoint is re-enabled.
        let attributes = self
            .client
            .get_endpoint_attributes()
            .endpoint_arn(&arn)
            .send()
            .await
            .map_err(|error| classify("sns", "GetEndpointAttributes", error, PERMANENT))?;
        if attributes.attributes.unwrap_or_default().get("Enabled").is_some_and(|enabled| enabled == "false") {
            self.client
                .set_endpoint_attributes()
                .endpoint_arn(&arn)
                .attributes("Enabled", "true")
                .send()
                .await
                .map_err(|error| classify("sns", "SetEndpointAttributes", error, PERMANENT))?;
        }
        self.users.set_device_endpoint(&message.user_id, &token, &arn).await?;
        Ok(arn)
    }
}

/// The ARN in SNS's "Endpoint <arn> already exists with the same Token, but different
/// attributes." refusal.
fn existing_endpoint(error: &DependencyError) -> Option<String> {
    if error.code != "InvalidParameter" {
        return None;
    }
    let rest = &error.message[error.message.find("Endpoint arn:")? + "Endpoint ".len()..];
    let arn = &rest[..rest.find(" already exists with the same")?];
    Some(arn.to_string())
}

fn token(push: &PushContent) -> Result<DeviceToken, DependencyError> {
    DeviceToken::parse(push.platform, &push.token).map_err(|message| DependencyError {
        class: FailureClass::Permanent,
        service: "sns",
        operation: "CreatePlatformEndpoint",
        code: "InvalidToken".into(),
        message: format!("the device token {message}"),
    })
}

/// The per-platform payload SNS forwards: APNs `aps.alert` (with sound and badge when the
/// template gives them), FCM v1 notification + data; the notification's id and its open token
/// in the custom data (APNs top-level keys, FCM `data`), where the app reads them.
pub fn payload(platform: Platform, content: &PushContent, notification_id: &str) -> String {
    let platform_message = match platform {
        Platform::Ios => {
            let mut aps = serde_json::json!({"alert": {"title": content.title, "body": content.body}});
            if let Some(sound) = &content.sound {
                aps["sound"] = serde_json::json!(sound);
            }
            if let Some(badge) = content.badge {
                aps["badge"] = serde_json::json!(badge);
            }
            let mut message = serde_json::json!({"aps": aps, "notification_id": notification_id});
            if let Some(token) = &content.open_token {
                message["open_token"] = serde_json::json!(token);
            }
            message
        }
        Platform::Android => {
            let mut data = serde_json::json!({"notification_id": notification_id});
            if let Some(token) = &content.open_token {
                data["open_token"] = serde_json::json!(token);
            }
            serde_json::json!({
                "fcmV1Message": {"message": {
                    "notification": {"title": content.title, "body": content.body},
                    "data": data,
                }}
            })
        }
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

    async fn send(
        &self,
        message: &DeliveryMessage<PushContent>,
        recipient: &UserProfile,
        _provider: &str,
    ) -> Result<String, DependencyError> {
        let endpoint_arn = self.endpoint(message, recipient).await?;
        let output = self
            .client
            .publish()
            .target_arn(endpoint_arn)
            .message_structure("json")
            .message(payload(message.content.platform, &message.content, message.notification_id.as_str()))
            .send()
            .await
            .map_err(|error| classify("sns", "Publish", error, PERMANENT))?;
        Ok(output.message_id.unwrap_or_default())
    }

    fn unreachable(&self, message: &DeliveryMessage<PushContent>, recipient: &UserProfile) -> Option<SkipReason> {
        let key = token(&message.content).ok()?.key();
        let active = recipient.devices.get(&key).is_some_and(|device| device.active);
        (!active).then_some(SkipReason::DeviceInactive)
    }

    async fn on_permanent_failure(
        &self,
        message: &DeliveryMessage<PushContent>,
        error: &DependencyError,
    ) -> Result<(), DependencyError> {
        // Only an endpoint's own answer condemns the device: `NotFound` from
        // CreatePlatformEndpoint means the platform application is missing (configuration).
        let about_the_endpoint =
            matches!(error.operation, "Publish" | "GetEndpointAttributes" | "SetEndpointAttributes");
        if about_the_endpoint && DEVICE_GONE.contains(&error.code.as_str()) {
            tracing::warn!(user_id = %message.user_id, code = %error.code, "retiring the device");
            self.users.deactivate_device(&message.user_id, &token(&message.content)?).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(sound: Option<&str>, badge: Option<u32>) -> PushContent {
        PushContent {
            platform: Platform::Ios,
            token: "t".into(),
            title: "Title".into(),
            body: "Body".into(),
            sound: sound.map(str::to_string),
            badge,
            open_token: Some("k1.claims.tag".into()),
        }
    }

    #[test]
    fn apns_gets_an_alert_with_sound_and_badge_when_given() {
        let outer: serde_json::Value =
            serde_json::from_str(&payload(Platform::Ios, &content(Some("chime"), Some(3)), "n-1")).unwrap();
        let apns: serde_json::Value = serde_json::from_str(outer["APNS"].as_str().unwrap()).unwrap();
        assert_eq!(
            apns["aps"],
            serde_json::json!({"alert": {"title": "Title", "body": "Body"}, "sound": "chime", "badge": 3})
        );
        let plain: serde_json::Value =
            serde_json::from_str(&payload(Platform::Ios, &content(None, None), "n-1")).unwrap();
        assert!(
            plain["APNS"].as_str().unwrap().contains(r#""aps":{"alert""#)
                && !plain["APNS"].as_str().unwrap().contains("sound")
        );
    }

    #[test]
    fn the_existing_endpoint_is_read_from_snss_refusal() {
        let refusal = DependencyError {
            class: FailureClass::Permanent,
            service: "sns",
            operation: "CreatePlatformEndpoint",
            code: "InvalidParameter".into(),
            message: "Invalid parameter: Token Reason: Endpoint arn:aws:sns:us-east-1:1:endpoint/APNS/app/id already exists with the same Token, but different attributes.".into(),
        };
        assert_eq!(existing_endpoint(&refusal).as_deref(), Some("arn:aws:sns:us-east-1:1:endpoint/APNS/app/id"));
        assert_eq!(existing_endpoint(&DependencyError { code: "Throttling".into(), ..refusal.clone() }), None);
        assert_eq!(existing_endpoint(&DependencyError { message: "Invalid parameter: Token".into(), ..refusal }), None);
    }

    #[test]
    fn fcm_gets_a_notification_and_data() {
        let outer: serde_json::Value =
            serde_json::from_str(&payload(Platform::Android, &content(None, None), "n-1")).unwrap();
        let fcm: serde_json::Value = serde_json::from_str(outer["GCM"].as_str().unwrap()).unwrap();
        assert_eq!(fcm["fcmV1Message"]["message"]["notification"]["title"], "Title");
        assert_eq!(fcm["fcmV1Message"]["message"]["data"]["notification_id"], "n-1");
        assert_eq!(fcm["fcmV1Message"]["message"]["data"]["open_token"], "k1.claims.tag");
        assert_eq!(outer["default"], "Body");
    }

    #[test]
    fn the_open_token_rides_in_apns_custom_data_and_the_largest_push_stays_within_4_kb() {
        let outer: serde_json::Value =
            serde_json::from_str(&payload(Platform::Ios, &content(None, None), "n-1")).unwrap();
        let apns: serde_json::Value = serde_json::from_str(outer["APNS"].as_str().unwrap()).unwrap();
        assert_eq!(apns["open_token"], "k1.claims.tag");
        // The largest title and body intake accepts, with a token as long as a real one (a
        // 128-character template name and a 36-character app key).
        let tracker = crate::domain::tracking::LinkTracker::new(crate::domain::unsubscribe::LinkSigner::new(
            crate::domain::unsubscribe::SigningKey::new("k1", "a secret of at least thirty-two bytes"),
            [],
        ));
        let token = tracker.push_open_token(&crate::domain::tracking::Tracked {
            app_key: "a".repeat(36),
            notification_id: "01a24707-d21c-715a-b0eb-d802537f20e1".into(),
            delivery_id: "push-10".into(),
            channel: Channel::Push,
            template: "t".repeat(128),
            url: None,
        });
        let largest = PushContent {
            title: "t".repeat(100),
            body: "b".repeat(crate::domain::template::MAX_PUSH_BYTES - 100),
            open_token: Some(token),
            ..content(Some("default"), Some(99))
        };
        let outer: serde_json::Value =
            serde_json::from_str(&payload(Platform::Ios, &largest, "01a24707-d21c-715a-b0eb-d802537f20e1")).unwrap();
        let size = outer["APNS"].as_str().unwrap().len();
        assert!(size <= 4096, "APNs payload of {size} bytes");
    }
}
