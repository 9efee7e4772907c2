//! The SQS adapters: enqueueing deliveries on the queues of each channel and lane with
//! SendMessageBatch (10 per request, checking every entry's result: a batch call can succeed
//! while some entries fail), a received message's redelivery (its visibility, or the DLQ) and a
//! channel's dead-letter queue (for the redrive). Every SQS call the delivery logic makes is here.

use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use futures::StreamExt;

use crate::aws::classify;
use crate::config::Settings;
use crate::domain::channel::Channel;
use crate::domain::delivery::DeliveryRef;
use crate::domain::notification::{DeliveryId, NotificationId};
use crate::domain::send_rate::Lane;
use crate::error::{DependencyError, FailureClass};
use crate::ports::{DeadLetter, DeadLetters, Enqueue, Redelivery};

/// SQS accepts at most 10 entries per SendMessageBatch…
const SQS_BATCH_LIMIT: usize = 10;
/// …and at most 256 KiB of bodies in one call.
const SQS_BATCH_BYTES: usize = 256 * 1024;
/// `SendMessageBatch` requests one enqueue keeps in flight.
const CHUNKS_IN_FLIGHT: usize = 8;

/// A channel's two queues: one per lane.
#[derive(Clone, Debug)]
pub struct LaneQueues {
    pub transactional: String,
    pub bulk: String,
}

impl LaneQueues {
    /// `<PREFIX>QUEUE_URL` (bulk) and `<PREFIX>TRANSACTIONAL_QUEUE_URL`.
    pub fn load(settings: &mut Settings<'_>, prefix: &str) -> Self {
        Self {
            transactional: settings.required(&format!("{prefix}TRANSACTIONAL_QUEUE_URL")),
            bulk: settings.required(&format!("{prefix}QUEUE_URL")),
        }
    }

    pub fn url(&self, lane: Lane) -> &str {
        match lane {
            Lane::Transactional => &self.transactional,
            Lane::Bulk => &self.bulk,
        }
    }

    /// The URL of the queue whose ARN is `arn` (its name is the last part of both).
    pub fn url_of_arn(&self, arn: &str) -> Option<&str> {
        let name = arn.rsplit(':').next()?;
        Lane::ALL.into_iter().map(|lane| self.url(lane)).find(|url| url.rsplit('/').next() == Some(name))
    }
}

/// The longest delay SQS gives a message.
pub const MAX_QUEUE_DELAY: Duration = Duration::from_secs(900);

/// The delay of a message due at `due_ms` sent at `now_ms`: the time left, rounded up to
/// whole seconds (never early), up to SQS's 15 minutes.
pub fn queue_delay(due_ms: i64, now_ms: i64) -> Duration {
    let seconds = ((due_ms - now_ms).max(0) as u64).div_ceil(1000);
    Duration::from_secs(seconds).min(MAX_QUEUE_DELAY)
}

/// `MAX_QUEUE_DELAY_SECONDS`: the longest wait kept on a queue as a delay (SQS's 15 minutes,
/// the default; lower in tests, to exercise the schedules that keep longer waits).
fn max_queue_delay(settings: &mut Settings<'_>) -> Duration {
    Duration::from_secs(settings.parsed_or("MAX_QUEUE_DELAY_SECONDS", MAX_QUEUE_DELAY.as_secs())).min(MAX_QUEUE_DELAY)
}

/// The queue URLs of each channel and lane.
#[derive(Clone, Debug)]
pub struct ChannelQueues {
    pub push: LaneQueues,
    pub sms: LaneQueues,
    pub email: LaneQueues,
    /// The longest delay a message is sent with.
    pub max_delay: Duration,
}

impl ChannelQueues {
    pub fn load(settings: &mut Settings<'_>) -> Self {
        Self {
            push: LaneQueues::load(settings, "PUSH_"),
            sms: LaneQueues::load(settings, "SMS_"),
            email: LaneQueues::load(settings, "EMAIL_"),
            max_delay: max_queue_delay(settings),
        }
    }

    pub fn lanes(&self, channel: Channel) -> &LaneQueues {
        match channel {
            Channel::Push => &self.push,
            Channel::Sms => &self.sms,
            Channel::Email => &self.email,
        }
    }

    pub fn url(&self, channel: Channel, lane: Lane) -> &str {
        self.lanes(channel).url(lane)
    }
}

