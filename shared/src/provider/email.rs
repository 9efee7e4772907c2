//! Email through SES v2 `SendEmail`, with subject, HTML and text parts.

use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent as SesContent, Message};

use super::Provider;
use crate::aws::classify;
use crate::config::Settings;
use crate::domain::channel::Channel;
use crate::domain::delivery::{DeliveryMessage, EmailContent};
use crate::domain::user::UserProfile;
use crate::error::DependencyError;

/// SES errors caused by the message or the sender identity.
const PERMANENT: &[&str] = &["MessageRejected", "MailFromDomainNotVerifiedException", "BadRequestException"];

#[derive(Clone)]
pub struct SesEmail {
    client: Client,
    from_address: String,
    configuration_set: Option<String>,
}

impl SesEmail {
    /// `EMAIL_FROM_ADDRESS` (required) and optional `SES_CONFIGURATION_SET`.
    pub fn load(client: Client, settings: &mut Settings<'_>) -> Self {
        Self {
            client,
            from_address: settings.required("EMAIL_FROM_ADDRESS"),
            configuration_set: settings.optional("SES_CONFIGURATION_SET"),
        }
    }
}

fn utf8(text: &str) -> Content {
    Content::builder().data(text).charset("UTF-8").build().expect("data is set")
}

impl Provider for SesEmail {
    type Content = EmailContent;
    const CHANNEL: Channel = Channel::Email;

    async fn send(
        &self,
        message: &DeliveryMessage<EmailContent>,
        _recipient: &UserProfile,
    ) -> Result<String, DependencyError> {
        let email = &message.content;
        let content = SesContent::builder()
            .simple(
                Message::builder()
                    .subject(utf8(&email.subject))
                    .body(Body::builder().html(utf8(&email.html)).text(utf8(&email.text)).build())
                    .build(),
            )
            .build();
        let output = self
            .client
            .send_email()
            .from_email_address(&self.from_address)
            .destination(Destination::builder().to_addresses(email.to.as_str()).build())
            .content(content)
            .set_configuration_set_name(self.configuration_set.clone())
            .send()
            .await
            .map_err(|error| classify("sesv2", "SendEmail", error, PERMANENT))?;
        Ok(output.message_id.unwrap_or_default())
    }
}
