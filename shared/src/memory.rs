//! The ports in memory, for fast tests of the delivery logic: the log applies the lifecycle
//! table (`domain::lifecycle`) exactly as the DynamoDB log's conditions do, and each port can be
//! told to fail, or to apply a write and lose its answer, as the tests' fault proxy makes AWS do.
//! Every call yields to the runtime first (as a network call would), a scripted number of times,
//! so concurrent attempts interleave at every step.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::channel::Channel;
use crate::domain::lifecycle::{Budget, CLAIMS, Event, TimelineKind, Transition};
use crate::domain::notification::{
    DeliveryFailure, DeliveryId, DeliveryRecord, DeliveryStatus, NotificationId, NotificationRecord, TimelineEvent,
};
use crate::domain::send_rate::advance;
use crate::domain::user::{UserId, UserProfile};
use crate::error::{DependencyError, FailureClass};
use crate::ports::{
    Allowance, AttemptOutcome, Claim, Claiming, Counters, DeadLetter, DeadLetters, DeliveryLog, Engaged, Engagement,
    Enqueue, FeedbackRecorded, FlowMark, Lease, Receipt, Recipients, Redelivery, SendTimeline, Suppressions,
};
use crate::queue::{NotEnqueued, Outgoing};
use crate::store::stats::Tally;
use crate::store::suppressions::Suppression;

/// A logged notification with one delivery (`delivery_id` on `channel`, in `status`), as a
/// test starts from.
pub fn logged(id: &str, delivery_id: &str, channel: Channel, status: DeliveryStatus) -> NotificationRecord {
    let mut delivery = DeliveryRecord::queued(channel, "+12015550123".into(), "t", None);
    delivery.status = status;
    NotificationRecord {
        id: id.into(),
        app_key: "ak_0123456789abcdef0123".into(),
        idempotency_key: None,
        request_hash: "h".into(),
        user_id: "u-1".into(),
        template: "welcome".into(),
        created_at: crate::time::now_rfc3339(),
        expires_at: i64::MAX,
        deliveries: BTreeMap::from([(delivery_id.into(), delivery)]),
        skipped: vec![],
        events: vec![],
        sweep_shard: None,
        sweep_at: None,
        cancellation_key: None,
        cancel_scope: None,
        send_at: None,
        conversion: None,
    }
}

/// What a scripted call does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Refused, not applied (a 500 the SDK gave up retrying).
    Refused,
    /// Applied, and its answer lost: the caller sees an error.
    AnswerLost,
}

pub fn transient(operation: &'static str) -> DependencyError {
    DependencyError {
        class: FailureClass::Transient,
        service: "memory",
        operation,
        code: "InternalFailure".into(),
        message: "injected fault".into(),
    }
}

/// Yields to the runtime `times` times: another task runs in between.
async fn interleave(times: u32) {
    for _ in 0..times {
        tokio::task::yield_now().await;
    }
}

/// A script of yields and faults, consumed call by call (then: one yield, no fault).
#[derive(Default)]
pub struct Script {
    steps: Mutex<VecDeque<(u32, Option<Fault>)>>,
}

impl Script {
    pub fn push(&self, yields: u32, fault: Option<Fault>) {
        self.steps.lock().unwrap().push_back((yields, fault));
    }

    /// The next call's yields (done here) and fault.
    async fn next(&self) -> Option<Fault> {
        let (yields, fault) = self.steps.lock().unwrap().pop_front().unwrap_or((1, None));
        interleave(yields).await;
        fault
    }
}

/// A status change the log applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Who made it (what the log's `caller` said then).
    pub by: u32,
    pub delivery_id: DeliveryId,
    pub event: Event,
    pub to: DeliveryStatus,
}

