//! The dispatch loop shared by every channel. For each record of a batch:
//! 1. claim the delivery (`queued → sending` with a lease, one conditional write); a delivery
//!    already sent, failed or skipped is acknowledged without calling the provider, one whose
//!    lease another attempt holds comes back when the lease ends, and one whose earlier attempts
//!    spent the retry budget by dying (crashes, timeouts) goes to the DLQ without another try;
//! 2. re-check the user at send time (deleted, opted out, device retired, address suppressed
//!    → `skipped`), the batch's users read together once the first record gets here;
//! 3. count the notification against the user's limit for the channel over the last hour
//!    (once within the hour, however many attempts or devices), unless the template is
//!    transactional (over the limit → `skipped: rate_limited`);
//! 4. wait for the channel's send rate (`pacing`): take a send slot and sleep until it. A slot
//!    later than this invocation can wait for sends the message back through the queue to come
//!    back near its slot, recorded as `waiting`: not a failure;
//! 5. send through the channel's provider and record the outcome: `sent`; `failed` for a
//!    permanent error (deleted, never retried); throttled by the provider, another slot and a
//!    short pause, then the send again (through the queue, as `waiting`, if this invocation
//!    cannot wait that long): never a failure; for a transient error, back to `queued` with the
//!    message's visibility set to an exponential backoff so SQS brings it back later, or, when
//!    that failure spends the retry budget, `parked` with the message moved to the DLQ.
//!
//! The retry budget counts failed attempts in the delivery's record (`attempts` less `waits`),
//! not SQS receives: a backlog waiting at the quota, however long, spends none of it. The
//! queue's own maxReceiveCount is a backstop for messages no invocation could even finish.
//!
//! Duplicate sends: the provider call and the `sent` write are two steps. If the function dies
//! between them, or the write keeps failing for the seconds it is retried, the lease expires and
//! a later receive sends again. Only a crash in that window (one DynamoDB write after the
//! provider answered) or a DynamoDB outage outlasting the retries produces a duplicate.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use aws_config::SdkConfig;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};

use crate::batch::{self, Disposition, SqsRecord, Unreadable};
use crate::config::Settings;
use crate::domain::backoff::Backoff;
use crate::domain::delivery::DeliveryMessage;
use crate::domain::failover::{self, ProviderTrail};
use crate::domain::lifecycle::Event;
use crate::domain::notification::{DeliveryFailure, DeliveryStatus, SkipReason};
use crate::domain::quiet_hours::QuietHoursPolicy;
use crate::domain::rate_limit::HourlyLimit;
use crate::domain::send_rate::{Lane, SendRate, until};
use crate::domain::stats::{sent_via_counter, skipped_counter};
use crate::domain::user::{UserId, UserProfile};
use crate::error::{DependencyError, FailureClass};
use crate::metrics::DeliveryMetric;
use crate::pacing::{BatchDemand, Need, Pacer};
use crate::ports::{
    Allowance, AttemptOutcome, Claim, Claiming, Counters, DeliveryLog, Lease, Recipients, Redelivery, SendTimeline,
};
use crate::provider::Provider;
use crate::queue::QueueRedelivery;
use crate::store::notifications::NotificationStore;
use crate::store::rate_limits::RateLimiter;
use crate::store::send_timeline::SendTimelineStore;
use crate::store::stats::{Counted, StatsRecorder, StatsStore};
use crate::store::users::UserStore;

/// How a dispatcher behaves (its settings).
#[derive(Clone, Debug)]
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
    /// Failed attempts after which a delivery is parked in the DLQ.
    pub retry_budget: u32,
    /// The time a send and its record need before the invocation's deadline: a send slot later
    /// than the deadline less this waits through the queue.
    pub send_margin: Duration,
    /// The pause before a send the provider throttled is tried again, doubling per throttle of
    /// the same attempt (with jitter): 1 s, up to 8 (a provider's quota refills within a second);
    /// for a transactional send the first is two slot gaps at the channel's rate, if shorter.
    pub throttle_backoff: Backoff,
    /// Quiet hours for users who set none (and their zone).
    pub quiet_hours: QuietHoursPolicy,
}