/// One delivery's message to enqueue.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub notification_id: NotificationId,
    pub delivery_id: DeliveryId,
    pub channel: Channel,
    pub lane: Lane,
    /// Not to be received before this (epoch ms): sent with a delay of up to SQS's 15 minutes;
    /// a dispatcher defers it further if it comes earlier.
    pub deliver_after: Option<i64>,
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
                let body = delivery.message.clone()?;
                let reference = serde_json::from_str::<DeliveryRef>(&body).ok();
                Some(Outgoing {
                    notification_id: notification_id.clone(),
                    delivery_id: delivery_id.clone(),
                    channel: delivery.channel,
                    lane: DeliveryRef::lane_of(&body),
                    deliver_after: reference.and_then(|reference| reference.deliver_after),
                    body,
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
        let per_queue: Vec<(&str, Vec<&Outgoing>)> = Channel::ALL
            .into_iter()
            .flat_map(|channel| Lane::ALL.into_iter().map(move |lane| (channel, lane)))
            .map(|(channel, lane)| {
                let url = self.queues.url(channel, lane);
                (url, messages.iter().filter(|message| message.channel == channel && message.lane == lane).collect())
            })
            .collect();
        // The chunks are independent requests: sent a few at a time, a batch of 100
        // notifications on three channels waits for a few SQS round trips instead of up to 30 in
        // a row, without a burst that throttling would answer.
        let mut sends = Vec::new();
        for (url, for_queue) in &per_queue {
            sends.extend(chunks(for_queue).into_iter().map(|chunk| self.send_chunk(url, chunk)));
        }
        let not_enqueued: Vec<Vec<NotEnqueued>> =
            futures::stream::iter(sends).buffer_unordered(CHUNKS_IN_FLIGHT).collect().await;
        not_enqueued.into_iter().flatten().collect()
    }

    async fn send_chunk(&self, queue_url: &str, chunk: &[&Outgoing]) -> Vec<NotEnqueued> {
        let now_ms = crate::time::now_epoch_millis();
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(index, message)| {
                let delay = message
                    .deliver_after
                    .map(|due| queue_delay(due, now_ms).min(self.queues.max_delay).as_secs() as i32);
                SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(&message.body)
                    .set_delay_seconds(delay.filter(|seconds| *seconds > 0))
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

/// How a message received from one of a channel's queues comes back (its visibility, set by
/// the dispatcher's backoff), waits for its time (a delayed copy, or a one-time EventBridge
/// Scheduler schedule for a longer wait), or is given up on: moved to the channel's DLQ.
pub struct QueueRedelivery {
    client: Client,
    queues: LaneQueues,
    dead_letter_url: String,
    schedules: Schedules,
}

/// Where long waits are kept: one-time schedules in the stack's group, which send the message
/// to its queue as the scheduler's role, and delete themselves once they have.
struct Schedules {
    client: aws_sdk_scheduler::Client,
    group: String,
    role_arn: String,
    /// The channel's DLQ, where a send the scheduler could not make for a day goes.
    dead_letter_arn: String,
    /// The longest wait kept on the queue itself (`MAX_QUEUE_DELAY_SECONDS`).
    max_queue_delay: Duration,
}

impl QueueRedelivery {
    /// Settings: `QUEUE_URL`, `TRANSACTIONAL_QUEUE_URL`, `DEAD_LETTER_QUEUE_URL`,
    /// `DEAD_LETTER_QUEUE_ARN`, `SCHEDULE_GROUP`, `SCHEDULER_ROLE_ARN` and
    /// `MAX_QUEUE_DELAY_SECONDS` (900).
    pub fn load(client: Client, scheduler: aws_sdk_scheduler::Client, settings: &mut Settings<'_>) -> Self {
        let queues = LaneQueues::load(settings, "");
        let max_queue_delay = max_queue_delay(settings);
        let schedules = Schedules {
            client: scheduler,
            group: settings.required("SCHEDULE_GROUP"),
            role_arn: settings.required("SCHEDULER_ROLE_ARN"),
            dead_letter_arn: settings.required("DEAD_LETTER_QUEUE_ARN"),
            max_queue_delay,
        };
        Self { client, queues, dead_letter_url: settings.required("DEAD_LETTER_QUEUE_URL"), schedules }
    }

    fn queue_url(&self, source: &str, operation: &'static str) -> Result<&str, DependencyError> {
        self.queues.url_of_arn(source).ok_or_else(|| DependencyError {
            class: FailureClass::Permanent,
            service: "sqs",
            operation,
            code: "UnknownQueue".into(),
            message: format!("{source} is not one of this channel's queues"),
        })
    }
}

impl Schedules {
    /// A one-time schedule that sends `body` to queue `queue_arn` at `due_ms`. Its name is the
    /// delivery's and the time's, so a second deferral of the same wait (a retried attempt)
    /// finds it made.
    async fn create(&self, queue_arn: &str, body: &str, due_ms: i64) -> Result<(), DependencyError> {
        use aws_sdk_scheduler::types::{
            ActionAfterCompletion, DeadLetterConfig, FlexibleTimeWindow, FlexibleTimeWindowMode, RetryPolicy, Target,
        };
        let reference: DeliveryRef = serde_json::from_str(body).map_err(|error| DependencyError {
            class: FailureClass::Permanent,
            service: "scheduler",
            operation: "CreateSchedule",
            code: "UnreadableMessage".into(),
            message: error.to_string(),
        })?;
        // Whole seconds, rounded up: the schedule never fires before the delivery is due.
        let due = crate::time::rfc3339_millis(due_ms + 999);
        let at = due.trim_end_matches('Z');
        let name = schedule_name(&reference.notification_id, &reference.delivery_id, due_ms);
        let target = Target::builder()
            .arn(queue_arn)
            .role_arn(&self.role_arn)
            .input(body)
            // A send the scheduler cannot make for a day goes to the channel's DLQ, for on-call.
            .retry_policy(
                RetryPolicy::builder().maximum_event_age_in_seconds(86_400).maximum_retry_attempts(185).build(),
            )
            .dead_letter_config(DeadLetterConfig::builder().arn(&self.dead_letter_arn).build())
            .build()
            .map_err(|error| construction("CreateSchedule", error))?;
        let created = self
            .client
            .create_schedule()
            .name(&name)
            .group_name(&self.group)
            .schedule_expression(format!("at({at})"))
            .schedule_expression_timezone("UTC")
            .flexible_time_window(
                FlexibleTimeWindow::builder()
                    .mode(FlexibleTimeWindowMode::Off)
                    .build()
                    .map_err(|error| construction("CreateSchedule", error))?,
            )
            .action_after_completion(ActionAfterCompletion::Delete)
            .target(target)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(error) if error.as_service_error().is_some_and(|service| service.is_conflict_exception()) => Ok(()),
            Err(error) => Err(classify("scheduler", "CreateSchedule", error, &["ValidationException"])),
        }
    }
}

/// A schedule's name (at most 64 of `[0-9a-zA-Z-_.]`): the notification's id (a UUID), a hash
/// of the delivery id and the due time.
fn schedule_name(notification_id: &NotificationId, delivery_id: &DeliveryId, due_ms: i64) -> String {
    let delivery = crate::domain::notification::fnv1a(delivery_id.as_str());
    format!("{}-{delivery:08x}-{}", notification_id.as_str(), due_ms / 1000)
}

fn construction(operation: &'static str, error: impl std::fmt::Display) -> DependencyError {
    DependencyError {
        class: FailureClass::Permanent,
        service: "scheduler",
        operation,
        code: "Construction".into(),
        message: error.to_string(),
    }
}

impl Redelivery for QueueRedelivery {
    async fn retry_after(&self, source: &str, receipt_handle: &str, delay: Duration) -> Result<(), DependencyError> {
        let queue_url = self.queue_url(source, "ChangeMessageVisibility")?;
        self.client
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(delay.as_secs().max(1) as i32)
            .send()
            .await
            .map_err(|error| classify("sqs", "ChangeMessageVisibility", error, &[]))?;
        Ok(())
    }

    async fn dead_letter(&self, body: &str) -> Result<(), DependencyError> {
        self.client
            .send_message()
            .queue_url(&self.dead_letter_url)
            .message_body(body)
            .send()
            .await
            .map_err(|error| classify("sqs", "SendMessage", error, &[]))?;
        Ok(())
    }

    async fn defer(&self, source: &str, body: &str, due_ms: i64) -> Result<(), DependencyError> {
        let now_ms = crate::time::now_epoch_millis();
        if due_ms - now_ms > self.schedules.max_queue_delay.as_millis() as i64 {
            return self.schedules.create(source, body, due_ms).await;
        }
        self.client
            .send_message()
            .queue_url(self.queue_url(source, "SendMessage")?)
            .message_body(body)
            .delay_seconds(queue_delay(due_ms, now_ms).as_secs() as i32)
            .send()
            .await
            .map_err(|error| classify("sqs", "SendMessage", error, &[]))?;
        Ok(())
    }
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

/// A channel's dead-letter queue, with the channel's queues its messages go back to (each to
/// its lane's).
pub struct DeadLetterQueue {
    client: Client,
    dead_letter_url: String,
    queues: LaneQueues,
}

impl DeadLetterQueue {
    pub fn new(client: Client, dead_letter_url: String, queues: LaneQueues) -> Self {
        Self { client, dead_letter_url, queues }
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
            .queue_url(self.queues.url(DeliveryRef::lane_of(body)))
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
            lane: Lane::Bulk,
            deliver_after: None,
            body: "x".repeat(bytes),
        }
    }

    #[test]
    fn a_delay_rounds_up_and_stops_at_fifteen_minutes() {
        assert_eq!(queue_delay(10_001, 0), Duration::from_secs(11));
        assert_eq!(queue_delay(0, 5_000), Duration::ZERO, "already due");
        assert_eq!(queue_delay(3_600_000, 0), MAX_QUEUE_DELAY);
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

    #[test]
    fn a_record_names_its_queue_by_arn_and_the_lane_by_url() {
        let queues = LaneQueues {
            transactional: "http://localhost:4566/000000000000/t-SmsTransactionalQueue".into(),
            bulk: "https://sqs.us-east-1.amazonaws.com/123456789012/stack-SmsQueue-AB12".into(),
        };
        let arn = "arn:aws:sqs:us-east-1:123456789012:stack-SmsQueue-AB12";
        assert_eq!(queues.url_of_arn(arn), Some(queues.bulk.as_str()));
        assert_eq!(
            queues.url_of_arn("arn:aws:sqs:us-east-1:000000000000:t-SmsTransactionalQueue"),
            Some(queues.transactional.as_str())
        );
        assert_eq!(queues.url_of_arn("arn:aws:sqs:us-east-1:1:other"), None);
    }
}
