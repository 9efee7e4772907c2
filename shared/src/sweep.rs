//! The recovery sweep: finishes notifications whose deliveries were logged but whose messages
//! may be gone (the enqueue after the log write was lost, or an attempt died holding its lease),
//! by enqueueing those deliveries again from the messages the record stores for them. It reads
//! the sparse `pending` index (records join it when the intake's enqueue fails, with the messages
//! SQS refused), does bounded work per run, and is safe to run concurrently with
//! itself: each record is rescheduled with a conditional write first, and only the sweep that
//! wins re-enqueues; a duplicate message would be absorbed by the delivery state anyway.

use serde::{Deserialize, Serialize};

use crate::domain::notification::{FIRST_SWEEP_AFTER_SECONDS, SWEEP_SHARDS};
use crate::error::DependencyError;
use crate::ports::{DeliveryLog, Enqueue};
use crate::queue::{Enqueuer, Outgoing};
use crate::store::notifications::NotificationStore;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    /// Due records looked at.
    pub examined: usize,
    /// Records whose deliveries all have outcomes: taken out of the index.
    pub settled: usize,
    /// Deliveries enqueued again.
    pub requeued: usize,
    /// Deliveries that could not be enqueued (they stay for the next run).
    pub not_enqueued: usize,
}

/// The sweep over its ports: the delivery log `L` and the channel queues `E`.
pub struct Sweep<L = NotificationStore, E = Enqueuer> {
    log: L,
    queues: E,
}

impl<L: DeliveryLog, E: Enqueue> Sweep<L, E> {
    pub fn new(log: L, queues: E) -> Self {
        Self { log, queues }
    }

    /// Looks at up to `budget` due records.
    pub async fn run(&self, now_epoch: i64, budget: usize) -> Result<SweepReport, DependencyError> {
        let mut report = SweepReport::default();
        for shard in 0..SWEEP_SHARDS {
            let left = budget.saturating_sub(report.examined);
            if left == 0 {
                break;
            }
            for id in self.log.due(shard, now_epoch, left).await? {
                report.examined += 1;
                let Some(record) = self.log.get(&id).await? else { continue };
                let Some(seen) = record.sweep_at else { continue };
                if record.finished() {
                    report.settled += usize::from(self.log.reschedule_sweep(&id, seen, None).await?);
                    continue;
                }
                // Look again later, twice as far out each time: a delivery retrying through SQS
                // or parked in a DLQ keeps its record pending without costing a read a minute.
                let created = crate::time::parse_rfc3339_epoch(&record.created_at).unwrap_or(seen);
                let next = now_epoch + (now_epoch - created).max(60);
                if !self.log.reschedule_sweep(&id, seen, Some(next)).await? {
                    continue;
                }
                let outgoing = Outgoing::from_outbox(&id, record.stranded(crate::time::now_epoch_millis()));
                let failures = self.queues.enqueue(&outgoing).await;
                for failure in &failures {
                    tracing::error!(notification_id = %id, delivery_id = %failure.message.delivery_id, error = %failure.error, "sweep could not enqueue");
                }
                if !failures.is_empty() {
                    // Not twice as far out: nothing of these is in flight, so try again soon.
                    let soon = now_epoch + FIRST_SWEEP_AFTER_SECONDS;
                    self.log.reschedule_sweep(&id, next, Some(soon)).await?;
                }
                report.requeued += outgoing.len() - failures.len();
                report.not_enqueued += failures.len();
                if !outgoing.is_empty() {
                    tracing::warn!(notification_id = %id, deliveries = outgoing.len(), "re-enqueued stranded deliveries");
                }
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::channel::Channel;
    use crate::domain::notification::{DeliveryStatus, NotificationRecord, SweepShard};
    use crate::memory::{MemoryLog, MemoryQueues, logged};

    const NOW: i64 = 1_000_000;

    /// A record due for the sweep, its delivery `status` (never attempted when `queued`), with
    /// the message SQS refused at intake.
    fn stranded(id: &str, status: DeliveryStatus) -> NotificationRecord {
        let mut record = logged(id, "sms", Channel::Sms, status);
        record.deliveries.get_mut("sms").unwrap().message = Some(format!("{{\"notification_id\": \"{id}\"}}"));
        record.created_at = crate::time::rfc3339(time::OffsetDateTime::from_unix_timestamp(NOW - 600).unwrap());
        record.sweep_shard = Some(SweepShard(0).to_string());
        record.sweep_at = Some(NOW - 1);
        record
    }

    #[tokio::test]
    async fn the_sweep_enqueues_stranded_deliveries_and_settles_finished_records() {
        let log = MemoryLog::default();
        log.insert(stranded("n-stranded", DeliveryStatus::Queued));
        log.insert(stranded("n-finished", DeliveryStatus::Sent));
        let sweep = Sweep::new(log, MemoryQueues::default());
        let report = sweep.run(NOW, 200).await.unwrap();
        assert_eq!((report.examined, report.settled, report.requeued), (2, 1, 1));
        let enqueued: Vec<String> =
            sweep.queues.enqueued.lock().unwrap().iter().map(|message| message.notification_id.to_string()).collect();
        assert_eq!(enqueued, ["n-stranded"]);
        // Looked at again later, twice as far out as the record's age; the finished one never.
        let again = sweep.log.get(&"n-stranded".into()).await.unwrap().unwrap().sweep_at.unwrap();
        assert_eq!(again, NOW + 600);
        assert_eq!(sweep.log.get(&"n-finished".into()).await.unwrap().unwrap().sweep_at, None);
    }

    #[tokio::test]
    async fn a_refused_enqueue_is_looked_at_again_within_a_minute() {
        let log = MemoryLog::default();
        log.insert(stranded("n-1", DeliveryStatus::Queued));
        let queues = MemoryQueues::default();
        *queues.refuse.lock().unwrap() = 1;
        let sweep = Sweep::new(log, queues);
        let report = sweep.run(NOW, 200).await.unwrap();
        assert_eq!((report.requeued, report.not_enqueued), (0, 1));
        assert_eq!(
            sweep.log.get(&"n-1".into()).await.unwrap().unwrap().sweep_at,
            Some(NOW + FIRST_SWEEP_AFTER_SECONDS)
        );
    }

    #[tokio::test]
    async fn two_sweeps_at_once_enqueue_each_stranded_delivery_once() {
        let log = MemoryLog::default();
        for index in 0..5 {
            log.insert(stranded(&format!("n-{index}"), DeliveryStatus::Queued));
        }
        let sweep = Sweep::new(log, MemoryQueues::default());
        let (first, second) = tokio::join!(sweep.run(NOW, 200), sweep.run(NOW, 200));
        assert_eq!(first.unwrap().requeued + second.unwrap().requeued, 5);
        assert_eq!(sweep.queues.enqueued.lock().unwrap().len(), 5);
    }
}