/// The notification log in memory.
pub struct MemoryLog {
    records: Mutex<BTreeMap<NotificationId, NotificationRecord>>,
    /// Scripts writes (claims, outcomes, feedback): each call takes the next step.
    pub writes: Script,
    /// Every status change applied, in order.
    pub applied: Mutex<Vec<Applied>>,
    /// Names the caller of each change (a test's attempt number).
    pub caller: fn() -> u32,
}

impl Default for MemoryLog {
    fn default() -> Self {
        Self { records: Mutex::default(), writes: Script::default(), applied: Mutex::default(), caller: || 0 }
    }
}

impl MemoryLog {
    pub fn insert(&self, record: NotificationRecord) {
        self.records.lock().unwrap().insert(record.id.clone(), record);
    }

    pub fn delivery(&self, id: &str, delivery_id: &str) -> Option<DeliveryRecord> {
        self.records.lock().unwrap().get(id)?.deliveries.get(delivery_id).cloned()
    }

    /// Ends every lease now (the time a redelivered message waits is longer than a lease).
    pub fn expire_leases(&self) {
        for record in self.records.lock().unwrap().values_mut() {
            for delivery in record.deliveries.values_mut() {
                if let Some(until) = delivery.lease_until.as_mut() {
                    *until = i64::MIN;
                }
            }
        }
    }

    /// Applies `transition` to a delivery if the table allows it, with `edit`'s additions; else
    /// the record as found (`None`: no such delivery).
    async fn change(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        channel: Channel,
        transition: &Transition,
        guard: (Option<Lease>, i64),
        edit: impl FnOnce(&mut DeliveryRecord),
    ) -> Result<Result<DeliveryRecord, Option<NotificationRecord>>, DependencyError> {
        let fault = self.writes.next().await;
        if fault == Some(Fault::Refused) {
            return Err(transient("UpdateItem"));
        }
        let mut records = self.records.lock().unwrap();
        let Some(record) = records.get_mut(id) else { return Ok(Err(None)) };
        let Some(delivery) = record.deliveries.get_mut(delivery_id) else { return Ok(Err(None)) };
        let (lease, now_ms) = guard;
        if !transition.allows(delivery.current(), now_ms, lease.map(|lease| lease.until_ms())) {
            return Ok(Err(Some(record.clone())));
        }
        delivery.status = transition.to;
        delivery.updated_at = crate::time::now_rfc3339();
        if transition.ends_lease() {
            delivery.lease_until = None;
        }
        match transition.budget {
            Budget::Keep => {}
            Budget::Spend => delivery.failures += 1,
            Budget::Wait => delivery.waits += 1,
            Budget::Renew => delivery.failures = 0,
        }
        edit(delivery);
        let changed = delivery.clone();
        record.events.push(TimelineEvent {
            at: crate::time::now_rfc3339(),
            kind: transition.timeline,
            channel: Some(channel),
            delivery: Some(delivery_id.clone()),
        });
        self.applied.lock().unwrap().push(Applied {
            by: (self.caller)(),
            delivery_id: delivery_id.clone(),
            event: transition.event,
            to: transition.to,
        });
        match fault {
            Some(Fault::AnswerLost) => Err(transient("UpdateItem")),
            _ => Ok(Ok(changed)),
        }
    }
}

impl DeliveryLog for MemoryLog {
    async fn get(&self, id: &NotificationId) -> Result<Option<NotificationRecord>, DependencyError> {
        interleave(1).await;
        Ok(self.records.lock().unwrap().get(id).cloned())
    }

    async fn claim_first(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        channel: Channel,
        claiming: Claiming<'_>,
    ) -> Result<Claim, DependencyError> {
        let Claiming { first, provider, now_ms, lease } = claiming;
        let lease = Lease::starting(now_ms, lease);
        let mut claim = first;
        for _ in CLAIMS {
            let taken = self
                .change(id, delivery_id, channel, claim.transition(), (None, now_ms), |delivery| {
                    delivery.lease_until = Some(lease.until_ms());
                    delivery.attempts += 1;
                    delivery.provider.get_or_insert_with(|| provider.to_string());
                })
                .await?;
            let found = match taken {
                Ok(delivery) => {
                    return Ok(Claim::Taken {
                        lease,
                        failures: delivery.failures,
                        waits: delivery.waits,
                        trail: delivery.trail(),
                        took_over: claim == Event::TakeOver,
                    });
                }
                Err(found) => found,
            };
            match Claim::refused(found.as_ref(), delivery_id, now_ms, claim) {
                Ok(answer) => return Ok(answer),
                Err(instead) => claim = instead,
            }
        }
        Ok(Claim::Held { until_ms: now_ms })
    }

