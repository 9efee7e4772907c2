//! The dispatch loop shared by every channel. For each record of a batch:
//! 1. claim the delivery (`queued → sending` with a lease, one conditional write); a delivery
//!    already sent, failed or skipped is acknowledged without calling the provider, one whose
//!    lease another attempt holds comes back when the lease ends;
//! 2. re-check the user at send time (deleted, opted out, device retired, address suppressed
//!    → `skipped`);
//! 3. count the notification against the user's limit for the channel over the last hour
//!    (once within the hour, however many attempts or devices), unless the template is
//!    transactional (over the limit → `skipped: rate_limited`);
//! 4. send through the channel's provider and record the outcome: `sent`; `failed` for a
//!    permanent error (deleted, never retried); back to `queued` for a transient one, with the
//!    message's visibility set to an exponential backoff so SQS brings it back later, or
//!    `parked` if this was the queue's last receive (SQS moves the message to the DLQ next).
//!
//! Duplicate sends: the provider call and the `sent` write are two steps. If the function dies
//! between them, or the write keeps failing for the seconds it is retried, the lease expires and
//! a later receive sends again. Only a crash in that window (one DynamoDB write after the
//! provider answered) or a DynamoDB outage outlasting the retries produces a duplicate.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};

use crate::batch::{self, Outcome, SqsRecord};
use crate::config::Settings;
use crate::domain::backoff::Backoff;
use crate::domain::delivery::DeliveryMessage;
use crate::domain::notification::{DeliveryFailure, DeliveryStatus, SkipReason};
use crate::domain::rate_limit::HourlyLimit;
use crate::domain::stats::skipped_counter;
use crate::error::DependencyError;
use crate::provider::Provider;
use crate::store::notifications::{AttemptOutcome, Claim, Lease, NotificationStore};
use crate::store::rate_limits::RateLimiter;
use crate::store::stats::{Counted, StatsRecorder, StatsStore};
use crate::store::users::UserStore;

/// The retries of a `sent` write: 0.2, 0.4, … 3.2 s apart (6.2 s in all, well inside the lease).
const SENT_RECORD_FIRST_RETRY: Duration = Duration::from_millis(200);
const SENT_RECORD_LAST_RETRY: Duration = Duration::from_millis(3200);

pub struct Dispatcher<P> {
    provider: P,
    notifications: NotificationStore,
    users: UserStore,
    limiter: RateLimiter,
    stats: StatsRecorder,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    backoff: Backoff,
    lease: Duration,
    concurrency: usize,
    /// The queue's maxReceiveCount, asked of SQS when a delivery first fails (so the template
    /// stays its one source), not at init.
    max_receive_count: tokio::sync::OnceCell<Option<u32>>,
}

impl<P: Provider> Dispatcher<P> {
    /// Settings: `QUEUE_URL` (the channel's queue), `NOTIFICATIONS_TABLE`, `USERS_TABLE`,
    /// `RATE_LIMITS_TABLE`, `STATS_TABLE`, `RATE_LIMIT_PER_HOUR` (default 10, at most 100),
    /// `RETRY_BASE_SECONDS` (15), `RETRY_MAX_SECONDS` (900), `LEASE_SECONDS` (60: longer than
    /// the function's timeout, so a live attempt is never taken over) and `BATCH_CONCURRENCY`
    /// (10).
    /// `dynamodb` is the function's one client (one connection pool per function).
    pub fn load(
        sdk: &SdkConfig,
        dynamodb: &aws_sdk_dynamodb::Client,
        provider: P,
        settings: &mut Settings<'_>,
    ) -> Self {
        let dynamodb = dynamodb.clone();
        let per_hour = settings.parsed_or("RATE_LIMIT_PER_HOUR", HourlyLimit::DEFAULT);
        Self {
            provider,
            notifications: NotificationStore::new(dynamodb.clone(), settings.required("NOTIFICATIONS_TABLE")),
            users: UserStore::new(dynamodb.clone(), settings.required("USERS_TABLE")),
            limiter: RateLimiter::new(dynamodb.clone(), settings.required("RATE_LIMITS_TABLE"), per_hour),
            stats: StatsRecorder::new(StatsStore::new(dynamodb, settings.required("STATS_TABLE"))),
            sqs: aws_sdk_sqs::Client::new(sdk),
            queue_url: settings.required("QUEUE_URL"),
            backoff: Backoff {
                base: Duration::from_secs(settings.parsed_or("RETRY_BASE_SECONDS", 15)),
                cap: Duration::from_secs(settings.parsed_or("RETRY_MAX_SECONDS", 900)),
            },
            lease: Duration::from_secs(settings.parsed_or("LEASE_SECONDS", 60)),
            concurrency: settings.parsed_or("BATCH_CONCURRENCY", 10usize),
            max_receive_count: tokio::sync::OnceCell::new(),
        }
    }

    pub async fn handle_batch(&self, event: SqsEvent) -> SqsBatchResponse {
        let response = batch::process(event, self.concurrency, |record| self.deliver(record)).await;
        self.stats.flush().await;
        crate::metrics::flush();
        response
    }

