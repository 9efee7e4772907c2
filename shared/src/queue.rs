//! The SQS adapters: enqueueing deliveries on the per-channel queues with SendMessageBatch (10
//! per request, checking every entry's result: a batch call can succeed while some entries
//! fail), a received message's redelivery (its visibility, the queue's receive limit) and a
//! channel's dead-letter queue (for the redrive). Every SQS call the delivery logic makes is here.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use futures::StreamExt;

use crate::aws::classify;
use crate::config::Settings;
use crate::domain::channel::Channel;
use crate::domain::notification::{DeliveryId, NotificationId};
use crate::error::{DependencyError, FailureClass};
use crate::ports::{DeadLetter, DeadLetters, Enqueue, Redelivery};

/// SQS accepts at most 10 entries per SendMessageBatch…
const SQS_BATCH_LIMIT: usize = 10;
/// …and at most 256 KiB of bodies in one call.
const SQS_BATCH_BYTES: usize = 256 * 1024;
/// `SendMessageBatch` requests one enqueue keeps in flight.
const CHUNKS_IN_FLIGHT: usize = 8;

/// The queue URL of each channel.
#[derive(Clone, Debug)]
pub struct ChannelQueues {
    pub push: String,
    pub sms: String,
    pub email: String,
}

impl ChannelQueues {
    pub fn load(settings: &mut Settings<'_>) -> Self {
        Self {
            push: settings.required("PUSH_QUEUE_URL"),
            sms: settings.required("SMS_QUEUE_URL"),
            email: settings.required("EMAIL_QUEUE_URL"),
        }
    }

    pub fn url(&self, channel: Channel) -> &str {
        match channel {
            Channel::Push => &self.push,
            Channel::Sms => &self.sms,
            Channel::Email => &self.email,
        }
    }
}

/// One delivery's message to enqueue.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub notification_id: NotificationId,
    pub delivery_id: DeliveryId,
    pub channel: Channel,
    pub body: String,
}

impl Outgoing {
    /// The stored messages of some of a notification's deliveries (its outbox: only those SQS
    /// once refused have one), to enqueue again.
    pub fn from_outbox<'a>(
        notification_id: &NotificationId,
        deliveries: impl Iterator<Item = (&'a DeliveryId, &'a crate::domain::notification::DeliveryRecord)>,
    ) -> Vec<Self> {
        deliveries
            .filter_map(|(delivery_id, delivery)| {
                Some(Outgoing {
                    notification_id: notification_id.clone(),
                    delivery_id: delivery_id.clone(),
                    channel: delivery.channel,
                    body: delivery.message.clone()?,
                })
            })
            .collect()
    }
}

/// A message that could not be enqueued, and why.
#[derive(Debug)]
pub struct NotEnqueued {
    pub message: Outgoing,
    pub error: DependencyError,
}

#[derive(Clone)]
pub struct Enqueuer {
    client: Client,
    queues: ChannelQueues,
}

impl Enqueuer {
    pub fn new(client: Client, queues: ChannelQueues) -> Self {
        Self { client, queues }
    }

    /// Sends every message, batched per queue; returns the ones that were not accepted.
    pub async fn enqueue(&self, messages: &[Outgoing]) -> Vec<NotEnqueued> {
        let per_channel: Vec<(Channel, Vec<&Outgoing>)> = Channel::ALL
            .into_iter()
            .map(|channel| (channel, messages.iter().filter(|message| message.channel == channel).collect()))
            .collect();
        // The chunks are independent requests: sent a few at a time, a batch of 100
        // notifications on three channels waits for a few SQS round trips instead of up to 30 in
        // a row, without a burst that throttling would answer.
        let mut sends = Vec::new();
        for (channel, for_channel) in &per_channel {
            sends
                .extend(chunks(for_channel).into_iter().map(|chunk| self.send_chunk(self.queues.url(*channel), chunk)));
        }
        let not_enqueued: Vec<Vec<NotEnqueued>> =
            futures::stream::iter(sends).buffer_unordered(CHUNKS_IN_FLIGHT).collect().await;
        not_enqueued.into_iter().flatten().collect()
    }

    async fn send_chunk(&self, queue_url: &str, chunk: &[&Outgoing]) -> Vec<NotEnqueued> {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(index, message)| {
                SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(&message.body)
                    .build()
                    .expect("id and body are set")
            })
            .collect();
        let output = match self.client.send_message_batch().queue_url(queue_url).set_entries(Some(entries)).send().await
        {
            Ok(output) => output,
            Err(error) => {
                let error = classify("sqs", "SendMessageBatch", error, &[]);
                return chunk
                    .iter()
                    .map(|message| NotEnqueued { message: (*message).clone(), error: error.clone() })
                    .collect();
            }
        };
        output
            .failed
            .into_iter()
            .filter_map(|failure| {
                let message = chunk.get(failure.id.parse::<usize>().ok()?)?;
                let class = if failure.sender_fault { FailureClass::Permanent } else { FailureClass::Transient };
                Some(NotEnqueued {
                    message: (*message).clone(),
                    error: DependencyError {
                        class,
                        service: "sqs",
                        operation: "SendMessageBatch",
                        code: failure.code,
                        message: failure.message.unwrap_or_default(),
                    },
                })
            })
            .collect()
    }
}

