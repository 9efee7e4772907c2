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

pub struct Sweep {
    notifications: NotificationStore,
    enqueuer: Enqueuer,
}

impl Sweep {
    pub fn new(notifications: NotificationStore, enqueuer: Enqueuer) -> Self {
        Self { notifications, enqueuer }
    }

    /// Looks at up to `budget` due records.
    pub async fn run(&self, now_epoch: i64, budget: usize) -> Result<SweepReport, DependencyError> {
        let mut report = SweepReport::default();
        for shard in 0..SWEEP_SHARDS {
            let left = budget.saturating_sub(report.examined);
            if left == 0 {
                break;
            }
            for id in self.notifications.due(&format!("pending#{shard}"), now_epoch, left).await? {
                report.examined += 1;
                let Some(record) = self.notifications.get(&id).await? else { continue };
                let Some(seen) = record.sweep_at else { continue };
                if record.finished() {
                    report.settled += usize::from(self.notifications.reschedule_sweep(&id, seen, None).await?);
                    continue;
                }
                // Look again later, twice as far out each time: a delivery retrying through SQS
                // or parked in a DLQ keeps its record pending without costing a read a minute.
                let created = crate::time::parse_rfc3339_epoch(&record.created_at).unwrap_or(seen);
                let next = now_epoch + (now_epoch - created).max(60);
                if !self.notifications.reschedule_sweep(&id, seen, Some(next)).await? {
                    continue;
                }
                let outgoing = Outgoing::from_outbox(&id, record.stranded(crate::time::now_epoch_millis()));
                let failures = self.enqueuer.enqueue(&outgoing).await;
                for failure in &failures {
                    tracing::error!(notification_id = %id, delivery_id = %failure.message.delivery_id, error = %failure.error, "sweep could not enqueue");
                }
                if !failures.is_empty() {
                    // Not twice as far out: nothing of these is in flight, so try again soon.
                    let soon = now_epoch + FIRST_SWEEP_AFTER_SECONDS;
                    self.notifications.reschedule_sweep(&id, next, Some(soon)).await?;
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
