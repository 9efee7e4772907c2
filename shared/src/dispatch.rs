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

use crate::batch::{self, Disposition, SqsRecord};
use crate::config::Settings;
use crate::domain::backoff::Backoff;
use crate::domain::delivery::DeliveryMessage;
use crate::domain::notification::{DeliveryFailure, DeliveryStatus, SkipReason};
use crate::domain::rate_limit::HourlyLimit;
use crate::domain::stats::skipped_counter;
use crate::error::DependencyError;
use crate::metrics::DeliveryMetric;
use crate::ports::{Allowance, AttemptOutcome, Claim, Counters, DeliveryLog, Lease, Recipients, Redelivery};
use crate::provider::Provider;
use crate::queue::QueueRedelivery;
use crate::store::notifications::NotificationStore;
use crate::store::rate_limits::RateLimiter;
use crate::store::stats::{Counted, StatsRecorder, StatsStore};
use crate::store::users::UserStore;

/// How a dispatcher behaves (its settings).
#[derive(Clone, Copy, Debug)]
pub struct DispatchSettings {
    pub backoff: Backoff,
    /// How long a claim holds a delivery: longer than the function's timeout, so a live
    /// attempt is never taken over.
    pub lease: Duration,
    /// Records of a batch in flight at once.
    pub concurrency: usize,
    /// The first and the last wait between tries of a `sent` write, doubling: 0.2, 0.4, … 3.2 s
    /// apart (6.2 s in all, well inside the lease).
    pub sent_record_retries: (Duration, Duration),
}

/// The dispatch loop for provider `P`, over its ports: the delivery log `L`, redelivery `R`,
/// the users `U`, the rate limit `A` and the stats counters `C` (DynamoDB and SQS in AWS, the
/// defaults; in memory in the fast tests).
pub struct Dispatcher<P, L = NotificationStore, R = QueueRedelivery, U = UserStore, A = RateLimiter, C = StatsStore> {
    provider: P,
    log: L,
    redelivery: R,
    users: U,
    allowance: A,
    stats: StatsRecorder<C>,
    settings: DispatchSettings,
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
        let dispatch = DispatchSettings {
            backoff: Backoff {
                base: Duration::from_secs(settings.parsed_or("RETRY_BASE_SECONDS", 15)),
                cap: Duration::from_secs(settings.parsed_or("RETRY_MAX_SECONDS", 900)),
            },
            lease: Duration::from_secs(settings.parsed_or("LEASE_SECONDS", 60)),
            concurrency: settings.parsed_or("BATCH_CONCURRENCY", 10usize),
            sent_record_retries: (Duration::from_millis(200), Duration::from_millis(3200)),
        };
        Self::new(
            provider,
            NotificationStore::new(dynamodb.clone(), settings.required("NOTIFICATIONS_TABLE")),
            QueueRedelivery::new(aws_sdk_sqs::Client::new(sdk), settings.required("QUEUE_URL")),
            UserStore::new(dynamodb.clone(), settings.required("USERS_TABLE")),
            RateLimiter::new(dynamodb.clone(), settings.required("RATE_LIMITS_TABLE"), per_hour),
            StatsStore::new(dynamodb, settings.required("STATS_TABLE")),
            dispatch,
        )
    }
}