impl Enqueue for Enqueuer {
    async fn enqueue(&self, messages: &[Outgoing]) -> Vec<NotEnqueued> {
        Enqueuer::enqueue(self, messages).await
    }
}

/// How a message received from a channel queue comes back: its visibility, set by the
/// dispatcher's backoff, and the queue's `maxReceiveCount` (after that many receives SQS moves
/// it to the DLQ), asked of SQS when a delivery first fails (so the template stays its one
/// source), not at init.
pub struct QueueRedelivery {
    client: Client,
    queue_url: String,
    max_receive_count: tokio::sync::OnceCell<Option<u32>>,
}

impl QueueRedelivery {
    pub fn new(client: Client, queue_url: String) -> Self {
        Self { client, queue_url, max_receive_count: tokio::sync::OnceCell::new() }
    }
}

impl Redelivery for QueueRedelivery {
    async fn retry_after(&self, receipt_handle: &str, delay: Duration) -> Result<(), DependencyError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(delay.as_secs().max(1) as i32)
            .send()
            .await
            .map_err(|error| classify("sqs", "ChangeMessageVisibility", error, &[]))?;
        Ok(())
    }

    /// Read once per instance. A policy without a readable count is remembered as none; a
    /// failed read is tried again next time.
    async fn max_receive_count(&self) -> Result<Option<u32>, DependencyError> {
        let read = self.max_receive_count.get_or_try_init(|| max_receive_count(&self.client, &self.queue_url)).await;
        match read {
            Ok(max) => Ok(*max),
            Err(error) => {
                if error.class == FailureClass::Permanent {
                    let _ = self.max_receive_count.set(None);
                }
                Err(error)
            }
        }
    }
}

/// The queue's `maxReceiveCount` (after that many receives SQS moves a message to the DLQ);
/// `None` for a queue without a redrive policy.
async fn max_receive_count(client: &Client, queue_url: &str) -> Result<Option<u32>, DependencyError> {
    let name = aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy;
    let output = client
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(name.clone())
        .send()
        .await
        .map_err(|error| classify("sqs", "GetQueueAttributes", error, &[]))?;
    let Some(policy) = output.attributes.as_ref().and_then(|attributes| attributes.get(&name)) else {
        return Ok(None);
    };
    // A number, or a string of one, depending on how the policy was written.
    let count =
        serde_json::from_str::<serde_json::Value>(policy).ok().and_then(|policy| match &policy["maxReceiveCount"] {
            serde_json::Value::Number(count) => count.as_u64(),
            serde_json::Value::String(count) => count.parse().ok(),
            _ => None,
        });
    count.map(|count| Some(count as u32)).ok_or_else(|| DependencyError {
        class: FailureClass::Permanent,
        service: "sqs",
        operation: "GetQueueAttributes",
        code: "UnreadableRedrivePolicy".into(),
        message: format!("no maxReceiveCount in the queue's redrive policy {policy}"),
    })
}

/// Reads up to `limit` messages of a queue without taking them: each is received with a zero
/// visibility timeout, so it stays available (its receive count goes up, which only matters on
/// a queue with a redrive policy: use this on DLQs).
pub async fn peek(
    client: &Client,
    queue_url: &str,
    limit: usize,
) -> Result<Vec<aws_sdk_sqs::types::Message>, DependencyError> {
    let mut seen = std::collections::HashSet::new();
    let mut messages = Vec::new();
    while messages.len() < limit {
        let received = client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(SQS_BATCH_LIMIT as i32)
            .visibility_timeout(0)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(|error| classify("sqs", "ReceiveMessage", error, &[]))?
            .messages
            .unwrap_or_default();
        let fresh: Vec<_> = received.into_iter().filter(|message| seen.insert(message.message_id.clone())).collect();
        if fresh.is_empty() {
            break;
        }
        messages.extend(fresh);
    }
    messages.truncate(limit);
    Ok(messages)
}

