//! Enqueueing deliveries on the per-channel queues with SendMessageBatch (10 per request),
//! checking every entry's result: a batch call can succeed while some entries fail.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures::StreamExt;

use crate::aws::classify;
use crate::config::Settings;
use crate::domain::channel::Channel;
use crate::error::{DependencyError, FailureClass};

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
    pub notification_id: String,
    pub delivery_id: String,
    pub channel: Channel,
    pub body: String,
}

impl Outgoing {
    /// The stored messages of some of a notification's deliveries (its outbox: only those SQS
    /// once refused have one), to enqueue again.
    pub fn from_outbox<'a>(
        notification_id: &str,
        deliveries: impl Iterator<Item = (&'a String, &'a crate::domain::notification::DeliveryRecord)>,
    ) -> Vec<Self> {
        deliveries
            .filter_map(|(delivery_id, delivery)| {
                Some(Outgoing {
                    notification_id: notification_id.to_string(),
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

/// The queue's `maxReceiveCount` (after that many receives SQS moves a message to the DLQ);
/// `None` for a queue without a redrive policy.
pub async fn max_receive_count(client: &Client, queue_url: &str) -> Result<Option<u32>, DependencyError> {
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
