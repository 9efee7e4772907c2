//! The email provider's feedback (SES event publishing, via SNS, on the email events queue):
//! `delivered`, `bounced` and `complained` outcomes on the delivery, soft bounces on its
//! timeline, and hard-bounced or complaining addresses on the suppression
//! list, which intake and the email dispatcher honour. Every step is idempotent: SNS and SQS
//! deliver at least once.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};

use crate::batch::{self, Disposition, SqsRecord};
use crate::config::Settings;
use crate::domain::channel::Channel;
use crate::domain::email_event::{Feedback, SesEvent};
use crate::domain::lifecycle::{Event, TimelineKind};
use crate::domain::notification::DeliveryFailure;
use crate::error::{DependencyError, FailureClass};
use crate::metrics::{self, DeliveryMetric};
use crate::ports::{Counters, DeliveryLog, FeedbackRecorded, Suppressions};
use crate::store::notifications::NotificationStore;
use crate::store::stats::{Counted, StatsRecorder, StatsStore};
use crate::store::suppressions::{Suppression, SuppressionReason, SuppressionStore};

/// The feedback loop over its ports: the delivery log `L`, the suppression list `S` and the
/// stats counters `C`.
pub struct EmailFeedback<L = NotificationStore, S = SuppressionStore, C = StatsStore> {
    log: L,
    suppressions: S,
    stats: StatsRecorder<C>,
    concurrency: usize,
}

impl EmailFeedback {
    /// Settings: `NOTIFICATIONS_TABLE`, `SUPPRESSIONS_TABLE`, `STATS_TABLE`, `BATCH_CONCURRENCY` (10).
    /// The queue's subscription delivers raw SES records (template.yaml), so a message is one
    /// record: anything else is unreadable and ends in the DLQ like any poison.
    pub fn load(dynamodb: &aws_sdk_dynamodb::Client, settings: &mut Settings<'_>) -> Self {
        Self::new(
            NotificationStore::new(dynamodb.clone(), settings.required("NOTIFICATIONS_TABLE")),
            SuppressionStore::new(dynamodb.clone(), settings.required("SUPPRESSIONS_TABLE")),
            StatsStore::new(dynamodb.clone(), settings.required("STATS_TABLE")),
            settings.parsed_or("BATCH_CONCURRENCY", 10usize),
        )
    }
}

impl<L: DeliveryLog, S: Suppressions, C: Counters> EmailFeedback<L, S, C> {
    pub fn new(log: L, suppressions: S, counters: C, concurrency: usize) -> Self {
        Self { log, suppressions, stats: StatsRecorder::new(counters), concurrency }
    }

    pub async fn handle_batch(&self, event: SqsEvent) -> SqsBatchResponse {
        let response = batch::process(
            event,
            self.concurrency,
            |record: SqsRecord<SesEvent>| self.apply(record),
            batch::left_for_the_dlq,
        )
        .await;
        self.stats.flush().await;
        metrics::flush();
        response
    }

