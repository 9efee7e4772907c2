//! Email through SES v2 `SendEmail` as a raw MIME message: subject, text and HTML parts, and
//! one-click unsubscribe (RFC 8058: `List-Unsubscribe` with an HTTPS link and
//! `List-Unsubscribe-Post: List-Unsubscribe=One-Click`) pointing at the API's unsubscribe route.

use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::primitives::Blob;
use aws_sdk_sesv2::types::{Destination, EmailContent as SesContent, MessageTag, RawMessage};
use mail_builder::MessageBuilder;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::url::URL;

use super::Provider;
use crate::aws::classify;
use crate::config::Settings;
use crate::domain::channel::Channel;
use crate::domain::delivery::{DeliveryMessage, EmailContent};
use crate::domain::notification::SkipReason;
use crate::domain::send_rate::SendRate;
use crate::domain::unsubscribe::LinkSigner;
use crate::domain::user::UserProfile;
use crate::error::{DependencyError, FailureClass};
use crate::link_keys::LinkKeys;
use crate::store::suppressions::SuppressionStore;

/// SES errors caused by the message or the sender identity.
const PERMANENT: &[&str] = &["MessageRejected", "MailFromDomainNotVerifiedException", "BadRequestException"];

pub struct SesEmail {
    client: Client,
    mime: EmailMime,
    configuration_set: Option<String>,
    link_keys: LinkKeys,
    suppressions: SuppressionStore,
}

/// How a delivery becomes a MIME message: from the configured sender, with unsubscribe links to
/// the API.
pub struct EmailMime {
    from_address: String,
    public_api_url: String,
}

impl EmailMime {
    /// `EMAIL_FROM_ADDRESS` and `PUBLIC_API_URL` (base of the unsubscribe links).
    pub fn load(settings: &mut Settings<'_>) -> Self {
        Self {
            from_address: settings.required("EMAIL_FROM_ADDRESS"),
            public_api_url: settings.required("PUBLIC_API_URL").trim_end_matches('/').to_string(),
        }
    }

    /// The MIME message for one delivery, its unsubscribe link signed by `signer`.
    pub fn build(
        &self,
        message: &DeliveryMessage<EmailContent>,
        signer: &LinkSigner,
    ) -> Result<Vec<u8>, DependencyError> {
        let email = &message.content;
        let token = signer.unsubscribe_link(&message.user_id, Channel::Email, crate::time::now_epoch_seconds());
        let unsubscribe = format!("{}/v1/unsubscribe/{token}", self.public_api_url);
        MessageBuilder::new()
            .from(self.from_address.as_str())
            .to(email.to.as_str())
            .subject(email.subject.as_str())
            .header("List-Unsubscribe", URL::new(unsubscribe))
            .header("List-Unsubscribe-Post", Raw::new("List-Unsubscribe=One-Click"))
            .header("X-Notification-Id", Raw::new(message.notification_id.as_str()))
            .text_body(email.text.as_str())
            .html_body(email.html.as_str())
            .write_to_vec()
            .map_err(|error| DependencyError {
                class: FailureClass::Permanent,
                service: "sesv2",
                operation: "SendEmail",
                code: "InvalidMessage".into(),
                message: error.to_string(),
            })
    }
}

impl SesEmail {
    /// The [`EmailMime`] settings, `SUPPRESSIONS_TABLE`, and optional `SES_CONFIGURATION_SET`
    /// (the one whose events feed back delivered/bounced/complained); `link_keys` sign the
    /// unsubscribe links.
    pub fn load(
        client: Client,
        suppressions: aws_sdk_dynamodb::Client,
        link_keys: LinkKeys,
        settings: &mut Settings<'_>,
    ) -> Self {
        Self {
            client,
            suppressions: SuppressionStore::new(suppressions, settings.required("SUPPRESSIONS_TABLE")),
            mime: EmailMime::load(settings),
            configuration_set: settings.optional("SES_CONFIGURATION_SET"),
            link_keys,
        }
    }

    /// The account's own sending rate (SES v2 `GetAccount`, `SendQuota.MaxSendRate`): what
    /// SEND_RATE is capped at. `None` (logged) when it cannot be read: the configured rate
    /// stands, and a lower quota shows as throttles, which wait.
    pub async fn max_send_rate(&self) -> Option<SendRate> {
        let read = self.client.get_account().send().await.map_err(|error| classify("sesv2", "GetAccount", error, &[]));
        let quota = match read {
            Ok(account) => account.send_quota.map(|quota| quota.max_send_rate),
            Err(error) => {
                tracing::warn!(error = %error, "could not read the SES sending quota; sending at SEND_RATE");
                return None;
            }
        };
        match quota.map(SendRate::new) {
            Some(Ok(rate)) => Some(rate),
            other => {
                tracing::warn!(quota = ?other, "SES reported no usable MaxSendRate; sending at SEND_RATE");
                None
            }
        }
    }
}

impl Provider for SesEmail {
    type Content = EmailContent;
    const CHANNEL: Channel = Channel::Email;

    async fn send(
        &self,
        message: &DeliveryMessage<EmailContent>,
        _recipient: &UserProfile,
        _provider: &str,
    ) -> Result<String, DependencyError> {
        let mime = self.mime.build(message, &self.link_keys.signer().await?)?;
        let raw = RawMessage::builder().data(Blob::new(mime)).build().expect("data is set");
        let output = self
            .client
            .send_email()
            .from_email_address(&self.mime.from_address)
            .destination(Destination::builder().to_addresses(message.content.to.as_str()).build())
            .content(SesContent::builder().raw(raw).build())
            .set_configuration_set_name(self.configuration_set.clone())
            // SES copies the tags into every event it publishes: how feedback finds the delivery.
            .email_tags(tag("notification_id", message.notification_id.as_str()))
            .email_tags(tag("delivery_id", message.delivery_id.as_str()))
            .email_tags(tag("template", message.template.as_str()))
            .email_tags(tag("app", &message.app_key))
            .send()
            .await
            .map_err(|error| classify("sesv2", "SendEmail", error, PERMANENT))?;
        Ok(output.message_id.unwrap_or_default())
    }

    async fn suppressed(&self, message: &DeliveryMessage<EmailContent>) -> Result<bool, DependencyError> {
        Ok(self.suppressions.get(message.content.to.as_str()).await?.is_some())
    }

    /// An address the user removed or changed since intake is not written to.
    fn unreachable(&self, message: &DeliveryMessage<EmailContent>, recipient: &UserProfile) -> Option<SkipReason> {
        (recipient.email.as_ref() != Some(&message.content.to)).then_some(SkipReason::NoContact)
    }
}

fn tag(name: &str, value: &str) -> MessageTag {
    MessageTag::builder().name(name).value(value).build().expect("name and value are set")
}