/// The dispatch loop for provider `P`, over its ports: the delivery log `L`, redelivery `R`,
/// the users `U`, the rate limit `A`, the stats counters `C` and the channel's send timeline
/// `T` (DynamoDB and SQS in AWS, the defaults; in memory in the fast tests).
pub struct Dispatcher<
    P,
    L = NotificationStore,
    R = QueueRedelivery,
    U = UserStore,
    A = RateLimiter,
    C = StatsStore,
    T = SendTimelineStore,
> {
    provider: P,
    log: L,
    redelivery: R,
    users: U,
    allowance: A,
    stats: StatsRecorder<C>,
    pacer: Pacer<T>,
    settings: DispatchSettings,
}

/// What every record of one batch shares.
struct Batch {
    demand: BatchDemand,
    /// The latest send slot (epoch µs) this invocation can still use.
    latest_slot_us: i64,
    /// The users the batch's records name, and their profiles once the first record to need
    /// one has read them all in one request (or that read's failure, each record's).
    users: Vec<UserId>,
    profiles: tokio::sync::OnceCell<Result<HashMap<UserId, UserProfile>, DependencyError>>,
}

/// The part of a delivery message that names its user, read from every record of a batch
/// before any is handled.
#[derive(serde::Deserialize)]
struct Addressed {
    user_id: UserId,
}

impl<P: Provider> Dispatcher<P> {
    /// Settings: `QUEUE_URL` and `TRANSACTIONAL_QUEUE_URL` (the channel's two lanes),
    /// `DEAD_LETTER_QUEUE_URL`, `NOTIFICATIONS_TABLE`, `USERS_TABLE`, `RATE_LIMITS_TABLE` (which
    /// also holds the channel's send timeline), `STATS_TABLE`, `SEND_RATE` (sends per second,
    /// fleet-wide; capped at the provider's own quota where it says it: `provider_rate`),
    /// `RATE_LIMIT_PER_HOUR` (default 10, at most 100), `RETRY_BUDGET` (8 failed attempts),
    /// `RETRY_BASE_SECONDS` (15), `RETRY_MAX_SECONDS` (900), `LEASE_SECONDS` (60: longer than
    /// the function's timeout, so a live attempt is never taken over) and `BATCH_CONCURRENCY`
    /// (10). `dynamodb` is the function's one client (one connection pool per function).
    pub fn load(
        sdk: &SdkConfig,
        dynamodb: &aws_sdk_dynamodb::Client,
        provider: P,
        provider_rate: Option<SendRate>,
        settings: &mut Settings<'_>,
    ) -> Self {
        let dynamodb = dynamodb.clone();
        let per_hour = settings.parsed_or("RATE_LIMIT_PER_HOUR", HourlyLimit::DEFAULT);
        // Only a placeholder when SEND_RATE is missing or invalid: then `finish` fails the init.
        let configured = settings.parsed_required("SEND_RATE").unwrap_or(SendRate::ONE_PER_SECOND);
        let rate = match provider_rate.map(|provider| configured.capped_at(provider)) {
            Some((rate, true)) => {
                tracing::info!(channel = %P::CHANNEL, configured = %configured, provider = %rate, "SEND_RATE is above the provider's quota: sending at the provider's");
                rate
            }
            _ => configured,
        };
        let dispatch = DispatchSettings {
            backoff: Backoff {
                base: Duration::from_secs(settings.parsed_or("RETRY_BASE_SECONDS", 15)),
                cap: Duration::from_secs(settings.parsed_or("RETRY_MAX_SECONDS", 900)),
            },
            lease: Duration::from_secs(settings.parsed_or("LEASE_SECONDS", 60)),
            concurrency: settings.parsed_or("BATCH_CONCURRENCY", 10usize),
            sent_record_retries: (Duration::from_millis(200), Duration::from_millis(3200)),
            retry_budget: settings.parsed_or("RETRY_BUDGET", 8u32).max(1),
            send_margin: Duration::from_secs(5),
            throttle_backoff: Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(8) },
            quiet_hours: QuietHoursPolicy::load(settings),
        };
        let rate_limits = settings.required("RATE_LIMITS_TABLE");
        let sqs = aws_sdk_sqs::Client::new(sdk);
        Self::new(
            provider,
            NotificationStore::new(dynamodb.clone(), settings.required("NOTIFICATIONS_TABLE")),
            QueueRedelivery::load(sqs, aws_sdk_scheduler::Client::new(sdk), settings),
            UserStore::new(dynamodb.clone(), settings.required("USERS_TABLE")),
            RateLimiter::new(dynamodb.clone(), rate_limits.clone(), per_hour),
            StatsStore::new(dynamodb.clone(), settings.required("STATS_TABLE")),
            Pacer::new(SendTimelineStore::new(dynamodb, rate_limits, P::CHANNEL), rate),
            dispatch,
        )
    }
}