    async fn reroute(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        channel: Channel,
        lease: Lease,
        provider: &str,
        pinned: bool,
    ) -> Result<bool, DependencyError> {
        let now_ms = crate::time::now_epoch_millis();
        let rerouted = self
            .change(id, delivery_id, channel, Event::Reroute.transition(), (Some(lease), now_ms), |delivery| {
                delivery.provider = Some(provider.to_string());
                delivery.pinned |= pinned;
            })
            .await?;
        Ok(rerouted.is_ok())
    }

    async fn record_receipt(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        channel: Channel,
        receipt: &Receipt,
    ) -> Result<FeedbackRecorded, DependencyError> {
        let found = self.records.lock().unwrap().get(id).cloned();
        let refused = FeedbackRecorded::refused_receipt(found.as_ref(), delivery_id, &receipt.provider);
        if refused == FeedbackRecorded::OtherProvider {
            return Ok(refused);
        }
        let now_ms = crate::time::now_epoch_millis();
        let recorded = self
            .change(id, delivery_id, channel, receipt.event.transition(), (None, now_ms), |delivery| {
                delivery.provider_message_id.get_or_insert_with(|| receipt.provider_message_id.clone());
                if let Some(error) = &receipt.error {
                    delivery.error = Some(error.clone());
                }
            })
            .await?;
        Ok(match recorded {
            Ok(_) => FeedbackRecorded::Recorded,
            Err(found) => FeedbackRecorded::refused_receipt(found.as_ref(), delivery_id, &receipt.provider),
        })
    }

    async fn record(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        channel: Channel,
        lease: Lease,
        outcome: &AttemptOutcome,
    ) -> Result<bool, DependencyError> {
        let transition = outcome.event().transition();
        let now_ms = crate::time::now_epoch_millis();
        let recorded = self
            .change(id, delivery_id, channel, transition, (Some(lease), now_ms), |delivery| match outcome {
                AttemptOutcome::Sent { provider, provider_message_id } => {
                    delivery.provider = Some(provider.clone());
                    delivery.provider_message_id = Some(provider_message_id.clone());
                }
                AttemptOutcome::Failed(failure)
                | AttemptOutcome::Retrying(failure)
                | AttemptOutcome::Parked(failure) => {
                    delivery.pinned |= failure.pins();
                    delivery.error = Some(failure.clone());
                }
                AttemptOutcome::Waiting(throttled) => {
                    if let Some(failure) = throttled {
                        delivery.error = Some(failure.clone());
                    }
                }
                AttemptOutcome::Skipped(reason) => delivery.skip_reason = Some(*reason),
                AttemptOutcome::Held { until_ms } => delivery.deliver_after = Some(*until_ms),
            })
            .await?;
        Ok(recorded.is_ok())
    }

    async fn record_feedback(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        channel: Channel,
        event: Event,
        error: Option<&DeliveryFailure>,
    ) -> Result<FeedbackRecorded, DependencyError> {
        let now_ms = crate::time::now_epoch_millis();
        let recorded = self
            .change(id, delivery_id, channel, event.transition(), (None, now_ms), |delivery| {
                if let Some(error) = error {
                    delivery.error = Some(error.clone());
                }
            })
            .await?;
        let found = match recorded {
            Ok(_) => return Ok(FeedbackRecorded::Recorded),
            Err(found) => found,
        };
        Ok(FeedbackRecorded::refused(found.as_ref(), delivery_id))
    }

