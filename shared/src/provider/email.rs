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
use crate::domain::unsubscribe::LinkSigner;
use crate::domain::user::UserProfile;
use crate::error::{DependencyError, FailureClass};
use crate::store::suppressions::SuppressionStore;

/// SES errors caused by the message or the sender identity.
const PERMANENT: &[&str] = &["MessageRejected", "MailFromDomainNotVerifiedException", "BadRequestException"];

pub struct SesEmail {
    client: Client,
    from_address: String,
    configuration_set: Option<String>,
    public_api_url: String,
    signer: LinkSigner,
    suppressions: SuppressionStore,
}

impl SesEmail {
    /// `EMAIL_FROM_ADDRESS`, `PUBLIC_API_URL` (base of the unsubscribe links),
    /// `LINK_SIGNING_SECRET`, `SUPPRESSIONS_TABLE`, and optional `SES_CONFIGURATION_SET` (the
    /// one whose events feed back delivered/bounced/complained).
    pub fn load(client: Client, suppressions: aws_sdk_dynamodb::Client, settings: &mut Settings<'_>) -> Self {
        Self {
            client,
            suppressions: SuppressionStore::new(suppressions, settings.required("SUPPRESSIONS_TABLE")),
            from_address: settings.required("EMAIL_FROM_ADDRESS"),
            configuration_set: settings.optional("SES_CONFIGURATION_SET"),
            public_api_url: settings.required("PUBLIC_API_URL").trim_end_matches('/').to_string(),
            signer: LinkSigner::new(&settings.required("LINK_SIGNING_SECRET")),
        }
    }

    /// The MIME message for one delivery.
    pub fn mime(&self, message: &DeliveryMessage<EmailContent>) -> Result<Vec<u8>, DependencyError> {
        let email = &message.content;
        let unsubscribe =
            format!("{}/v1/unsubscribe/{}", self.public_api_url, self.signer.token(&message.user_id, Channel::Email));
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

impl Provider for SesEmail {
    type Content = EmailContent;
    const CHANNEL: Channel = Channel::Email;

    async fn send(
        &self,
        message: &DeliveryMessage<EmailContent>,
        _recipient: &UserProfile,
    ) -> Result<String, DependencyError> {
        let raw = RawMessage::builder().data(Blob::new(self.mime(message)?)).build().expect("data is set");
        let output = self
            .client
            .send_email()
            .from_email_address(&self.from_address)
            .destination(Destination::builder().to_addresses(message.content.to.as_str()).build())
            .content(SesContent::builder().raw(raw).build())
            .set_configuration_set_name(self.configuration_set.clone())
            // SES copies the tags into every event it publishes: how feedback finds the delivery.
            .email_tags(tag("notification_id", &message.notification_id))
            .email_tags(tag("delivery_id", &message.delivery_id))
            .email_tags(tag("template", message.template.as_str()))
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
