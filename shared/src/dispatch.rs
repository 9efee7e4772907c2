//! The dispatch loop shared by every channel: parse each record, send it through the channel's
//! provider, and decide from the error class whether SQS should bring it back.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};

use crate::batch::{self, Outcome, SqsRecord};
use crate::config::Settings;
use crate::domain::delivery::DeliveryMessage;
use crate::provider::Provider;

pub struct Dispatcher<P> {
    provider: P,
    concurrency: usize,
}

impl<P: Provider> Dispatcher<P> {
    pub fn new(provider: P, concurrency: usize) -> Self {
        Self { provider, concurrency }
    }

    /// `BATCH_CONCURRENCY`: records of one batch in flight at once (default 10).
    pub fn load(provider: P, settings: &mut Settings<'_>) -> Self {
        let concurrency = settings.parsed_or("BATCH_CONCURRENCY", 10usize);
        Self::new(provider, concurrency)
    }

    pub async fn handle_batch(&self, event: SqsEvent) -> SqsBatchResponse {
        batch::process(event, self.concurrency, |record| self.deliver(record)).await
    }

    async fn deliver(&self, record: SqsRecord<DeliveryMessage<P::Content>>) -> Outcome {
        let message = &record.body;
        match self.provider.send(message).await {
            Ok(provider_message_id) => {
                tracing::info!(
                    notification_id = %message.notification_id,
                    delivery_id = %message.delivery_id,
                    channel = %P::CHANNEL,
                    provider_message_id = %provider_message_id,
                    "sent"
                );
                Outcome::Done
            }
            Err(error) if error.is_transient() => {
                tracing::warn!(
                    notification_id = %message.notification_id,
                    delivery_id = %message.delivery_id,
                    channel = %P::CHANNEL,
                    attempt = record.receive_count,
                    error = %error,
                    "send failed, will retry"
                );
                Outcome::Retry
            }
            Err(error) => {
                tracing::error!(
                    notification_id = %message.notification_id,
                    delivery_id = %message.delivery_id,
                    channel = %P::CHANNEL,
                    error = %error,
                    "send failed permanently"
                );
                Outcome::Done
            }
        }
    }
}

impl<P: Provider> crate::function::Function for Dispatcher<P> {
    type Event = SqsEvent;
    type Output = SqsBatchResponse;

    async fn handle(
        &self,
        event: lambda_runtime::LambdaEvent<SqsEvent>,
    ) -> Result<SqsBatchResponse, lambda_runtime::Error> {
        Ok(self.handle_batch(event.payload).await)
    }
}