/// Deletes received messages by receipt handle, 10 per DeleteMessageBatch call.
pub async fn delete_messages(
    client: &Client,
    queue_url: &str,
    receipt_handles: &[String],
) -> Result<(), DependencyError> {
    for chunk in receipt_handles.chunks(SQS_BATCH_LIMIT) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(index, receipt)| {
                aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .expect("id and receipt handle are set")
            })
            .collect();
        let output = client
            .delete_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|error| classify("sqs", "DeleteMessageBatch", error, &[]))?;
        if let Some(failure) = output.failed.first() {
            return Err(DependencyError {
                class: FailureClass::Transient,
                service: "sqs",
                operation: "DeleteMessageBatch",
                code: failure.code.clone(),
                message: failure.message.clone().unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// Splits messages into SendMessageBatch calls within SQS's count and size limits.
fn chunks<'a>(messages: &'a [&'a Outgoing]) -> Vec<&'a [&'a Outgoing]> {
    let mut chunks = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (index, message) in messages.iter().enumerate() {
        let full = index - start == SQS_BATCH_LIMIT || bytes + message.body.len() > SQS_BATCH_BYTES;
        if full && index > start {
            chunks.push(&messages[start..index]);
            (start, bytes) = (index, 0);
        }
        bytes += message.body.len();
    }
    if start < messages.len() {
        chunks.push(&messages[start..]);
    }
    chunks
}

/// A channel's dead-letter queue, with the channel's queue its messages go back to.
pub struct DeadLetterQueue {
    client: Client,
    dead_letter_url: String,
    queue_url: String,
}

impl DeadLetterQueue {
    pub fn new(client: Client, dead_letter_url: String, queue_url: String) -> Self {
        Self { client, dead_letter_url, queue_url }
    }
}

impl DeadLetters for DeadLetterQueue {
    async fn depth(&self) -> Result<u64, DependencyError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(&self.dead_letter_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .map_err(|error| classify("sqs", "GetQueueAttributes", error, &[]))?;
        Ok(output
            .attributes
            .and_then(|attributes| attributes.get(&QueueAttributeName::ApproximateNumberOfMessages).cloned())
            .and_then(|count| count.parse().ok())
            .unwrap_or(0))
    }

    async fn receive(&self, max: usize, hold: Duration) -> Result<Vec<DeadLetter>, DependencyError> {
        let received = self
            .client
            .receive_message()
            .queue_url(&self.dead_letter_url)
            .max_number_of_messages(max.clamp(1, SQS_BATCH_LIMIT) as i32)
            .visibility_timeout(hold.as_secs() as i32)
            .wait_time_seconds(0)
            .send()
            .await
            .map_err(|error| classify("sqs", "ReceiveMessage", error, &[]))?;
        Ok(received
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|message| DeadLetter {
                message_id: message.message_id.unwrap_or_default(),
                receipt_handle: message.receipt_handle.unwrap_or_default(),
                body: message.body.unwrap_or_default(),
            })
            .collect())
    }

    async fn send_back(&self, body: &str) -> Result<(), DependencyError> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .map_err(|error| classify("sqs", "SendMessage", error, &[]))?;
        Ok(())
    }

    async fn delete(&self, receipt_handles: &[String]) -> Result<(), DependencyError> {
        delete_messages(&self.client, &self.dead_letter_url, receipt_handles).await
    }
}

/// The dead-letter queue URL of each channel.
#[derive(Clone, Debug)]
pub struct ChannelDeadLetterQueues {
    pub push: String,
    pub sms: String,
    pub email: String,
}

impl ChannelDeadLetterQueues {
    pub fn load(settings: &mut Settings<'_>) -> Self {
        Self {
            push: settings.required("PUSH_DLQ_URL"),
            sms: settings.required("SMS_DLQ_URL"),
            email: settings.required("EMAIL_DLQ_URL"),
        }
    }

    pub fn url(&self, channel: Channel) -> &str {
        match channel {
            Channel::Push => &self.push,
            Channel::Sms => &self.sms,
            Channel::Email => &self.email,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outgoing(bytes: usize) -> Outgoing {
        Outgoing {
            notification_id: "n".into(),
            delivery_id: "email".into(),
            channel: Channel::Email,
            body: "x".repeat(bytes),
        }
    }

    #[test]
    fn batches_respect_the_count_and_size_limits() {
        let small: Vec<Outgoing> = (0..23).map(|_| outgoing(10)).collect();
        let refs: Vec<&Outgoing> = small.iter().collect();
        let sizes: Vec<usize> = chunks(&refs).iter().map(|chunk| chunk.len()).collect();
        assert_eq!(sizes, vec![10, 10, 3]);

        let large: Vec<Outgoing> = (0..3).map(|_| outgoing(150 * 1024)).collect();
        let refs: Vec<&Outgoing> = large.iter().collect();
        let sizes: Vec<usize> = chunks(&refs).iter().map(|chunk| chunk.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
        assert!(chunks(&[]).is_empty());
    }
}