impl<P, L, R, U, A, C> Dispatcher<P, L, R, U, A, C>
where
    P: Provider,
    L: DeliveryLog,
    R: Redelivery,
    U: Recipients,
    A: Allowance,
    C: Counters,
{
    pub fn new(
        provider: P,
        log: L,
        redelivery: R,
        users: U,
        allowance: A,
        counters: C,
        settings: DispatchSettings,
    ) -> Self {
        Self { provider, log, redelivery, users, allowance, stats: StatsRecorder::new(counters), settings }
    }

    pub async fn handle_batch(&self, event: SqsEvent) -> SqsBatchResponse {
        let response = batch::process(event, self.settings.concurrency, |record| self.deliver(record)).await;
        self.stats.flush().await;
        crate::metrics::flush();
        response
    }

    async fn deliver(&self, record: SqsRecord<DeliveryMessage<P::Content>>) -> Disposition {
        let message = &record.body;
        let (id, delivery_id) = (&message.notification_id, &message.delivery_id);
        let now_ms = crate::time::now_epoch_millis();
        let lease = match self.log.claim(id, delivery_id, P::CHANNEL, now_ms, self.settings.lease).await {
            Ok(Claim::Taken(lease)) => lease,
            Ok(Claim::Finished(status)) => {
                tracing::info!(notification_id = %id, delivery_id = %delivery_id, ?status, "already finished; acknowledged");
                return Disposition::Done;
            }
            Ok(Claim::Held { until_ms }) => {
                let wait = Duration::from_millis((until_ms - now_ms).max(0) as u64) + Duration::from_secs(1);
                return self.retry_after(&record, wait).await;
            }
            // The intake logs every delivery before enqueueing it, so this message was not
            // made by this stack (or outlived its record): poison, kept for on-call in the DLQ.
            Ok(Claim::Missing) => {
                tracing::error!(notification_id = %id, delivery_id = %delivery_id, "no such delivery in the log; left for the DLQ");
                return Disposition::Retry;
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
                if let Err(error) = self.log.record(id, delivery_id, P::CHANNEL, lease, &release).await {
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
    ) -> Result<Disposition, DependencyError> {
        let message = &record.body;
        let (id, delivery_id, channel) = (&message.notification_id, &message.delivery_id, P::CHANNEL);

        // Independent reads, made together: the user as it is now and the suppression list.
        let (user, suppressed) =
            futures::future::try_join(self.users.profile(&message.user_id), self.provider.suppressed(message)).await?;
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
            && !self.allowance.try_take(&message.user_id, channel, id, crate::time::now_epoch_seconds()).await?
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
                self.log.record(id, delivery_id, channel, lease, &unfinished).await?;
                let metric = match unfinished {
                    AttemptOutcome::Parked(_) => {
                        tracing::error!(notification_id = %id, delivery_id = %delivery_id, receive_count = record.receive_count, error = %error, "the queue's last receive failed; the message goes to the DLQ for on-call");
                        DeliveryMetric::Parked
                    }
                    _ => DeliveryMetric::Retried,
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
    ) -> Disposition {
        let message = &record.body;
        let (mut delay, last) = self.settings.sent_record_retries;
        loop {
            let sent = AttemptOutcome::Sent { provider_message_id: provider_message_id.clone() };
            let error = match self.finish(message, lease, sent).await {
                Ok(outcome) => return outcome,
                Err(error) => error,
            };
            if delay > last {
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
    ) -> Result<Disposition, DependencyError> {
        let (id, delivery_id) = (&message.notification_id, &message.delivery_id);
        if !self.log.record(id, delivery_id, P::CHANNEL, lease, &outcome).await? {
            // Another attempt recorded (and counted) the outcome.
            return Ok(Disposition::Done);
        }
        let (metric, counter) = match &outcome {
            AttemptOutcome::Sent { .. } => (DeliveryMetric::Sent, Some(DeliveryStatus::Sent.as_str().to_string())),
            AttemptOutcome::Failed(_) => (DeliveryMetric::Failed, Some(DeliveryStatus::Failed.as_str().to_string())),
            AttemptOutcome::Skipped(reason) => (DeliveryMetric::Skipped, Some(skipped_counter(*reason))),
            // Not outcomes for the stats: the delivery comes back.
            AttemptOutcome::Retrying(_) => (DeliveryMetric::Retried, None),
            AttemptOutcome::Parked(_) => (DeliveryMetric::Parked, None),
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
        Ok(Disposition::Done)
    }

    /// How a transient failure on this receive leaves the delivery: `parked` on the queue's
    /// last receive, else `queued` to retry. If the queue's policy cannot be read, `queued`: the
    /// delivery then reads as retrying while parked, which the DLQ alarm still reports.
    async fn unfinished(&self, failure: DeliveryFailure, receive_count: u32) -> AttemptOutcome {
        match self.redelivery.max_receive_count().await {
            Ok(Some(max)) if receive_count >= max => AttemptOutcome::Parked(failure),
            Ok(_) => AttemptOutcome::Retrying(failure),
            Err(error) => {
                tracing::warn!(error = %error, "could not read the queue's redrive policy; recorded as retrying");
                AttemptOutcome::Retrying(failure)
            }
        }
    }

    fn backoff_delay(&self, receive_count: u32) -> Duration {
        self.settings.backoff.delay(receive_count, &mut rand::rng())
    }

    /// Reports the record failed after making the queue hold it back for `delay`.
    async fn retry_after<T>(&self, record: &SqsRecord<T>, delay: Duration) -> Disposition {
        if let Err(error) = self.redelivery.retry_after(&record.receipt_handle, delay).await {
            // The queue's own visibility timeout still brings it back.
            tracing::warn!(message_id = %record.message_id, error = %error, "could not set the retry delay");
        }
        Disposition::Retry
    }
}

fn failure(error: &DependencyError) -> DeliveryFailure {
    DeliveryFailure { class: error.class, code: error.code.clone(), message: error.message.clone() }
}

impl<P, L, R, U, A, C> crate::function::Function for Dispatcher<P, L, R, U, A, C>
where
    P: Provider,
    L: DeliveryLog,
    R: Redelivery,
    U: Recipients,
    A: Allowance,
    C: Counters,
{
    type Event = SqsEvent;
    type Output = SqsBatchResponse;

    async fn handle(
        &self,
        event: lambda_runtime::LambdaEvent<SqsEvent>,
    ) -> Result<SqsBatchResponse, lambda_runtime::Error> {
        Ok(self.handle_batch(event.payload).await)
    }
}

#[cfg(test)]
mod tests;
