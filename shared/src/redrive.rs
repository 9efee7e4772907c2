//! Redriving a channel's DLQ after the fault that filled it is fixed. Each parked message is
//! looked up in the notification log: a delivery that already has an outcome (sent, failed or
//! skipped, e.g. through an earlier redrive) is dropped from the DLQ; any other goes back to the
//! channel's queue as a new message (so its backoff starts over) with `redriven` in its
//! notification's timeline. A message is sent back before it is deleted from the DLQ: a crash in
//! between duplicates it (the delivery state absorbs that), never loses it. Messages that do not
//! name a logged delivery stay in the DLQ for a person to read.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::channel::Channel;
use crate::domain::delivery::DeliveryRef;
use crate::domain::lifecycle::TimelineKind;
use crate::error::DependencyError;
use crate::ports::{DeadLetters, DeliveryLog};
use crate::store::notifications::NotificationStore;

/// How long a received DLQ message stays hidden from a concurrent redrive.
const IN_HAND: Duration = Duration::from_secs(60);

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

/// The redrive over its ports: the delivery log `L`.
pub struct Redrive<L = NotificationStore> {
    log: L,
}

impl<L: DeliveryLog> Redrive<L> {
    pub fn new(log: L) -> Self {
        Self { log }
    }

    /// Redrives up to `max` messages of a channel's dead letters to its queue; a dry run only
    /// counts.
    pub async fn run<D: DeadLetters>(
        &self,
        channel: Channel,
        dead_letters: &D,
        max: usize,
        dry_run: bool,
    ) -> Result<RedriveReport, DependencyError> {
        let mut report = RedriveReport {
            channel: Some(channel),
            dry_run,
            dead_letters: dead_letters.depth().await?,
            ..Default::default()
        };
        if dry_run {
            return Ok(report);
        }
        let mut seen = HashSet::new();
        while seen.len() < max {
            let letters = dead_letters.receive(max - seen.len(), IN_HAND).await?;
            if letters.is_empty() || letters.iter().all(|letter| seen.contains(&letter.message_id)) {
                break;
            }
            let mut finished = Vec::new();
            for letter in letters {
                if !seen.insert(letter.message_id.clone()) {
                    continue;
                }
                let Ok(delivery) = serde_json::from_str::<DeliveryRef>(&letter.body) else {
                    report.left_in_dlq += 1;
                    continue;
                };
                let record = self.log.get(&delivery.notification_id).await?;
                let status =
                    record.as_ref().and_then(|record| record.deliveries.get(&delivery.delivery_id)).map(|d| d.status);
                match status {
                    None => report.left_in_dlq += 1,
                    Some(status) if status.is_final() => {
                        report.already_finished += 1;
                        finished.push(letter.receipt_handle);
                    }
                    Some(_) => {
                        dead_letters.send_back(&letter.body).await?;
                        self.log
                            .append_event(
                                &delivery.notification_id,
                                &delivery.delivery_id,
                                TimelineKind::Redriven,
                                channel,
                            )
                            .await?;
                        report.redriven += 1;
                        finished.push(letter.receipt_handle);
                    }
                }
            }
            dead_letters.delete(&finished).await?;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::notification::DeliveryStatus;
    use crate::memory::{MemoryDeadLetters, MemoryLog};
    use crate::ports::DeadLetter;

    fn logged(log: &MemoryLog, id: &str, status: DeliveryStatus) -> DeadLetter {
        log.insert(crate::memory::logged(id, "sms", Channel::Sms, status));
        letter(id, &format!(r#"{{"notification_id": "{id}", "delivery_id": "sms"}}"#))
    }

    fn letter(id: &str, body: &str) -> DeadLetter {
        DeadLetter { message_id: format!("m-{id}"), receipt_handle: format!("r-{id}"), body: body.into() }
    }

    #[tokio::test]
    async fn a_redrive_sends_back_parked_deliveries_drops_finished_ones_and_leaves_strangers() {
        let log = MemoryLog::default();
        let dead_letters = MemoryDeadLetters::default();
        let parked = logged(&log, "n-parked", DeliveryStatus::Parked);
        let letters = [parked.clone(), logged(&log, "n-sent", DeliveryStatus::Sent), letter("x", "not a delivery")];
        dead_letters.letters.lock().unwrap().extend(letters);
        let redrive = Redrive::new(log);

        let counted = redrive.run(Channel::Sms, &dead_letters, 500, true).await.unwrap();
        assert_eq!((counted.dead_letters, counted.redriven), (3, 0), "a dry run only counts");
        let report = redrive.run(Channel::Sms, &dead_letters, 500, false).await.unwrap();
        assert_eq!((report.redriven, report.already_finished, report.left_in_dlq), (1, 1, 1));
        assert_eq!(*dead_letters.sent_back.lock().unwrap(), [parked.body]);
        let left: Vec<String> = dead_letters.letters.lock().unwrap().iter().map(|letter| letter.body.clone()).collect();
        assert_eq!(left, ["not a delivery"]);
        let events = redrive.log.get(&"n-parked".into()).await.unwrap().unwrap().events;
        assert_eq!(events.iter().map(|event| event.kind).collect::<Vec<_>>(), [TimelineKind::Redriven]);
    }
}
