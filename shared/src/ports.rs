//! The ports the delivery logic runs against. The AWS adapters implement them (`store`,
//! `queue`); `memory` implements them in memory, for fast tests that need no emulator, applying
//! the same lifecycle table (`domain::lifecycle`).
//!
//! - [`DeliveryLog`]: the notification records and their deliveries' lifecycle;
//! - [`Redelivery`]: how a message comes back (its visibility), or goes to the DLQ;
//! - what a dispatcher reads and writes besides: [`Recipients`] (the user at send time),
//!   [`Allowance`] (the per-user rate limit), [`SendTimeline`] (the channel's send rate),
//!   [`Counters`] (the stats);
//! - [`Suppressions`] (email feedback), [`Enqueue`] (the sweep), [`DeadLetters`] (the redrive).

use std::future::Future;
use std::time::Duration;

use crate::domain::channel::Channel;
use crate::domain::failover::ProviderTrail;
use crate::domain::lifecycle::{Event, TimelineKind};
use crate::domain::notification::{
    ClaimDecision, DeliveryFailure, DeliveryId, DeliveryStatus, NotificationId, NotificationRecord, SkipReason,
};
use crate::domain::send_rate::{Lane, SendRate};
use crate::domain::user::{UserId, UserProfile};
use crate::error::DependencyError;
use crate::queue::{NotEnqueued, Outgoing};
use crate::store::stats::Tally;
use crate::store::suppressions::Suppression;

/// The lease an attempt took on a delivery: until when (epoch milliseconds) no other attempt
/// takes it over. Its value also tells this attempt's claim apart from a later one's (a claim
/// succeeds only while no unexpired lease exists), so the attempt's outcome is written only
/// while it still holds the delivery: one that outlived its lease cannot overwrite the state of
/// the attempt that took over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    until_ms: i64,
}

impl Lease {
    /// A lease from `now_ms` for `length`.
    pub fn starting(now_ms: i64, length: Duration) -> Self {
        Self { until_ms: now_ms + length.as_millis() as i64 }
    }

    /// When it ends, in epoch milliseconds.
    pub fn until_ms(&self) -> i64 {
        self.until_ms
    }
}

/// What claiming a delivery for an attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This attempt holds the delivery, with this lease; `failures`: the retry budget spent
    /// (failed attempts, and attempts that died, this claim's takeover included), `waits`: the
    /// attempts that waited for the send rate; `trail`: the providers its attempts used, and
    /// `took_over`: whether the previous attempt died holding it.
    Taken { lease: Lease, failures: u32, waits: u32, trail: ProviderTrail, took_over: bool },
    /// Another attempt holds it until then (epoch milliseconds).
    Held { until_ms: i64 },
    /// It is scheduled for later (epoch ms) than the message claiming it says: a stale copy
    /// (the message deferred when it was held is the one that releases it).
    NotDue { until_ms: i64 },
    /// It has an outcome already.
    Finished(DeliveryStatus),
    /// No such notification or delivery (expired from the log, or never logged).
    Missing,
}

impl Claim {
    /// A claim (`tried`, one of the table's [`CLAIMS`](crate::domain::lifecycle::CLAIMS)) the log refused, from the record it found
    /// instead (`None`: none at all): the answer, or the claim that record allows instead.
    pub fn refused(
        found: Option<&NotificationRecord>,
        delivery_id: &DeliveryId,
        now_ms: i64,
        tried: Event,
    ) -> Result<Self, Event> {
        let Some(delivery) = found.and_then(|record| record.deliveries.get(delivery_id)) else {
            return Ok(Claim::Missing);
        };
        match delivery.claim_decision(now_ms) {
            ClaimDecision::Finished(status) => Ok(Claim::Finished(status)),
            ClaimDecision::HeldUntil(until_ms) => Ok(Claim::Held { until_ms }),
            ClaimDecision::NotDue(until_ms) => Ok(Claim::NotDue { until_ms }),
            ClaimDecision::Take(claim) if claim != tried => Err(claim),
            // The lease ran out between the write and now: come straight back.
            ClaimDecision::Take(_) => Ok(Claim::Held { until_ms: now_ms }),
        }
    }
}