    async fn record_engagement(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        channel: Channel,
        engagement: Engagement,
    ) -> Result<Engaged, DependencyError> {
        interleave(1).await;
        let mut records = self.records.lock().unwrap();
        let Some(record) = records.get_mut(id) else { return Ok(Engaged::NotRecorded) };
        let Some(delivery) = record.deliveries.get_mut(delivery_id) else { return Ok(Engaged::NotRecorded) };
        let now = crate::time::now_rfc3339();
        let first = match engagement {
            Engagement::Open if delivery.opened_at.is_some() => return Ok(Engaged::NotRecorded),
            Engagement::Open => {
                delivery.opened_at = Some(now.clone());
                true
            }
            Engagement::Click => {
                let first = delivery.clicks.is_none();
                delivery.clicks = Some(delivery.clicks.unwrap_or(0) + 1);
                first
            }
        };
        if first {
            let kind = if engagement == Engagement::Open { TimelineKind::Opened } else { TimelineKind::Clicked };
            record.events.push(TimelineEvent {
                at: now,
                kind,
                channel: Some(channel),
                delivery: Some(delivery_id.clone()),
            });
        }
        Ok(Engaged::Recorded { first })
    }

    async fn append_event(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        kind: TimelineKind,
        channel: Channel,
    ) -> Result<(), DependencyError> {
        interleave(1).await;
        if let Some(record) = self.records.lock().unwrap().get_mut(id) {
            record.events.push(TimelineEvent {
                at: crate::time::now_rfc3339(),
                kind,
                channel: Some(channel),
                delivery: Some(delivery_id.clone()),
            });
        }
        Ok(())
    }

    async fn cancel(
        &self,
        id: &NotificationId,
        cancelling: &[(DeliveryId, Channel)],
        nothing_left: bool,
    ) -> Result<Result<NotificationRecord, Option<NotificationRecord>>, DependencyError> {
        let fault = self.writes.next().await;
        if fault == Some(Fault::Refused) {
            return Err(transient("UpdateItem"));
        }
        let cancel = Event::Cancel.transition();
        let mut records = self.records.lock().unwrap();
        let Some(record) = records.get_mut(id) else { return Ok(Err(None)) };
        let now_ms = crate::time::now_epoch_millis();
        let allowed = cancelling.iter().all(|(delivery_id, _)| {
            record.deliveries.get(delivery_id).is_some_and(|delivery| cancel.allows(delivery.current(), now_ms, None))
        });
        if !allowed {
            return Ok(Err(Some(record.clone())));
        }
        for (delivery_id, channel) in cancelling {
            let delivery = record.deliveries.get_mut(delivery_id).expect("checked above");
            delivery.status = cancel.to;
            delivery.updated_at = crate::time::now_rfc3339();
            record.events.push(TimelineEvent {
                at: crate::time::now_rfc3339(),
                kind: cancel.timeline,
                channel: Some(*channel),
                delivery: Some(delivery_id.clone()),
            });
            self.applied.lock().unwrap().push(Applied {
                by: (self.caller)(),
                delivery_id: delivery_id.clone(),
                event: cancel.event,
                to: cancel.to,
            });
        }
        if nothing_left {
            record.cancel_scope = None;
        }
        match fault {
            Some(Fault::AnswerLost) => Err(transient("UpdateItem")),
            _ => Ok(Ok(record.clone())),
        }
    }

    async fn with_cancel_scope(&self, scope: &str) -> Result<Vec<(NotificationId, String)>, DependencyError> {
        interleave(1).await;
        let records = self.records.lock().unwrap();
        let found = records.values().filter(|record| record.cancel_scope.as_deref() == Some(scope));
        Ok(found.map(|record| (record.id.clone(), record.user_id.clone())).collect())
    }

