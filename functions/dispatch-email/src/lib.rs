//! The function that owns email: it consumes the email queues (sending each message through SES
//! v2, at most at the account's sending rate) and the email events queue (SES's feedback on what
//! it sent). Lambda never mixes two event sources in one batch, so the batch's source queue says
//! which job it is.

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::LambdaEvent;
use notify::config::{ConfigError, EnvSource, Settings};
use notify::dispatch::Dispatcher;
use notify::feedback::EmailFeedback;
use notify::link_keys::LinkKeys;
use notify::provider::email::SesEmail;

pub struct EmailFunction {
    dispatcher: Dispatcher<SesEmail>,
    feedback: EmailFeedback,
    events_queue_arn: String,
}

/// Reads configuration and the link-signing keys and builds the clients (once per cold start).
pub async fn load(sdk: &SdkConfig, env: &dyn EnvSource) -> Result<EmailFunction, ConfigError> {
    let mut settings = Settings::new(env);
    let link_keys = LinkKeys::load(aws_sdk_secretsmanager::Client::new(sdk), &mut settings);
    let sesv2 = aws_sdk_sesv2::Client::new(&notify::aws::provider_config(sdk));
    let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
    let provider = SesEmail::load(sesv2, dynamodb.clone(), link_keys.clone(), &mut settings);
    let ses_rate = provider.max_send_rate().await;
    let dispatcher = Dispatcher::load(sdk, &dynamodb, provider, ses_rate, &mut settings);
    let feedback = EmailFeedback::load(&dynamodb, &mut settings);
    let events_queue_arn = settings.required("EMAIL_EVENTS_QUEUE_ARN");
    settings.finish()?;
    link_keys.read().await?;
    Ok(EmailFunction { dispatcher, feedback, events_queue_arn })
}

impl notify::function::Function for EmailFunction {
    type Event = SqsEvent;
    type Output = SqsBatchResponse;

    async fn handle(&self, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, lambda_runtime::Error> {
        let source = event.payload.records.first().and_then(|record| record.event_source_arn.as_deref());
        if source == Some(self.events_queue_arn.as_str()) {
            Ok(self.feedback.handle_batch(event.payload).await)
        } else {
            Ok(self.dispatcher.handle_batch(event.payload, event.context.deadline as i64).await)
        }
    }
}