    async fn deliver(&self, record: SqsRecord<DeliveryMessage<P::Content>>) -> Outcome {
        let message = &record.body;
        let (id, delivery_id) = (&message.notification_id, &message.delivery_id);
        let now_ms = crate::time::now_epoch_millis();
        let lease = match self.notifications.claim(id, delivery_id, P::CHANNEL, now_ms, self.lease).await {
            Ok(Claim::Taken(lease)) => lease,
            Ok(Claim::Finished(status)) => {
                tracing::info!(notification_id = %id, delivery_id = %delivery_id, ?status, "already finished; acknowledged");
                return Outcome::Done;
            }
            Ok(Claim::Held { until_ms }) => {
                let wait = Duration::from_millis((until_ms - now_ms).max(0) as u64) + Duration::from_secs(1);
                return self.retry_after(&record, wait).await;
            }
            // The intake logs every delivery before enqueueing it, so this message was not
            // made by this stack (or outlived its record): poison, kept for on-call in the DLQ.
            Ok(Claim::Missing) => {
                tracing::error!(notification_id = %id, delivery_id = %delivery_id, "no such delivery in the log; left for the DLQ");
                return Outcome::Retry;
            }
            // Whether the claim was applied is unknown (its answer may be what was lost): the
            // lease, ours or another attempt's, is left to run out rather than released.
            Err(error) => {
                tracing::warn!(notification_id = %id, error = %error, "could not claim the delivery; will retry");
                return self.retry_after(&record, self.backoff_delay(record.receive_count)).await;
            }
        };
        match self.attempt(&record, lease).await {
            Ok(outcome) => outcome,
            // Our own state could not be read or written: retry the whole step later.
            Err(error) => {
                tracing::warn!(notification_id = %id, error = %error, "delivery state unavailable; will retry");
                // Release the lease this attempt holds, so the retry need not wait it out.
                let release = self.unfinished(failure(&error), record.receive_count).await;
                if let Err(error) = self.notifications.record(id, delivery_id, P::CHANNEL, lease, &release).await {
                    tracing::warn!(notification_id = %id, error = %error, "could not release the lease");
                }
                self.retry_after(&record, self.backoff_delay(record.receive_count)).await
            }
        }
    }

    /// The attempt of a delivery this dispatcher has claimed: re-check, send, record.
    async fn attempt(
        &self,
        record: &SqsRecord<DeliveryMessage<P::Content>>,
        lease: Lease,
    ) -> Result<Outcome, DependencyError> {
        let message = &record.body;
        let (id, delivery_id, channel) = (&message.notification_id, &message.delivery_id, P::CHANNEL);

        // Independent reads, made together: the user as it is now and the suppression list.
        let (user, suppressed) =
            futures::future::try_join(self.users.get(&message.user_id), self.provider.suppressed(message)).await?;
        let recipient = match user {
            None => return self.finish(message, lease, AttemptOutcome::Skipped(SkipReason::UserDeleted)).await,
            Some(profile) if !profile.preferences.allows(channel) => {
                return self.finish(message, lease, AttemptOutcome::Skipped(SkipReason::OptedOut)).await;
            }
            Some(profile) => profile,
        };
        if let Some(reason) = self.provider.unreachable(message, &recipient) {
            return self.finish(message, lease, AttemptOutcome::Skipped(reason)).await;
        }
        if suppressed {
            return self.finish(message, lease, AttemptOutcome::Skipped(SkipReason::Suppressed)).await;
        }
        if !message.transactional
            && !self.limiter.try_take(&message.user_id, channel, id, crate::time::now_epoch_seconds()).await?
        {
            return self.finish(message, lease, AttemptOutcome::Skipped(SkipReason::RateLimited)).await;
        }

        let started = std::time::Instant::now();
        let sent = self.provider.send(message, &recipient).await;
        crate::metrics::provider_latency(channel, started.elapsed());
        match sent {
            Ok(provider_message_id) => Ok(self.finish_sent(record, lease, provider_message_id).await),
            Err(error) if error.is_retried() => {
                tracing::warn!(notification_id = %id, delivery_id = %delivery_id, receive_count = record.receive_count, error = %error, "send failed; will retry");
                let unfinished = self.unfinished(failure(&error), record.receive_count).await;
                self.notifications.record(id, delivery_id, channel, lease, &unfinished).await?;
                let metric = match unfinished {
                    AttemptOutcome::Parked(_) => {
                        tracing::error!(notification_id = %id, delivery_id = %delivery_id, receive_count = record.receive_count, error = %error, "the queue's last receive failed; the message goes to the DLQ for on-call");
                        crate::metrics::Outcome::Parked
                    }
                    _ => crate::metrics::Outcome::Retried,
                };
                crate::metrics::delivery(channel, metric);
                let delay = self.backoff_delay(record.receive_count);
                Ok(self.retry_after(record, delay).await)
            }
            Err(error) => {
                tracing::error!(notification_id = %id, delivery_id = %delivery_id, error = %error, "send failed permanently");
                self.provider.on_permanent_failure(message, &error).await?;
                self.finish(message, lease, AttemptOutcome::Failed(failure(&error))).await
            }
        }
    }