    async fn due(&self, shard: u32, now_epoch: i64, limit: usize) -> Result<Vec<NotificationId>, DependencyError> {
        interleave(1).await;
        let shard = crate::domain::notification::SweepShard(shard).to_string();
        Ok(self
            .records
            .lock()
            .unwrap()
            .values()
            .filter(|record| {
                record.sweep_shard.as_deref() == Some(shard.as_str())
                    && record.sweep_at.is_some_and(|at| at <= now_epoch)
            })
            .take(limit)
            .map(|record| record.id.clone())
            .collect())
    }

    async fn reschedule_sweep(
        &self,
        id: &NotificationId,
        seen: i64,
        next: Option<i64>,
    ) -> Result<bool, DependencyError> {
        interleave(1).await;
        let mut records = self.records.lock().unwrap();
        let Some(record) = records.get_mut(id).filter(|record| record.sweep_at == Some(seen)) else {
            return Ok(false);
        };
        record.sweep_at = next;
        if next.is_none() {
            record.sweep_shard = None;
        }
        Ok(true)
    }
}

/// Redelivery in memory: remembers each delay asked for, and each message put in the DLQ.
#[derive(Default)]
pub struct MemoryRedelivery {
    pub delays: Mutex<Vec<(String, Duration)>>,
    pub dead_letters: Mutex<Vec<String>>,
    /// (body, due epoch ms) of each deferred copy.
    pub deferred: Mutex<Vec<(String, i64)>>,
}

impl Redelivery for MemoryRedelivery {
    async fn retry_after(&self, _source: &str, receipt_handle: &str, delay: Duration) -> Result<(), DependencyError> {
        interleave(1).await;
        self.delays.lock().unwrap().push((receipt_handle.to_string(), delay));
        Ok(())
    }

    async fn dead_letter(&self, body: &str) -> Result<(), DependencyError> {
        interleave(1).await;
        self.dead_letters.lock().unwrap().push(body.to_string());
        Ok(())
    }

    async fn defer(&self, _source: &str, body: &str, due_ms: i64) -> Result<(), DependencyError> {
        interleave(1).await;
        self.deferred.lock().unwrap().push((body.to_string(), due_ms));
        Ok(())
    }
}

/// A channel's send timeline in memory (clones share it, as instances share the DynamoDB item):
/// the same arithmetic as the item's conditional updates.
#[derive(Clone, Default)]
pub struct MemoryTimeline {
    state: Arc<Mutex<(Option<i64>, Vec<FlowMark>)>>,
}

impl MemoryTimeline {
    /// Every take's mark, in order.
    pub fn takes(&self) -> Vec<FlowMark> {
        self.state.lock().unwrap().1.clone()
    }
}

impl SendTimeline for MemoryTimeline {
    async fn take(&self, span_us: i64, now_us: i64, mark: FlowMark) -> Result<i64, DependencyError> {
        interleave(1).await;
        let mut state = self.state.lock().unwrap();
        let (next, first_free) = advance(state.0, span_us, now_us);
        state.0 = Some(next);
        state.1.push(mark);
        Ok(first_free)
    }
}

/// Users in memory.
#[derive(Default)]
pub struct MemoryUsers {
    pub profiles: Mutex<HashMap<UserId, UserProfile>>,
    /// The reads made: how many users each asked for.
    pub reads: Mutex<Vec<usize>>,
}

impl Recipients for MemoryUsers {
    async fn profile(&self, user_id: &UserId) -> Result<Option<UserProfile>, DependencyError> {
        interleave(1).await;
        self.reads.lock().unwrap().push(1);
        Ok(self.profiles.lock().unwrap().get(user_id).cloned())
    }

    async fn profiles(&self, user_ids: &[UserId]) -> Result<HashMap<UserId, UserProfile>, DependencyError> {
        interleave(1).await;
        self.reads.lock().unwrap().push(user_ids.len());
        let profiles = self.profiles.lock().unwrap();
        Ok(user_ids.iter().filter_map(|user_id| Some((user_id.clone(), profiles.get(user_id)?.clone()))).collect())
    }
}