/// A claim's terms (see [`DeliveryLog::claim_first`]).
#[derive(Clone, Copy, Debug)]
pub struct Claiming<'a> {
    pub first: Event,
    pub provider: &'a str,
    pub now_ms: i64,
    pub lease: Duration,
}

/// A provider's delivery receipt, as [`DeliveryLog::record_receipt`] records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub event: Event,
    pub provider: String,
    pub provider_message_id: String,
    /// Why the carrier did not deliver it (an undelivered receipt).
    pub error: Option<DeliveryFailure>,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    Sent {
        /// The provider that took it, and its id for the message.
        provider: String,
        provider_message_id: String,
    },
    Failed(DeliveryFailure),
    Skipped(SkipReason),
    /// A transient failure: the delivery goes back to `queued` for the next receive.
    Retrying(DeliveryFailure),
    /// Held back by the channel's send rate, or throttled by the provider (its answer): back to
    /// `queued`, not counted as a failure.
    Waiting(Option<DeliveryFailure>),
    /// A transient failure that spent the retry budget: the message is in the DLQ.
    Parked(DeliveryFailure),
    /// The recipient is in quiet hours: scheduled until they end (epoch ms), its message
    /// deferred until then.
    Held {
        until_ms: i64,
    },
}

impl AttemptOutcome {
    /// The lifecycle event that records it.
    pub fn event(&self) -> Event {
        match self {
            AttemptOutcome::Sent { .. } => Event::Sent,
            AttemptOutcome::Failed(_) => Event::Failed,
            AttemptOutcome::Skipped(_) => Event::Skipped,
            AttemptOutcome::Retrying(_) => Event::Retrying,
            AttemptOutcome::Waiting(_) => Event::Waiting,
            AttemptOutcome::Parked(_) => Event::Parked,
            AttemptOutcome::Held { .. } => Event::Hold,
        }
    }
}

/// What recording feedback came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedbackRecorded {
    Recorded,
    /// The send's `sent` write has not landed yet (the event overtook it): try again later.
    NotYetSent,
    /// The delivery is in a state the feedback does not move (a duplicate event, or a later one).
    Unchanged(DeliveryStatus),
    /// No such notification or delivery (expired from the log).
    Missing,
    /// A receipt from a provider the delivery's latest attempt did not go through.
    OtherProvider,
}

impl FeedbackRecorded {
    /// A receipt from `provider` the log refused, from the record it found instead.
    pub fn refused_receipt(found: Option<&NotificationRecord>, delivery_id: &DeliveryId, provider: &str) -> Self {
        let through = found.and_then(|record| record.deliveries.get(delivery_id)).and_then(|d| d.provider.as_deref());
        match through {
            Some(through) if through != provider => FeedbackRecorded::OtherProvider,
            _ => Self::refused(found, delivery_id),
        }
    }

    /// Feedback the log refused, from the record it found instead (`None`: none at all).
    pub fn refused(found: Option<&NotificationRecord>, delivery_id: &DeliveryId) -> Self {
        match found.and_then(|record| record.deliveries.get(delivery_id)).map(|delivery| delivery.status) {
            None => FeedbackRecorded::Missing,
            Some(status) if !status.is_final() => FeedbackRecorded::NotYetSent,
            Some(status) => FeedbackRecorded::Unchanged(status),
        }
    }
}

/// A recipient's engagement with a tracked message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engagement {
    Open,
    Click,
}

/// What recording an engagement came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engaged {
    /// Recorded; `first`: the delivery's first open or first click (what the rates count).
    Recorded { first: bool },
    /// Nothing changed: a repeated open, or no such notification or delivery (expired).
    NotRecorded,
}