    async fn apply(&self, record: SqsRecord<SesEvent>) -> Disposition {
        let event = record.body;
        match self.record(&event).await {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::warn!(ses_message_id = %event.mail.message_id, error = %error, "feedback not recorded; will retry");
                Disposition::Retry
            }
        }
    }

    async fn record(&self, event: &SesEvent) -> Result<Disposition, DependencyError> {
        let Some((id, delivery_id)) = event.delivery() else {
            tracing::info!(ses_message_id = %event.mail.message_id, "feedback on an email that is not a delivery; ignored");
            return Ok(Disposition::Done);
        };
        let feedback = event.feedback();
        // Suppress first: even when the log record has expired, the address must not be mailed.
        if let Feedback::Bounced { addresses, detail } | Feedback::Complained { addresses, detail } = &feedback {
            let reason = match feedback {
                Feedback::Bounced { .. } => SuppressionReason::Bounce,
                _ => SuppressionReason::Complaint,
            };
            for address in addresses {
                let suppression = Suppression {
                    address: address.clone(),
                    reason,
                    detail: detail.clone(),
                    notification_id: id.to_string(),
                    created_at: crate::time::now_rfc3339(),
                };
                self.suppressions.add(&suppression).await?;
            }
        }
        let permanent = |code: &str, message: &str| {
            Some(DeliveryFailure {
                class: FailureClass::Permanent,
                code: code.into(),
                message: message.into(),
                provider: Some(Channel::Email.aws_provider().into()),
            })
        };
        let (change, error, metric) = match &feedback {
            Feedback::Delivered => (Event::Delivered, None, DeliveryMetric::Delivered),
            Feedback::Bounced { detail, .. } => (Event::Bounced, permanent("Bounce", detail), DeliveryMetric::Bounced),
            Feedback::Complained { detail, .. } => {
                (Event::Complained, permanent("Complaint", detail), DeliveryMetric::Complained)
            }
            Feedback::Rejected { reason } => (Event::Rejected, permanent("Rejected", reason), DeliveryMetric::Failed),
            Feedback::SoftBounced { .. } => {
                self.log.append_event(&id, &delivery_id, TimelineKind::SoftBounced, Channel::Email).await?;
                return Ok(Disposition::Done);
            }
            Feedback::Ignored(kind) => {
                tracing::debug!(event_type = %kind, "feedback not acted on");
                return Ok(Disposition::Done);
            }
        };
        let to = change.transition().to;
        match self.log.record_feedback(&id, &delivery_id, Channel::Email, change, error.as_ref()).await? {
            FeedbackRecorded::Recorded => {
                metrics::delivery(Channel::Email, metric);
                let counted = Counted { app_key: event.app_key(), template: event.template() };
                self.stats.count(counted, Channel::Email, to.as_str());
                tracing::info!(notification_id = %id, delivery_id = %delivery_id, status = to.as_str(), "feedback recorded");
                Ok(Disposition::Done)
            }
            // The event overtook the `sent` write; SQS brings it back after the visibility timeout.
            FeedbackRecorded::NotYetSent => Ok(Disposition::Retry),
            FeedbackRecorded::Unchanged(status) => {
                tracing::info!(notification_id = %id, delivery_id = %delivery_id, status = status.as_str(), "feedback changes nothing");
                Ok(Disposition::Done)
            }
            // Only receipts name a provider.
            FeedbackRecorded::OtherProvider => Ok(Disposition::Done),
            FeedbackRecorded::Missing => {
                tracing::info!(notification_id = %id, delivery_id = %delivery_id, "feedback on a delivery no longer logged");
                Ok(Disposition::Done)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::Event;
    use crate::domain::notification::DeliveryStatus;
    use crate::memory::{MemoryCounters, MemoryLog, MemorySuppressions, logged};

    fn feedback(status: DeliveryStatus) -> EmailFeedback<MemoryLog, MemorySuppressions, MemoryCounters> {
        let log = MemoryLog::default();
        log.insert(logged("n-1", "email", Channel::Email, status));
        EmailFeedback::new(log, MemorySuppressions::default(), MemoryCounters::default(), 10)
    }

    fn ses(kind: &str, detail: &str) -> SesEvent {
        let mail = r#""mail": {"timestamp": "t", "source": "n@example.com", "messageId": "m", "destination": ["ada@example.com"], "tags": {"notification_id": ["n-1"], "delivery_id": ["email"], "template": ["welcome"], "app": ["ak_0123456789abcdef0123"]}}"#;
        serde_json::from_str(&format!(r#"{{"eventType": "{kind}", {mail}, {detail}}}"#)).unwrap()
    }

    fn delivered() -> SesEvent {
        ses("Delivery", r#""delivery": {"recipients": ["ada@example.com"]}"#)
    }

    fn bounce() -> SesEvent {
        ses(
            "Bounce",
            r#""bounce": {"bounceType": "Permanent", "bounceSubType": "General", "bouncedRecipients": [{"emailAddress": "ada@example.com"}]}"#,
        )
    }

    fn status(feedback: &EmailFeedback<MemoryLog, MemorySuppressions, MemoryCounters>) -> DeliveryStatus {
        feedback.log.delivery("n-1", "email").unwrap().status
    }

    #[tokio::test]
    async fn feedback_moves_a_sent_delivery_once_and_duplicates_change_nothing() {
        let feedback = feedback(DeliveryStatus::Sent);
        for _ in 0..2 {
            assert_eq!(feedback.record(&delivered()).await.unwrap(), Disposition::Done);
        }
        assert_eq!(status(&feedback), DeliveryStatus::Delivered);
        // A bounce after delivery (the receiving server accepted, then bounced): bounced, and
        // the address suppressed, every time the event comes.
        for _ in 0..2 {
            assert_eq!(feedback.record(&bounce()).await.unwrap(), Disposition::Done);
        }
        assert_eq!(status(&feedback), DeliveryStatus::Bounced);
        let events: Vec<Event> = feedback.log.applied.lock().unwrap().iter().map(|change| change.event).collect();
        assert_eq!(events, [Event::Delivered, Event::Bounced]);
        let suppressed = feedback.suppressions.added.lock().unwrap();
        assert!(suppressed.iter().all(|suppression| suppression.address == "ada@example.com") && suppressed.len() == 2);
    }

    #[tokio::test]
    async fn feedback_that_overtakes_the_sent_write_comes_back_later() {
        let feedback = feedback(DeliveryStatus::Sending);
        assert_eq!(feedback.record(&delivered()).await.unwrap(), Disposition::Retry);
        assert_eq!(status(&feedback), DeliveryStatus::Sending);
        // A bounce still suppresses at once: the address must not be mailed again.
        assert_eq!(feedback.record(&bounce()).await.unwrap(), Disposition::Retry);
        assert_eq!(feedback.suppressions.added.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_soft_bounce_is_on_the_timeline_only() {
        let feedback = feedback(DeliveryStatus::Sent);
        let soft = ses(
            "Bounce",
            r#""bounce": {"bounceType": "Transient", "bounceSubType": "MailboxFull", "bouncedRecipients": [{"emailAddress": "ada@example.com"}]}"#,
        );
        assert_eq!(feedback.record(&soft).await.unwrap(), Disposition::Done);
        assert_eq!(status(&feedback), DeliveryStatus::Sent);
        assert!(feedback.suppressions.added.lock().unwrap().is_empty());
    }
}