impl<P, L, R, U, A, C, T> Dispatcher<P, L, R, U, A, C, T>
where
    P: Provider,
    L: DeliveryLog,
    R: Redelivery,
    U: Recipients,
    A: Allowance,
    C: Counters,
    T: SendTimeline,
{
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        provider: P,
        log: L,
        redelivery: R,
        users: U,
        allowance: A,
        counters: C,
        pacer: Pacer<T>,
        settings: DispatchSettings,
    ) -> Self {
        Self { provider, log, redelivery, users, allowance, stats: StatsRecorder::new(counters), pacer, settings }
    }

    pub fn provider(&self) -> &P {
        &self.provider
    }

    /// Handles a batch in an invocation that must end by `deadline_ms` (epoch ms).
    pub async fn handle_batch(&self, event: SqsEvent, deadline_ms: i64) -> SqsBatchResponse {
        let users: HashSet<UserId> = event
            .records
            .iter()
            .filter_map(|record| serde_json::from_str::<Addressed>(record.body.as_deref()?).ok())
            .map(|addressed| addressed.user_id)
            .collect();
        let batch = Batch {
            demand: BatchDemand::new(event.records.len(), batch::oldest_enqueued_ms(&event)),
            latest_slot_us: deadline_ms * 1000 - self.settings.send_margin.as_micros() as i64,
            users: users.into_iter().collect(),
            profiles: tokio::sync::OnceCell::new(),
        };
        let response = batch::process(
            event,
            self.settings.concurrency,
            |record| self.deliver(record, &batch),
            |unreadable| self.unreadable(unreadable, &batch),
        )
        .await;
        self.stats.flush().await;
        crate::metrics::flush();
        response
    }

    async fn deliver(&self, record: SqsRecord<DeliveryMessage<P::Content>>, batch: &Batch) -> Disposition {
        let message = &record.body;
        let (id, delivery_id) = (&message.notification_id, &message.delivery_id);
        let now_ms = crate::time::now_epoch_millis();
        // Not yet due (a delay stops at 15 minutes): back to wait, the log untouched.
        if let Some(due_ms) = message.deliver_after.filter(|due_ms| *due_ms > now_ms) {
            batch.demand.settle();
            return self.defer(&record, &record.raw_body, due_ms).await;
        }
        let mut need = batch.demand.need(Lane::of(message.transactional));
        // A message with a time is a scheduled (or held) delivery's: its release comes first.
        let first = if message.deliver_after.is_some() { Event::Release } else { Event::Claim };
        let route = self.provider.route(message).await;
        let claiming = Claiming { first, provider: route[0], now_ms, lease: self.settings.lease };
        let (lease, failures, waits, routing) = match self.log.claim_first(id, delivery_id, P::CHANNEL, claiming).await
        {
            Ok(Claim::Taken { lease, failures, waits, trail, took_over }) => {
                (lease, failures, waits, Routing { route, trail, took_over })
            }
            Ok(Claim::NotDue { until_ms }) => {
                tracing::info!(notification_id = %id, delivery_id = %delivery_id, until_ms, "held until later by a newer copy of this message; acknowledged");
                return Disposition::Done;
            }
            Ok(Claim::Finished(status)) => {
                tracing::info!(notification_id = %id, delivery_id = %delivery_id, ?status, "already finished; acknowledged");
                return Disposition::Done;
            }
            Ok(Claim::Held { until_ms }) => {
                let wait = Duration::from_millis((until_ms - now_ms).max(0) as u64) + Duration::from_secs(1);
                return self.retry_after(&record, wait).await;
            }
            // The intake logs every delivery before enqueueing it, so this message was not
            // made by this stack (or outlived its record): poison, kept for on-call.
            Ok(Claim::Missing) => {
                tracing::error!(notification_id = %id, delivery_id = %delivery_id, "no such delivery in the log; moved to the DLQ");
                return self.dead_letter(&record.raw_body).await;
            }
            // Whether the claim was applied is unknown (its answer may be what was lost): the
            // lease, ours or another attempt's, is left to run out rather than released.
            Err(error) => {
                tracing::warn!(notification_id = %id, error = %error, "could not claim the delivery; will retry");
                return self.retry_after(&record, self.backoff_delay(record.receive_count)).await;
            }
        };
        let attempted = if failures >= self.settings.retry_budget {
            // Earlier attempts died (crashes, timeouts) until the budget was spent.
            let failure = DeliveryFailure {
                class: FailureClass::Transient,
                code: "RetryBudgetSpent".into(),
                message: format!("{failures} attempts failed or ended without an outcome"),
                provider: None,
            };
            self.park(&record, lease, failure).await
        } else {
            self.attempt(&record, lease, (failures, waits), routing, &mut need, batch).await
        };
        match attempted {
            Ok(outcome) => outcome,
            // Our own state could not be read or written: retry the whole step later.
            Err(error) => {
                tracing::warn!(notification_id = %id, error = %error, "delivery state unavailable; will retry");
                // Release the lease this attempt holds, so the retry need not wait it out.
                let release = AttemptOutcome::Retrying(failure(&error));
                if let Err(error) = self.log.record(id, delivery_id, P::CHANNEL, lease, &release).await {
                    tracing::warn!(notification_id = %id, error = %error, "could not release the lease");
                }
                self.retry_after(&record, self.backoff_delay(failures + 1)).await
            }
        }
    }

    /// The attempt of a delivery this dispatcher has claimed: re-check, wait for the send rate,
    /// send, record. `history`: the retry budget spent and the waits before this attempt;
    /// `routing`: the providers it may send through.
    async fn attempt(
        &self,
        record: &SqsRecord<DeliveryMessage<P::Content>>,
        lease: Lease,
        history: (u32, u32),
        routing: Routing,
        need: &mut Need<'_>,
        batch: &Batch,
    ) -> Result<Disposition, DependencyError> {
        let message = &record.body;
        let (id, delivery_id, channel) = (&message.notification_id, &message.delivery_id, P::CHANNEL);
        let (failures, waits) = history;

        // Independent reads, made together: the user as it is now and the suppression list.
        let (user, suppressed) =
            futures::future::try_join(self.profile(&message.user_id, batch), self.provider.suppressed(message)).await?;
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
        if message.quiet_hours
            && !message.transactional
            && let Some(until_ms) = self.settings.quiet_hours.hold_until(&recipient, crate::time::now_epoch_millis())
        {
            return self.hold(record, lease, until_ms).await;
        }
        if !message.transactional
            && !self.allowance.try_take(&message.user_id, channel, id, crate::time::now_epoch_seconds()).await?
        {
            return self.finish(message, lease, AttemptOutcome::Skipped(SkipReason::RateLimited)).await;
        }

        // The provider, named on the delivery before it is called (the claim named the route's
        // first): failing over, or pinned to the one that may have sent it already.
        let choice = failover::choose(&routing.route, &routing.trail, routing.took_over);
        let named = routing.trail.provider.as_deref() == Some(choice.provider.as_str());
        if (!named || choice.pinned != routing.trail.pinned)
            && !self.log.reroute(id, delivery_id, channel, lease, &choice.provider, choice.pinned).await?
        {
            return Ok(Disposition::Done);
        }
        let mut provider = choice.provider;
        let mut declined: Vec<String> = Vec::new();

        let lane = need.lane();
        let mut slot = self.pacer.slot(need, crate::time::now_epoch_micros).await?;
        let mut throttles = 0;
        loop {
            if slot > batch.latest_slot_us {
                self.pacer.give_back(lane, slot).await;
                let wait = until(slot, crate::time::now_epoch_micros());
                return self.wait(record, lease, None, wait).await;
            }
            tokio::time::sleep(until(slot, crate::time::now_epoch_micros())).await;
            let started = std::time::Instant::now();
            let sent = self.provider.send(message, &recipient, &provider).await;
            crate::metrics::provider_latency(channel, started.elapsed());
            let outcome = sent.as_ref().map(|_| ()).map_err(|error| error.class);
            crate::metrics::provider_call(channel, &provider, outcome.is_err_and(FailureClass::is_providers_fault));
            self.provider.observe(&provider, outcome).await;
            let error = match sent {
                Ok(provider_message_id) => {
                    return Ok(self.finish_sent(record, lease, &provider, provider_message_id).await);
                }
                Err(error) => error,
            };
            let failure = provider_failure(&error, &provider);
            match error.class {
                FailureClass::Throttled => {
                    throttles += 1;
                    crate::metrics::delivery(channel, DeliveryMetric::Throttled);
                    tracing::warn!(notification_id = %id, delivery_id = %delivery_id, error = %error, "throttled by the provider; sending again in a later slot");
                    let now_us = crate::time::now_epoch_micros();
                    let pause = self.throttle_pause(lane, throttles).as_micros() as i64;
                    let next = self
                        .pacer
                        .slot(&mut BatchDemand::new(1, None).need(lane), crate::time::now_epoch_micros)
                        .await?;
                    if now_us + pause > batch.latest_slot_us {
                        self.pacer.give_back(lane, next).await;
                        let wait = self.settings.backoff.delay(waits + 1, &mut rand::rng());
                        return self.wait(record, lease, Some(failure), wait).await;
                    }
                    slot = next.max(now_us + pause);
                }
                // Not this provider's destination: the next of the route, at once.
                FailureClass::Unserved => {
                    declined.push(std::mem::take(&mut provider));
                    let Some(next) = failover::after_refusal(&routing.route, &declined) else {
                        tracing::error!(notification_id = %id, delivery_id = %delivery_id, declined = ?declined, error = %error, "no provider of the route serves this destination");
                        let unserved = DeliveryFailure {
                            class: FailureClass::Permanent,
                            message: format!(
                                "no provider of the route serves this destination ({})",
                                declined.join(", ")
                            ),
                            ..failure
                        };
                        return self.finish(message, lease, AttemptOutcome::Failed(unserved)).await;
                    };
                    tracing::warn!(notification_id = %id, delivery_id = %delivery_id, error = %error, next, "the provider does not serve this destination; trying the next of the route");
                    if !self.log.reroute(id, delivery_id, channel, lease, next, false).await? {
                        return Ok(Disposition::Done);
                    }
                    provider = next.to_string();
                }
                FailureClass::Permanent => {
                    tracing::error!(notification_id = %id, delivery_id = %delivery_id, error = %error, "send failed permanently");
                    self.provider.on_permanent_failure(message, &error).await?;
                    return self.finish(message, lease, AttemptOutcome::Failed(failure)).await;
                }
                FailureClass::Transient | FailureClass::AccessDenied | FailureClass::Ambiguous => {
                    tracing::warn!(notification_id = %id, delivery_id = %delivery_id, failures = failures + 1, error = %error, "send failed; will retry");
                    return self.failed(record, lease, failures + 1, failure).await;
                }
            }
        }
    }

    /// `user_id`'s profile as it is now: from the batch's one read of all its users, made when
    /// the first record needs one (strongly consistent, as a read of one). A failure of that
    /// read is every record's, classified as any other (an access denial recorded and alarmed).
    async fn profile(&self, user_id: &UserId, batch: &Batch) -> Result<Option<UserProfile>, DependencyError> {
        // Every record's user is listed (read from the same bodies); were one not, it reads its
        // own rather than look deleted.
        if !batch.users.contains(user_id) {
            return self.users.profile(user_id).await;
        }
        let read = batch.profiles.get_or_init(|| self.users.profiles(&batch.users)).await;
        read.as_ref().map(|found| found.get(user_id).cloned()).map_err(Clone::clone)
    }

    /// The pause after the `throttles`-th throttle of an attempt in `lane`. A transactional send
    /// took its slot ahead of bulk slots already held, so it is tried again as soon as the quota
    /// can have refilled (two slot gaps); a bulk one goes to the end of the timeline anyway.
    fn throttle_pause(&self, lane: Lane, throttles: u32) -> Duration {
        let settings = self.settings.throttle_backoff;
        let backoff = match lane {
            Lane::Transactional => {
                let two_gaps = Duration::from_micros(2 * self.pacer.rate().gap_us().unsigned_abs());
                Backoff { base: two_gaps.min(settings.base), cap: settings.cap }
            }
            Lane::Bulk => settings,
        };
        backoff.delay(throttles, &mut rand::rng())
    }

    /// A transient failure, the delivery's `failures`-th: back to `queued` after the backoff,
    /// or, if it spends the retry budget, to the DLQ.
    async fn failed(
        &self,
        record: &SqsRecord<DeliveryMessage<P::Content>>,
        lease: Lease,
        failures: u32,
        failure: DeliveryFailure,
    ) -> Result<Disposition, DependencyError> {
        if failures >= self.settings.retry_budget {
            return self.park(record, lease, failure).await;
        }
        let message = &record.body;
        self.log
            .record(
                &message.notification_id,
                &message.delivery_id,
                P::CHANNEL,
                lease,
                &AttemptOutcome::Retrying(failure),
            )
            .await?;
        crate::metrics::delivery(P::CHANNEL, DeliveryMetric::Retried);
        Ok(self.retry_after(record, self.backoff_delay(failures)).await)
    }

    /// Parks a delivery whose failures spent the retry budget: its message to the DLQ (first:
    /// a crash in between leaves it in both queues, which the delivery state absorbs, never in
    /// neither), then `parked`; the message is then deleted from the channel's queue.
    async fn park(
        &self,
        record: &SqsRecord<DeliveryMessage<P::Content>>,
        lease: Lease,
        failure: DeliveryFailure,
    ) -> Result<Disposition, DependencyError> {
        let message = &record.body;
        self.redelivery.dead_letter(&record.raw_body).await?;
        tracing::error!(notification_id = %message.notification_id, delivery_id = %message.delivery_id, code = %failure.code, error = %failure.message, "the retry budget is spent; the message is in the DLQ for on-call");
        self.finish(message, lease, AttemptOutcome::Parked(failure)).await
    }

    /// The attempt waits for the channel's send rate through the queue: `waiting` (not a
    /// failure: `throttled` is the provider's answer, if it was one), back after `delay`.
    async fn wait(
        &self,
        record: &SqsRecord<DeliveryMessage<P::Content>>,
        lease: Lease,
        throttled: Option<DeliveryFailure>,
        delay: Duration,
    ) -> Result<Disposition, DependencyError> {
        let message = &record.body;
        let outcome = AttemptOutcome::Waiting(throttled);
        self.log.record(&message.notification_id, &message.delivery_id, P::CHANNEL, lease, &outcome).await?;
        crate::metrics::delivery(P::CHANNEL, DeliveryMetric::Waited);
        tracing::info!(notification_id = %message.notification_id, delivery_id = %message.delivery_id, delay_ms = delay.as_millis() as u64, "waiting for the channel's send rate through the queue");
        Ok(self.retry_after(record, delay).await)
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
        provider: &str,
        provider_message_id: String,
    ) -> Disposition {
        let message = &record.body;
        let (mut delay, last) = self.settings.sent_record_retries;
        loop {
            let sent = AttemptOutcome::Sent {
                provider: provider.to_string(),
                provider_message_id: provider_message_id.clone(),
            };
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
        let counted = Counted { app_key: &message.app_key, template: message.template.as_str() };
        let counter = match &outcome {
            AttemptOutcome::Sent { provider, .. } => {
                crate::metrics::sent(P::CHANNEL, Lane::of(message.transactional));
                self.stats.count(counted, P::CHANNEL, &sent_via_counter(provider));
                Some(DeliveryStatus::Sent.as_str().to_string())
            }
            AttemptOutcome::Failed(_) => {
                crate::metrics::delivery(P::CHANNEL, DeliveryMetric::Failed);
                Some(DeliveryStatus::Failed.as_str().to_string())
            }
            AttemptOutcome::Skipped(reason) => {
                crate::metrics::delivery(P::CHANNEL, DeliveryMetric::Skipped);
                Some(skipped_counter(*reason))
            }
            AttemptOutcome::Parked(_) => {
                crate::metrics::delivery(P::CHANNEL, DeliveryMetric::Parked);
                None
            }
            // Not outcomes: the delivery comes back (their callers count them).
            AttemptOutcome::Retrying(_) | AttemptOutcome::Waiting(_) | AttemptOutcome::Held { .. } => None,
        };
        if let Some(counter) = counter {
            self.stats.count(counted, P::CHANNEL, &counter);
        }
        tracing::info!(
            notification_id = %message.notification_id,
            delivery_id = %message.delivery_id,
            channel = %P::CHANNEL,
            outcome = ?outcome,
            "delivery finished"
        );
        Ok(Disposition::Done)
    }

    /// The recipient is in quiet hours until `until_ms`: a copy of the message that says so
    /// waits for then, and only once it does is the delivery recorded as held (so a held
    /// delivery always has a message coming).
    async fn hold(
        &self,
        record: &SqsRecord<DeliveryMessage<P::Content>>,
        lease: Lease,
        until_ms: i64,
    ) -> Result<Disposition, DependencyError> {
        let message = &record.body;
        let mut body: serde_json::Value = serde_json::from_str(&record.raw_body).map_err(|error| DependencyError {
            class: FailureClass::Permanent,
            service: "sqs",
            operation: "ReceiveMessage",
            code: "UnreadableMessage".into(),
            message: error.to_string(),
        })?;
        body["deliver_after"] = serde_json::json!(until_ms);
        self.redelivery.defer(&record.source, &body.to_string(), until_ms).await?;
        self.log
            .record(
                &message.notification_id,
                &message.delivery_id,
                P::CHANNEL,
                lease,
                &AttemptOutcome::Held { until_ms },
            )
            .await?;
        tracing::info!(notification_id = %message.notification_id, delivery_id = %message.delivery_id, until_ms, "held for the recipient's quiet hours");
        Ok(Disposition::Done)
    }

    /// A message that came before its time: a copy waits for it, and this one is acknowledged
    /// (if the copy cannot be made, this one comes back soon to try again).
    async fn defer<M>(&self, record: &SqsRecord<M>, body: &str, due_ms: i64) -> Disposition {
        match self.redelivery.defer(&record.source, body, due_ms).await {
            Ok(()) => Disposition::Done,
            Err(error) => {
                tracing::warn!(message_id = %record.message_id, error = %error, "could not defer the message; it comes back");
                self.retry_after(record, self.backoff_delay(1)).await
            }
        }
    }

    /// A message no dispatcher can read: straight to the DLQ, for on-call.
    async fn unreadable(&self, unreadable: Unreadable, batch: &Batch) -> Disposition {
        batch.demand.settle();
        tracing::error!(message_id = %unreadable.message_id, reason = %unreadable.reason, "unreadable message; moved to the DLQ");
        self.dead_letter(&unreadable.raw_body).await
    }

    /// Moves a message to the DLQ and acknowledges it here; if the DLQ refuses it, it comes back
    /// (and the queue's own redrive policy moves it there in the end).
    async fn dead_letter(&self, body: &str) -> Disposition {
        match self.redelivery.dead_letter(body).await {
            Ok(()) => Disposition::Done,
            Err(error) => {
                tracing::warn!(error = %error, "could not move the message to the DLQ; it comes back");
                Disposition::Retry
            }
        }
    }

    /// The wait after the `failures`-th failed attempt (or receive, when the attempt count is
    /// not known).
    fn backoff_delay(&self, failures: u32) -> Duration {
        self.settings.backoff.delay(failures, &mut rand::rng())
    }

    /// Reports the record failed after making the queue hold it back for `delay`.
    async fn retry_after<M>(&self, record: &SqsRecord<M>, delay: Duration) -> Disposition {
        if let Err(error) = self.redelivery.retry_after(&record.source, &record.receipt_handle, delay).await {
            // The queue's own visibility timeout still brings it back.
            tracing::warn!(message_id = %record.message_id, error = %error, "could not set the retry delay");
        }
        Disposition::Retry
    }
}