/// The notification log: the record of truth of every delivery's state.
pub trait DeliveryLog: Send + Sync + 'static {
    fn get(
        &self,
        id: &NotificationId,
    ) -> impl Future<Output = Result<Option<NotificationRecord>, DependencyError>> + Send;

    /// Claims a delivery for an attempt (whichever of the table's [`CLAIMS`](crate::domain::lifecycle::CLAIMS) its state allows:
    /// it is tried first as queued, the usual case): it becomes `sending`, with a lease until
    /// `now_ms + lease`, through the channel's own provider if no attempt named one before.
    fn claim(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        channel: Channel,
        now_ms: i64,
        lease: Duration,
    ) -> impl Future<Output = Result<Claim, DependencyError>> + Send {
        let claim = Claiming { first: Event::Claim, provider: channel.aws_provider(), now_ms, lease };
        self.claim_first(id, delivery_id, channel, claim)
    }

    /// [`claim`](Self::claim) as `claim` says: trying its `first` claim first (the one the
    /// message suggests: a scheduled delivery's is its release, so the usual case costs one
    /// write), and naming its `provider` if no earlier attempt named one (one write: an attempt
    /// that dies calling it leaves the name for the one taking over).
    fn claim_first(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        channel: Channel,
        claim: Claiming<'_>,
    ) -> impl Future<Output = Result<Claim, DependencyError>> + Send;

    /// Moves the attempt holding `lease` to `provider` (pinning the delivery to it if
    /// `pinned`), before it calls it: whether the attempt still holds the delivery.
    fn reroute(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        channel: Channel,
        lease: Lease,
        provider: &str,
        pinned: bool,
    ) -> impl Future<Output = Result<bool, DependencyError>> + Send;

    /// Records a provider's delivery receipt (`event`: one of the receipt rows) for the
    /// delivery it sent as `provider_message_id` through `provider`, if the table allows it from
    /// the delivery's status and its latest attempt (if any) went through `provider`.
    fn record_receipt(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        channel: Channel,
        receipt: &Receipt,
    ) -> impl Future<Output = Result<FeedbackRecorded, DependencyError>> + Send;

    /// Records how an attempt ended, if the attempt still holds the delivery under `lease`
    /// (else another attempt took over and records its own outcome): whether this recorded it.
    fn record(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        channel: Channel,
        lease: Lease,
        outcome: &AttemptOutcome,
    ) -> impl Future<Output = Result<bool, DependencyError>> + Send;

    /// Records the provider's feedback on a sent delivery (`event`: delivered, bounced,
    /// complained or rejected, with the bounce or rejection as its `error`), if the table
    /// allows it from the delivery's status; a duplicate event changes nothing.
    fn record_feedback(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        channel: Channel,
        event: Event,
        error: Option<&DeliveryFailure>,
    ) -> impl Future<Output = Result<FeedbackRecorded, DependencyError>> + Send;

    /// Records an open (the first only) or a click (every one counted; the first on the timeline).
    fn record_engagement(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        channel: Channel,
        engagement: Engagement,
    ) -> impl Future<Output = Result<Engaged, DependencyError>> + Send;

    /// Appends an event that changes no status (a soft bounce, a redrive) to a notification's
    /// timeline; nothing for a notification no longer logged.
    fn append_event(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        kind: TimelineKind,
        channel: Channel,
    ) -> impl Future<Output = Result<(), DependencyError>> + Send;

    /// Cancels the deliveries `cancelling` of notification `id` together, if each is still in a
    /// status the lifecycle table's cancel row moves, and returns the record after (else none is,
    /// and the record as found comes back: `None` if there is none); and takes the notification out of the cancellation index
    /// when `nothing_left` (no other delivery could be cancelled later). With no deliveries, it
    /// only takes the notification out of the index.
    fn cancel(
        &self,
        id: &NotificationId,
        cancelling: &[(DeliveryId, Channel)],
        nothing_left: bool,
    ) -> impl Future<Output = Result<Result<NotificationRecord, Option<NotificationRecord>>, DependencyError>> + Send;

    /// The notifications in one partition (`scope`) of the cancellation index, with their users.
    fn with_cancel_scope(
        &self,
        scope: &str,
    ) -> impl Future<Output = Result<Vec<(NotificationId, String)>, DependencyError>> + Send;

    /// Ids of notifications in a shard of the recovery sweep's index due at `now_epoch`.
    fn due(
        &self,
        shard: u32,
        now_epoch: i64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<NotificationId>, DependencyError>> + Send;

    /// Moves a record's next sweep from `seen` to `next` (out of the index with `None`), if no
    /// other sweep moved it first: whether this one did.
    fn reschedule_sweep(
        &self,
        id: &NotificationId,
        seen: i64,
        next: Option<i64>,
    ) -> impl Future<Output = Result<bool, DependencyError>> + Send;
}

