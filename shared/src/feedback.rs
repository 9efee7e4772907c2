//! The email provider's feedback (SES event publishing, via SNS, on the email events queue):
//! `delivered`, `bounced` and `complained` outcomes on the delivery, soft bounces on its
//! timeline, and hard-bounced or complaining addresses on the suppression
//! list, which intake and the email dispatcher honour. Every step is idempotent: SNS and SQS
//! deliver at least once.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};

use crate::batch::{self, Outcome, SqsRecord};
use crate::config::Settings;
use crate::domain::channel::Channel;
use crate::domain::email_event::{Feedback, SesEvent};
use crate::domain::notification::{DeliveryFailure, DeliveryStatus};
use crate::error::{DependencyError, FailureClass};
use crate::metrics;
use crate::store::notifications::{FeedbackRecorded, FeedbackTransition, NotificationStore};
use crate::store::stats::{Counted, StatsRecorder, StatsStore};
use crate::store::suppressions::{Suppression, SuppressionReason, SuppressionStore};

pub struct EmailFeedback {
    notifications: NotificationStore,
    suppressions: SuppressionStore,
    stats: StatsRecorder,
    concurrency: usize,
}

impl EmailFeedback {
    /// Settings: `NOTIFICATIONS_TABLE`, `SUPPRESSIONS_TABLE`, `STATS_TABLE`, `BATCH_CONCURRENCY` (10).
    /// The queue's subscription delivers raw SES records (template.yaml), so a message is one
    /// record: anything else is unreadable and ends in the DLQ like any poison.
    pub fn load(dynamodb: &aws_sdk_dynamodb::Client, settings: &mut Settings<'_>) -> Self {
        Self {
            notifications: NotificationStore::new(dynamodb.clone(), settings.required("NOTIFICATIONS_TABLE")),
            suppressions: SuppressionStore::new(dynamodb.clone(), settings.required("SUPPRESSIONS_TABLE")),
            stats: StatsRecorder::new(StatsStore::new(dynamodb.clone(), settings.required("STATS_TABLE"))),
            concurrency: settings.parsed_or("BATCH_CONCURRENCY", 10usize),
        }
    }

    pub async fn handle_batch(&self, event: SqsEvent) -> SqsBatchResponse {
        let response = batch::process(event, self.concurrency, |record: SqsRecord<SesEvent>| self.apply(record)).await;
        self.stats.flush().await;
        metrics::flush();
        response
    }

    async fn apply(&self, record: SqsRecord<SesEvent>) -> Outcome {
        let event = record.body;
        match self.record(&event).await {
            Ok(outcome) => outcome,
            Err(error) => {
                tracing::warn!(ses_message_id = %event.mail.message_id, error = %error, "feedback not recorded; will retry");
                Outcome::Retry
            }
        }
    }

    async fn record(&self, event: &SesEvent) -> Result<Outcome, DependencyError> {
        let Some((id, delivery_id)) = event.delivery() else {
            tracing::info!(ses_message_id = %event.mail.message_id, "feedback on an email that is not a delivery; ignored");
            return Ok(Outcome::Done);
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
            Some(DeliveryFailure { class: FailureClass::Permanent, code: code.into(), message: message.into() })
        };
        let after_send: &'static [DeliveryStatus] = &[DeliveryStatus::Sent, DeliveryStatus::Delivered];
        let (transition, metric) = match &feedback {
            Feedback::Delivered => (
                FeedbackTransition {
                    to: DeliveryStatus::Delivered,
                    from: &[DeliveryStatus::Sent],
                    event: "delivered",
                    error: None,
                },
                metrics::Outcome::Delivered,
            ),
            Feedback::Bounced { detail, .. } => (
                FeedbackTransition {
                    to: DeliveryStatus::Bounced,
                    from: after_send,
                    event: "bounced",
                    error: permanent("Bounce", detail),
                },
                metrics::Outcome::Bounced,
            ),
            Feedback::Complained { detail, .. } => (
                FeedbackTransition {
                    to: DeliveryStatus::Complained,
                    from: after_send,
                    event: "complained",
                    error: permanent("Complaint", detail),
                },
                metrics::Outcome::Complained,
            ),
            Feedback::Rejected { reason } => (
                FeedbackTransition {
                    to: DeliveryStatus::Failed,
                    from: &[DeliveryStatus::Sent],
                    event: "failed",
                    error: permanent("Rejected", reason),
                },
                metrics::Outcome::Failed,
            ),
            Feedback::SoftBounced { .. } => {
                self.notifications.append_event(id, "soft_bounced", Channel::Email).await?;
                return Ok(Outcome::Done);
            }
            Feedback::Ignored(kind) => {
                tracing::debug!(event_type = %kind, "feedback not acted on");
                return Ok(Outcome::Done);
            }
        };
        match self.notifications.record_feedback(id, delivery_id, Channel::Email, &transition).await? {
            FeedbackRecorded::Recorded => {
                metrics::delivery(Channel::Email, metric);
                let counted = Counted { app_key: event.app_key(), template: event.template() };
                self.stats.count(counted, Channel::Email, transition.to.as_str());
                tracing::info!(notification_id = %id, delivery_id = %delivery_id, status = transition.to.as_str(), "feedback recorded");
                Ok(Outcome::Done)
            }
            // The event overtook the `sent` write; SQS brings it back after the visibility timeout.
            FeedbackRecorded::NotYetSent => Ok(Outcome::Retry),
            FeedbackRecorded::Unchanged(status) => {
                tracing::info!(notification_id = %id, delivery_id = %delivery_id, status = status.as_str(), "feedback changes nothing");
                Ok(Outcome::Done)
            }
            FeedbackRecorded::Missing => {
                tracing::info!(notification_id = %id, delivery_id = %delivery_id, "feedback on a delivery no longer logged");
                Ok(Outcome::Done)
            }
        }
    }
}