/// The rate limit in memory: at most `limit` notifications per user and channel, each counted
/// once.
pub struct MemoryAllowance {
    pub limit: usize,
    taken: Mutex<HashMap<(UserId, Channel), Vec<NotificationId>>>,
}

impl MemoryAllowance {
    pub fn new(limit: usize) -> Self {
        Self { limit, taken: Mutex::default() }
    }

    /// How many sends were counted against users' limits.
    pub fn taken(&self) -> usize {
        self.taken.lock().unwrap().values().map(Vec::len).sum()
    }
}

impl Allowance for MemoryAllowance {
    async fn try_take(
        &self,
        user_id: &UserId,
        channel: Channel,
        notification_id: &NotificationId,
        _now_epoch: i64,
    ) -> Result<bool, DependencyError> {
        interleave(1).await;
        let mut taken = self.taken.lock().unwrap();
        let counted = taken.entry((user_id.clone(), channel)).or_default();
        if counted.contains(notification_id) {
            return Ok(true);
        }
        if counted.len() >= self.limit {
            return Ok(false);
        }
        counted.push(notification_id.clone());
        Ok(true)
    }
}

/// Stats counters in memory: every tally written.
#[derive(Default)]
pub struct MemoryCounters {
    pub written: Mutex<Vec<Tally>>,
}

impl Counters for MemoryCounters {
    async fn write(&self, tally: Tally) -> Result<(), DependencyError> {
        self.written.lock().unwrap().push(tally);
        Ok(())
    }
}

/// The suppression list in memory.
#[derive(Default)]
pub struct MemorySuppressions {
    pub added: Mutex<Vec<Suppression>>,
}

impl Suppressions for MemorySuppressions {
    async fn add(&self, suppression: &Suppression) -> Result<(), DependencyError> {
        interleave(1).await;
        self.added.lock().unwrap().push(suppression.clone());
        Ok(())
    }
}

/// Channel queues in memory: every message enqueued; `refuse` of them refused.
#[derive(Default)]
pub struct MemoryQueues {
    pub enqueued: Mutex<Vec<Outgoing>>,
    pub refuse: Mutex<usize>,
}

impl Enqueue for MemoryQueues {
    async fn enqueue(&self, messages: &[Outgoing]) -> Vec<NotEnqueued> {
        interleave(1).await;
        let mut refuse = self.refuse.lock().unwrap();
        let mut refused = Vec::new();
        for message in messages {
            if *refuse > 0 {
                *refuse -= 1;
                refused.push(NotEnqueued { message: message.clone(), error: transient("SendMessageBatch") });
            } else {
                self.enqueued.lock().unwrap().push(message.clone());
            }
        }
        refused
    }
}

/// A dead-letter queue in memory, and what went back to the channel's queue.
#[derive(Default)]
pub struct MemoryDeadLetters {
    pub letters: Mutex<Vec<DeadLetter>>,
    pub sent_back: Mutex<Vec<String>>,
}

impl DeadLetters for MemoryDeadLetters {
    async fn depth(&self) -> Result<u64, DependencyError> {
        Ok(self.letters.lock().unwrap().len() as u64)
    }

    async fn receive(&self, max: usize, _hold: Duration) -> Result<Vec<DeadLetter>, DependencyError> {
        interleave(1).await;
        Ok(self.letters.lock().unwrap().iter().take(max).cloned().collect())
    }

    async fn send_back(&self, body: &str) -> Result<(), DependencyError> {
        interleave(1).await;
        self.sent_back.lock().unwrap().push(body.to_string());
        Ok(())
    }

    async fn delete(&self, receipt_handles: &[String]) -> Result<(), DependencyError> {
        self.letters.lock().unwrap().retain(|letter| !receipt_handles.contains(&letter.receipt_handle));
        Ok(())
    }
}