/// How a received message comes back, or is given up on.
pub trait Redelivery: Send + Sync + 'static {
    /// Makes the queue (`source`: its ARN, as the record names it) hand the message out again
    /// after `delay` (its visibility).
    fn retry_after(
        &self,
        source: &str,
        receipt_handle: &str,
        delay: Duration,
    ) -> impl Future<Output = Result<(), DependencyError>> + Send;

    /// Puts a copy of the message (its body) in the channel's DLQ, for on-call.
    fn dead_letter(&self, body: &str) -> impl Future<Output = Result<(), DependencyError>> + Send;

    /// Puts a copy of the message (`body`) back on its queue (`source`), to be received no
    /// earlier than `due_ms` (epoch ms): delayed on the queue if that is within SQS's 15
    /// minutes, else kept by a one-time schedule that sends it then (nothing is received, and
    /// nothing billed, while it waits). The received message is then acknowledged.
    fn defer(&self, source: &str, body: &str, due_ms: i64) -> impl Future<Output = Result<(), DependencyError>> + Send;
}

/// What the slots taken say of a lane's traffic, kept beside the channel's timeline for on-call
/// (`notifyctl queues`): how many, when, and the oldest message they are for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowMark {
    pub lane: Lane,
    pub slots: u32,
    /// The rate the slots were taken at.
    pub rate: SendRate,
    /// When the oldest message the slots are for was enqueued (epoch ms; SQS's SentTimestamp).
    pub oldest_enqueued_ms: Option<i64>,
}

/// A channel's send timeline, shared by every dispatcher instance (`domain::send_rate`).
pub trait SendTimeline: Send + Sync + 'static {
    /// Moves the timeline `span_us` on from its first free slot or `now_us`, whichever is later,
    /// in one atomic step: that first slot (epoch µs).
    fn take(
        &self,
        span_us: i64,
        now_us: i64,
        mark: FlowMark,
    ) -> impl Future<Output = Result<i64, DependencyError>> + Send;
}

/// Users as they are now.
pub trait Recipients: Send + Sync + 'static {
    fn profile(&self, user_id: &UserId) -> impl Future<Output = Result<Option<UserProfile>, DependencyError>> + Send;

    /// The profiles of those of `user_ids` that exist, each as [`Recipients::profile`] reads it.
    fn profiles(
        &self,
        user_ids: &[UserId],
    ) -> impl Future<Output = Result<std::collections::HashMap<UserId, UserProfile>, DependencyError>> + Send;
}

/// The per-user limit over a rolling hour.
pub trait Allowance: Send + Sync + 'static {
    /// Counts `notification_id` against the user's limit on `channel`, once however often asked:
    /// whether it is within the limit.
    fn try_take(
        &self,
        user_id: &UserId,
        channel: Channel,
        notification_id: &NotificationId,
        now_epoch: i64,
    ) -> impl Future<Output = Result<bool, DependencyError>> + Send;
}

/// Where stats counters are written.
pub trait Counters: Send + Sync + 'static {
    fn write(&self, tally: Tally) -> impl Future<Output = Result<(), DependencyError>> + Send;
}

/// The email suppression list.
pub trait Suppressions: Send + Sync + 'static {
    fn add(&self, suppression: &Suppression) -> impl Future<Output = Result<(), DependencyError>> + Send;
}

/// The channel queues, for messages sent again.
pub trait Enqueue: Send + Sync + 'static {
    /// Sends every message; returns the ones that were not accepted.
    fn enqueue(&self, messages: &[Outgoing]) -> impl Future<Output = Vec<NotEnqueued>> + Send;
}

/// A message waiting in a dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
}

/// A channel's dead-letter queue, and its way back to the channel's queue.
pub trait DeadLetters: Send + Sync + 'static {
    /// Messages waiting (approximately, as SQS counts).
    fn depth(&self) -> impl Future<Output = Result<u64, DependencyError>> + Send;

    /// Up to `max` (≤ 10) messages, hidden from other readers for `hold`.
    fn receive(
        &self,
        max: usize,
        hold: Duration,
    ) -> impl Future<Output = Result<Vec<DeadLetter>, DependencyError>> + Send;

    /// Sends a message's body back to the channel's queue, as a new message.
    fn send_back(&self, body: &str) -> impl Future<Output = Result<(), DependencyError>> + Send;

    /// Deletes received messages from the DLQ.
    fn delete(&self, receipt_handles: &[String]) -> impl Future<Output = Result<(), DependencyError>> + Send;
}