    /// Records a send the provider accepted. From here, releasing the lease (the generic error
    /// path) would let the retry send the message again, so the write is retried past the SDK's
    /// own retries (whose quota an error burst drains) for a few seconds; if it still fails, the
    /// lease is kept and the message comes back when it ends. Only then can a later attempt send
    /// again: the one window for a duplicate, now a DynamoDB outage of that length.
    async fn finish_sent(
        &self,
        record: &SqsRecord<DeliveryMessage<P::Content>>,
        lease: Lease,
        provider_message_id: String,
    ) -> Outcome {
        let message = &record.body;
        let mut delay = SENT_RECORD_FIRST_RETRY;
        loop {
            let sent = AttemptOutcome::Sent { provider_message_id: provider_message_id.clone() };
            let error = match self.finish(message, lease, sent).await {
                Ok(outcome) => return outcome,
                Err(error) => error,
            };
            if delay > SENT_RECORD_LAST_RETRY {
                tracing::error!(notification_id = %message.notification_id, delivery_id = %message.delivery_id, %provider_message_id, error = %error, "sent, but the outcome could not be recorded; the lease is kept");
                let until_lease_ends =
                    Duration::from_millis((lease.until_ms() - crate::time::now_epoch_millis()).max(0) as u64);
                return self.retry_after(record, until_lease_ends + Duration::from_secs(1)).await;
            }
            tracing::warn!(notification_id = %message.notification_id, error = %error, "recording the send failed; trying again");
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }

    async fn finish(
        &self,
        message: &DeliveryMessage<P::Content>,
        lease: Lease,
        outcome: AttemptOutcome,
    ) -> Result<Outcome, DependencyError> {
        let (id, delivery_id) = (&message.notification_id, &message.delivery_id);
        if !self.notifications.record(id, delivery_id, P::CHANNEL, lease, &outcome).await? {
            // Another attempt recorded (and counted) the outcome.
            return Ok(Outcome::Done);
        }
        let (metric, counter) = match &outcome {
            AttemptOutcome::Sent { .. } => {
                (crate::metrics::Outcome::Sent, Some(DeliveryStatus::Sent.as_str().to_string()))
            }
            AttemptOutcome::Failed(_) => {
                (crate::metrics::Outcome::Failed, Some(DeliveryStatus::Failed.as_str().to_string()))
            }
            AttemptOutcome::Skipped(reason) => (crate::metrics::Outcome::Skipped, Some(skipped_counter(*reason))),
            // Not outcomes for the stats: the delivery comes back.
            AttemptOutcome::Retrying(_) => (crate::metrics::Outcome::Retried, None),
            AttemptOutcome::Parked(_) => (crate::metrics::Outcome::Parked, None),
        };
        if let Some(counter) = counter {
            let counted = Counted { app_key: &message.app_key, template: message.template.as_str() };
            self.stats.count(counted, P::CHANNEL, &counter);
        }
        crate::metrics::delivery(P::CHANNEL, metric);
        tracing::info!(
            notification_id = %message.notification_id,
            delivery_id = %message.delivery_id,
            channel = %P::CHANNEL,
            outcome = ?outcome,
            "delivery finished"
        );
        Ok(Outcome::Done)
    }

    /// How a transient failure on this receive leaves the delivery: `parked` on the queue's
    /// last receive, else `queued` to retry. If the queue's policy cannot be read, `queued`: the
    /// delivery then reads as retrying while parked, which the DLQ alarm still reports. A policy
    /// without a readable count is remembered as none; a failed read is tried again next time.
    async fn unfinished(&self, failure: DeliveryFailure, receive_count: u32) -> AttemptOutcome {
        let max = self
            .max_receive_count
            .get_or_try_init(|| crate::queue::max_receive_count(&self.sqs, &self.queue_url))
            .await;
        match max {
            Ok(Some(max)) if receive_count >= *max => AttemptOutcome::Parked(failure),
            Ok(_) => AttemptOutcome::Retrying(failure),
            Err(error) => {
                tracing::warn!(error = %error, "could not read the queue's redrive policy; recorded as retrying");
                if error.class == crate::error::FailureClass::Permanent {
                    let _ = self.max_receive_count.set(None);
                }
                AttemptOutcome::Retrying(failure)
            }
        }
    }

    fn backoff_delay(&self, receive_count: u32) -> Duration {
        self.backoff.delay(receive_count, &mut rand::rng())
    }

    /// Reports the record failed after making SQS hold it back for `delay`.
    async fn retry_after<C>(&self, record: &SqsRecord<C>, delay: Duration) -> Outcome {
        let result = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(&record.receipt_handle)
            .visibility_timeout(delay.as_secs().max(1) as i32)
            .send()
            .await;
        if let Err(error) = result {
            // The queue's own visibility timeout still brings it back.
            tracing::warn!(message_id = %record.message_id, error = %aws_sdk_sqs::error::DisplayErrorContext(error), "could not set the retry delay");
        }
        Outcome::Retry
    }
}

fn failure(error: &DependencyError) -> DeliveryFailure {
    DeliveryFailure { class: error.class, code: error.code.clone(), message: error.message.clone() }
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