/// The failure a dependency's error records.
fn failure(error: &DependencyError) -> DeliveryFailure {
    DeliveryFailure { class: error.class, code: error.code.clone(), message: error.message.clone(), provider: None }
}

/// A failure `provider` answered.
fn provider_failure(error: &DependencyError, provider: &str) -> DeliveryFailure {
    DeliveryFailure { provider: Some(provider.to_string()), ..failure(error) }
}

/// The providers an attempt may send through: its route now, and what the delivery's record
/// says of the attempts before.
struct Routing {
    route: Vec<&'static str>,
    trail: ProviderTrail,
    took_over: bool,
}

impl<P, L, R, U, A, C, T> crate::function::Function for Dispatcher<P, L, R, U, A, C, T>
where
    P: Provider,
    L: DeliveryLog,
    R: Redelivery,
    U: Recipients,
    A: Allowance,
    C: Counters,
    T: SendTimeline,
{
    type Event = SqsEvent;
    type Output = SqsBatchResponse;

    async fn handle(
        &self,
        event: lambda_runtime::LambdaEvent<SqsEvent>,
    ) -> Result<SqsBatchResponse, lambda_runtime::Error> {
        Ok(self.handle_batch(event.payload, event.context.deadline as i64).await)
    }
}

#[cfg(test)]
mod tests;
