//! Redriving a channel's DLQ after the fault that filled it is fixed. Each parked message is
//! looked up in the notification log: a delivery that already has an outcome (sent, failed or
//! skipped, e.g. through an earlier redrive) is dropped from the DLQ; any other goes back to the
//! channel's queue as a new message (so its backoff starts over) with `redriven` in its
//! notification's timeline. A message is sent back before it is deleted from the DLQ: a crash in
//! between duplicates it (the delivery state absorbs that), never loses it. Messages that do not
//! name a logged delivery stay in the DLQ for a person to read.

use std::collections::HashSet;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::QueueAttributeName;
use serde::{Deserialize, Serialize};

use crate::aws::classify;
use crate::domain::channel::Channel;
use crate::error::DependencyError;
use crate::queue::delete_messages;
use crate::store::notifications::NotificationStore;

/// How long a received DLQ message stays hidden from a concurrent redrive.
const IN_HAND: Duration = Duration::from_secs(60);

/// What a DLQ message says about its delivery (the rest of the body is the channel's content).
#[derive(Deserialize)]
struct DeliveryRef {
    notification_id: String,
    delivery_id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedriveReport {
    pub channel: Option<Channel>,
    pub dry_run: bool,
    /// Messages in the DLQ before the redrive (approximate, as SQS counts).
    pub dead_letters: u64,
    /// Sent back to the channel's queue.
    pub redriven: usize,
    /// Dropped: their delivery already had an outcome.
    pub already_finished: usize,
    /// Left in the DLQ: not a delivery of the log (unreadable, or its notification expired).
    pub left_in_dlq: usize,
}

pub struct Redrive {
    sqs: Client,
    notifications: NotificationStore,
}

impl Redrive {
    pub fn new(sqs: Client, notifications: NotificationStore) -> Self {
        Self { sqs, notifications }
    }

    /// Redrives up to `max` messages of `dead_letter_url` to `queue_url`; a dry run only counts.
    pub async fn run(
        &self,
        channel: Channel,
        dead_letter_url: &str,
        queue_url: &str,
        max: usize,
        dry_run: bool,
    ) -> Result<RedriveReport, DependencyError> {
        let mut report = RedriveReport {
            channel: Some(channel),
            dry_run,
            dead_letters: self.depth(dead_letter_url).await?,
            ..Default::default()
        };
        if dry_run {
            return Ok(report);
        }
        let mut seen = HashSet::new();
        while seen.len() < max {
            let received = self
                .sqs
                .receive_message()
                .queue_url(dead_letter_url)
                .max_number_of_messages((max - seen.len()).min(10) as i32)
                .visibility_timeout(IN_HAND.as_secs() as i32)
                .wait_time_seconds(0)
                .send()
                .await
                .map_err(|error| classify("sqs", "ReceiveMessage", error, &[]))?;
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() || messages.iter().all(|message| seen.contains(&message.message_id)) {
                break;
            }
            let mut finished = Vec::new();
            for message in messages {
                if !seen.insert(message.message_id.clone()) {
                    continue;
                }
                let body = message.body.clone().unwrap_or_default();
                let receipt = message.receipt_handle.clone().unwrap_or_default();
                let Ok(delivery) = serde_json::from_str::<DeliveryRef>(&body) else {
                    report.left_in_dlq += 1;
                    continue;
                };
                let record = self.notifications.get(&delivery.notification_id).await?;
                let status =
                    record.as_ref().and_then(|record| record.deliveries.get(&delivery.delivery_id)).map(|d| d.status);
                match status {
                    None => report.left_in_dlq += 1,
                    Some(status) if status.is_final() => {
                        report.already_finished += 1;
                        finished.push(receipt);
                    }
                    Some(_) => {
                        self.sqs
                            .send_message()
                            .queue_url(queue_url)
                            .message_body(body)
                            .send()
                            .await
                            .map_err(|error| classify("sqs", "SendMessage", error, &[]))?;
                        self.notifications.append_event(&delivery.notification_id, "redriven", channel).await?;
                        report.redriven += 1;
                        finished.push(receipt);
                    }
                }
            }
            delete_messages(&self.sqs, dead_letter_url, &finished).await?;
        }
        Ok(report)
    }

    async fn depth(&self, queue_url: &str) -> Result<u64, DependencyError> {
        let output = self
            .sqs
            .get_queue_attributes()
            .queue_url(queue_url)
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
}
