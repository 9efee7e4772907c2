//! The dispatch loop on the in-memory ports (`crate::memory`): every path of the lifecycle,
//! the lease takeover race, the retried `sent` write, parking when the retry budget is spent,
//! waiting for the send rate and the provider's throttling without spending it, and random
//! interleavings of duplicate attempts and feedback. No emulator: these run in milliseconds.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::domain::channel::Channel;
use crate::domain::contact::PhoneNumber;
use crate::domain::delivery::SmsContent;
use crate::domain::lifecycle::Event;
use crate::domain::template::TemplateName;
use crate::domain::user::{UserId, UserProfile};
use crate::error::FailureClass;
use crate::memory::{Fault, MemoryAllowance, MemoryCounters, MemoryLog, MemoryRedelivery, MemoryTimeline, MemoryUsers};
use crate::ports::FlowMark;

const ID: &str = "n-1";
const DELIVERY: &str = "sms";
const RETRY_BUDGET: u32 = 8;
const SOURCE: &str = "arn:aws:sqs:us-east-1:000000000000:sms";

tokio::task_local! {
    /// Which attempt (a receive of the message) is running: what the fakes attribute calls to.
    static ATTEMPT: u32;
}

fn attempt() -> u32 {
    ATTEMPT.try_with(|attempt| *attempt).unwrap_or(0)
}

/// An SMS provider whose answers are scripted (then: accepted), remembering which attempt each
/// accepted send came from.
#[derive(Default)]
struct ScriptedSms {
    answers: Mutex<VecDeque<(u32, Option<FailureClass>)>>,
    accepted: Mutex<Vec<u32>>,
    permanent_failures: Mutex<u32>,
    /// The route it reports (SNS alone when empty).
    route: Mutex<Vec<&'static str>>,
    /// The provider of every call, in order.
    calls: Mutex<Vec<String>>,
}

impl ScriptedSms {
    fn answer(&self, yields: u32, failure: Option<FailureClass>) {
        self.answers.lock().unwrap().push_back((yields, failure));
    }

    fn sends(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl Provider for ScriptedSms {
    type Content = SmsContent;
    const CHANNEL: Channel = Channel::Sms;

    async fn route(&self, _message: &DeliveryMessage<SmsContent>) -> Vec<&'static str> {
        let route = self.route.lock().unwrap().clone();
        if route.is_empty() { vec!["sns"] } else { route }
    }

    async fn send(
        &self,
        _message: &DeliveryMessage<SmsContent>,
        _recipient: &UserProfile,
        provider: &str,
    ) -> Result<String, DependencyError> {
        self.calls.lock().unwrap().push(provider.to_string());
        let (yields, failure) = self.answers.lock().unwrap().pop_front().unwrap_or((1, None));
        for _ in 0..yields {
            tokio::task::yield_now().await;
        }
        match failure {
            None => {
                self.accepted.lock().unwrap().push(attempt());
                Ok(format!("sms-{}", attempt()))
            }
            Some(class) => Err(DependencyError {
                class,
                service: "sns",
                operation: "Publish",
                code: match class {
                    FailureClass::Permanent => "InvalidParameter".into(),
                    FailureClass::Throttled => "Throttling".into(),
                    FailureClass::Unserved => "21408".into(),
                    FailureClass::Ambiguous => "Timeout".into(),
                    _ => "InternalError".into(),
                },
                message: "scripted".into(),
            }),
        }
    }

    async fn on_permanent_failure(
        &self,
        _message: &DeliveryMessage<SmsContent>,
        _error: &DependencyError,
    ) -> Result<(), DependencyError> {
        *self.permanent_failures.lock().unwrap() += 1;
        Ok(())
    }
}

type TestDispatcher =
    Dispatcher<ScriptedSms, MemoryLog, MemoryRedelivery, MemoryUsers, MemoryAllowance, MemoryCounters, MemoryTimeline>;

fn user() -> UserId {
    UserId::parse("u-1").unwrap()
}

fn profile() -> UserProfile {
    serde_json::from_value(
        serde_json::json!({"user_id": "u-1", "phone": "+12015550123", "created_at": "t", "updated_at": "t"}),
    )
    .unwrap()
}

fn settings() -> DispatchSettings {
    DispatchSettings {
        backoff: crate::domain::backoff::Backoff { base: Duration::from_secs(15), cap: Duration::from_secs(900) },
        lease: Duration::from_secs(60),
        concurrency: 10,
        sent_record_retries: (Duration::from_millis(1), Duration::from_millis(8)),
        retry_budget: RETRY_BUDGET,
        send_margin: Duration::from_secs(5),
        throttle_backoff: crate::domain::backoff::Backoff {
            base: Duration::from_millis(2),
            cap: Duration::from_millis(16),
        },
        quiet_hours: Default::default(),
    }
}

/// A rate the tests never wait for (a slot every millisecond).
fn fast() -> SendRate {
    SendRate::new(1000.0).unwrap()
}

/// A dispatcher on the in-memory ports, the notification logged and its user known.
fn dispatcher(transactional_limit: usize) -> TestDispatcher {
    let mut log = MemoryLog::default();
    log.caller = attempt;
    log.insert(crate::memory::logged(ID, DELIVERY, Channel::Sms, DeliveryStatus::Queued));
    let users = MemoryUsers::default();
    users.profiles.lock().unwrap().insert(user(), profile());
    Dispatcher::new(
        ScriptedSms::default(),
        log,
        MemoryRedelivery::default(),
        users,
        MemoryAllowance::new(transactional_limit),
        MemoryCounters::default(),
        Pacer::new(MemoryTimeline::default(), fast()),
        settings(),
    )
}

/// A batch of `records` in an invocation with `seconds` left.
fn batch(records: usize, seconds: i64) -> Batch {
    Batch {
        demand: BatchDemand::new(records, None),
        latest_slot_us: crate::time::now_epoch_micros() + seconds * 1_000_000 - 5_000_000,
        users: vec![user()],
        profiles: tokio::sync::OnceCell::new(),
    }
}

fn message(transactional: bool) -> DeliveryMessage<SmsContent> {
    DeliveryMessage {
        notification_id: ID.into(),
        delivery_id: DELIVERY.into(),
        user_id: user(),
        app_key: "ak_0123456789abcdef0123".into(),
        template: TemplateName::parse("t").unwrap(),
        transactional,
        quiet_hours: true,
        deliver_after: None,
        content: SmsContent { to: PhoneNumber::parse("+12015550123").unwrap(), body: "hi".into() },
    }
}

/// The message as SQS hands it out for the `receive`th time.
fn receive(receive: u32, transactional: bool) -> SqsRecord<DeliveryMessage<SmsContent>> {
    let body = message(transactional);
    SqsRecord {
        message_id: "m-1".into(),
        receipt_handle: format!("r-{receive}"),
        receive_count: receive,
        source: SOURCE.into(),
        raw_body: serde_json::to_string(&body).unwrap(),
        body,
    }
}

impl TestDispatcher {
    fn status(&self) -> DeliveryStatus {
        self.log.delivery(ID, DELIVERY).unwrap().status
    }

    fn events(&self) -> Vec<Event> {
        self.log.applied.lock().unwrap().iter().map(|applied| applied.event).collect()
    }

    /// Delivers the message's `receive`th receive, as attempt `receive`.
    async fn receive_as(&self, receive: u32) -> Disposition {
        self.deliver_as(receive, super::tests::receive(receive, false)).await
    }

    async fn deliver_as(&self, attempt: u32, record: SqsRecord<DeliveryMessage<SmsContent>>) -> Disposition {
        ATTEMPT.scope(attempt, self.deliver(record, &batch(1, 30))).await
    }

    fn delivery(&self) -> crate::domain::notification::DeliveryRecord {
        self.log.delivery(ID, DELIVERY).unwrap()
    }

    fn pacer_timeline(&self) -> &MemoryTimeline {
        self.pacer.timeline()
    }

    fn pacer_takes(&self) -> usize {
        self.pacer.timeline().takes().len()
    }
}

#[tokio::test]
async fn a_delivery_is_claimed_sent_and_recorded_once() {
    let dispatcher = dispatcher(10);
    assert_eq!(dispatcher.receive_as(1).await, Disposition::Done);
    assert_eq!(dispatcher.status(), DeliveryStatus::Sent);
    assert_eq!(dispatcher.events(), [Event::Claim, Event::Sent]);
    assert_eq!(dispatcher.provider.sends(), 1);
    // SQS hands the message out again (a duplicate, or a lost delete): acknowledged, not sent.
    assert_eq!(dispatcher.receive_as(2).await, Disposition::Done);
    assert_eq!(dispatcher.provider.sends(), 1);
    assert_eq!(dispatcher.log.delivery(ID, DELIVERY).unwrap().provider_message_id.as_deref(), Some("sms-1"));
}

#[tokio::test]
async fn a_transient_failure_goes_back_to_queued_with_a_backoff_and_is_sent_on_the_next_receive() {
    let dispatcher = dispatcher(10);
    dispatcher.provider.answer(1, Some(FailureClass::Transient));
    assert_eq!(dispatcher.receive_as(1).await, Disposition::Retry);
    let delivery = dispatcher.delivery();
    assert_eq!((delivery.status, delivery.error.unwrap().code.as_str()), (DeliveryStatus::Queued, "InternalError"));
    assert_eq!(delivery.failures, 1);
    let delays = dispatcher.redelivery.delays.lock().unwrap().clone();
    assert!(delays[0].1 >= Duration::from_millis(7500) && delays[0].1 <= Duration::from_secs(15), "{delays:?}");
    assert_eq!(dispatcher.receive_as(2).await, Disposition::Done);
    assert_eq!(dispatcher.events(), [Event::Claim, Event::Retrying, Event::Claim, Event::Sent]);
}

#[tokio::test]
async fn the_failure_that_spends_the_retry_budget_parks_the_delivery_in_the_dlq_and_a_redrive_renews_it() {
    let dispatcher = dispatcher(10);
    for _ in 0..RETRY_BUDGET {
        dispatcher.provider.answer(1, Some(FailureClass::Transient));
    }
    for receive in 1..RETRY_BUDGET {
        assert_eq!(dispatcher.receive_as(receive).await, Disposition::Retry);
        assert_eq!(dispatcher.status(), DeliveryStatus::Queued);
    }
    // The last failure: the message is put in the DLQ by the dispatcher and deleted here.
    assert_eq!(dispatcher.receive_as(RETRY_BUDGET).await, Disposition::Done);
    assert_eq!((dispatcher.status(), dispatcher.delivery().failures), (DeliveryStatus::Parked, RETRY_BUDGET));
    let parked = dispatcher.redelivery.dead_letters.lock().unwrap().clone();
    assert_eq!(parked, vec![receive(1, false).raw_body], "the message as received");
    // On-call redrives the DLQ: the message comes back as a new one, with a fresh budget.
    dispatcher.provider.answer(1, Some(FailureClass::Transient));
    assert_eq!(dispatcher.receive_as(1).await, Disposition::Retry);
    assert_eq!((dispatcher.status(), dispatcher.delivery().failures), (DeliveryStatus::Queued, 1));
    assert_eq!(dispatcher.receive_as(2).await, Disposition::Done);
    assert_eq!(dispatcher.status(), DeliveryStatus::Sent);
    let events = dispatcher.events();
    assert_eq!(
        events[events.len() - 5..],
        [Event::Parked, Event::ClaimAfterRedrive, Event::Retrying, Event::Claim, Event::Sent]
    );
}

#[tokio::test]
async fn a_throttled_send_waits_for_a_later_slot_and_spends_nothing() {
    let dispatcher = dispatcher(10);
    dispatcher.provider.answer(1, Some(FailureClass::Throttled));
    dispatcher.provider.answer(1, Some(FailureClass::Throttled));
    assert_eq!(dispatcher.receive_as(1).await, Disposition::Done);
    let delivery = dispatcher.delivery();
    assert_eq!((delivery.status, delivery.failures, delivery.waits), (DeliveryStatus::Sent, 0, 0));
    assert_eq!(dispatcher.provider.sends(), 1);
    assert_eq!(dispatcher.events(), [Event::Claim, Event::Sent], "waited within the invocation");
    assert_eq!(dispatcher.pacer_takes(), 3, "the batch's slot, then one per throttle");
}

#[tokio::test]
async fn throttling_past_the_invocations_deadline_waits_through_the_queue_without_spending_the_budget() {
    let mut dispatcher = dispatcher(10);
    // Pauses after a throttle of 1-2 s, and invocations with a second left before their margin.
    dispatcher.settings.throttle_backoff =
        crate::domain::backoff::Backoff { base: Duration::from_secs(2), cap: Duration::from_secs(2) };
    // More throttles than a whole budget: none of them counts.
    for _ in 0..RETRY_BUDGET * 2 {
        dispatcher.provider.answer(1, Some(FailureClass::Throttled));
    }
    let mut receive = 1;
    loop {
        let record = super::tests::receive(receive, false);
        let disposition = ATTEMPT.scope(receive, dispatcher.deliver(record, &batch(1, 6))).await;
        if disposition == Disposition::Done {
            break;
        }
        assert_eq!(dispatcher.status(), DeliveryStatus::Queued);
        receive += 1;
    }
    let delivery = dispatcher.delivery();
    assert_eq!((delivery.status, delivery.failures), (DeliveryStatus::Sent, 0));
    assert_eq!(delivery.waits, RETRY_BUDGET * 2, "every throttle a wait");
    assert_eq!(delivery.error.unwrap().class, FailureClass::Throttled);
    assert!(dispatcher.redelivery.dead_letters.lock().unwrap().is_empty());
    let delays = dispatcher.redelivery.delays.lock().unwrap().clone();
    assert!(delays.windows(2).all(|pair| pair[1].1 >= pair[0].1 / 2), "backing off: {delays:?}");
}

#[tokio::test]
async fn a_slot_after_the_deadline_waits_through_the_queue_until_it_comes() {
    let dispatcher = dispatcher(10);
    // Another instance took the next 20 seconds of the channel's slots.
    let now = crate::time::now_epoch_micros();
    let mark = FlowMark { lane: Lane::Bulk, slots: 20_000, rate: fast(), oldest_enqueued_ms: None };
    dispatcher.pacer_timeline().take(20_000_000, now, mark).await.unwrap();
    let disposition = ATTEMPT.scope(1, dispatcher.deliver(receive(1, false), &batch(1, 10))).await;
    assert_eq!(disposition, Disposition::Retry);
    let delivery = dispatcher.delivery();
    assert_eq!((delivery.status, delivery.waits, delivery.failures), (DeliveryStatus::Queued, 1, 0));
    assert_eq!(dispatcher.events(), [Event::Claim, Event::Waiting]);
    let (_, delay) = dispatcher.redelivery.delays.lock().unwrap()[0].clone();
    assert!(delay >= Duration::from_secs(19) && delay <= Duration::from_secs(20), "back near its slot: {delay:?}");
    assert_eq!(dispatcher.provider.sends(), 0);
}

#[tokio::test]
async fn attempts_that_keep_dying_spend_the_budget_and_park_without_another_send() {
    let dispatcher = dispatcher(10);
    let now = crate::time::now_epoch_millis();
    for attempt in 0..=RETRY_BUDGET {
        // Each attempt claims and dies (a crash or a timeout): its lease runs out.
        let (id, delivery_id) = (ID.into(), DELIVERY.into());
        let claim = dispatcher.log.claim(&id, &delivery_id, Channel::Sms, now, Duration::from_secs(60)).await;
        assert!(matches!(claim.unwrap(), Claim::Taken { failures, .. } if failures == attempt));
        dispatcher.log.expire_leases();
    }
    assert_eq!(dispatcher.receive_as(1).await, Disposition::Done);
    assert_eq!(dispatcher.status(), DeliveryStatus::Parked);
    assert_eq!(dispatcher.delivery().error.unwrap().code, "RetryBudgetSpent");
    assert_eq!((dispatcher.provider.sends(), dispatcher.redelivery.dead_letters.lock().unwrap().len()), (0, 1));
}

#[tokio::test]
async fn a_permanent_failure_is_recorded_and_never_retried() {
    let dispatcher = dispatcher(10);
    dispatcher.provider.answer(1, Some(FailureClass::Permanent));
    assert_eq!(dispatcher.receive_as(1).await, Disposition::Done);
    assert_eq!(dispatcher.status(), DeliveryStatus::Failed);
    assert_eq!(*dispatcher.provider.permanent_failures.lock().unwrap(), 1);
    assert_eq!(dispatcher.receive_as(2).await, Disposition::Done, "a redelivered failed message is acknowledged");
    assert_eq!(dispatcher.events(), [Event::Claim, Event::Failed]);
}

#[tokio::test]
async fn deliveries_are_skipped_for_their_reasons_and_transactional_ones_pass_the_rate_limit() {
    // No allowance left: a non-transactional delivery is rate-limited, a transactional one sent.
    let dispatcher = dispatcher(0);
    assert_eq!(dispatcher.deliver_as(1, receive(1, false)).await, Disposition::Done);
    let delivery = dispatcher.delivery();
    assert_eq!((delivery.status, delivery.skip_reason), (DeliveryStatus::Skipped, Some(SkipReason::RateLimited)));
    let dispatcher = super::tests::dispatcher(0);
    assert_eq!(dispatcher.deliver_as(1, receive(1, true)).await, Disposition::Done);
    assert_eq!(dispatcher.status(), DeliveryStatus::Sent);

    let opted_out = super::tests::dispatcher(10);
    opted_out.users.profiles.lock().unwrap().get_mut(&user()).unwrap().preferences.sms = false;
    opted_out.receive_as(1).await;
    assert_eq!(opted_out.log.delivery(ID, DELIVERY).unwrap().skip_reason, Some(SkipReason::OptedOut));
    let deleted = super::tests::dispatcher(10);
    deleted.users.profiles.lock().unwrap().clear();
    deleted.receive_as(1).await;
    assert_eq!(deleted.log.delivery(ID, DELIVERY).unwrap().skip_reason, Some(SkipReason::UserDeleted));
    assert_eq!(opted_out.provider.sends() + deleted.provider.sends(), 0);
}

#[tokio::test]
async fn a_batchs_users_are_read_once_for_all_its_records() {
    let dispatcher = dispatcher(10);
    let ids = ["n-2", "n-3"];
    for id in ids {
        dispatcher.log.insert(crate::memory::logged(id, DELIVERY, Channel::Sms, DeliveryStatus::Queued));
    }
    let batch = batch(3, 30);
    let records = [ID, ids[0], ids[1]].map(|id| {
        let mut record = receive(1, false);
        record.body.notification_id = id.into();
        record
    });
    let outcomes = futures::future::join_all(records.map(|record| dispatcher.deliver(record, &batch))).await;
    assert_eq!(outcomes, [Disposition::Done; 3]);
    assert_eq!(dispatcher.provider.sends(), 3);
    assert_eq!(*dispatcher.users.reads.lock().unwrap(), [1], "one read, of the batch's one user");

    // A record whose user the batch's read did not ask for reads its own.
    let unlisted = Batch { users: Vec::new(), ..super::tests::batch(1, 30) };
    let dispatcher = super::tests::dispatcher(10);
    assert_eq!(dispatcher.deliver(receive(1, false), &unlisted).await, Disposition::Done);
    assert_eq!(dispatcher.status(), DeliveryStatus::Sent);
    assert_eq!(*dispatcher.users.reads.lock().unwrap(), [1]);
}

#[tokio::test]
async fn a_held_lease_sends_the_message_back_until_it_ends_and_an_expired_one_is_taken_over() {
    let dispatcher = dispatcher(10);
    let now = crate::time::now_epoch_millis();
    let Claim::Taken { lease: first, .. } =
        dispatcher.log.claim(&ID.into(), &DELIVERY.into(), Channel::Sms, now, Duration::from_secs(60)).await.unwrap()
    else {
        panic!("claimed")
    };
    // Another receive while the first attempt holds the lease: back after the lease ends.
    assert_eq!(dispatcher.receive_as(2).await, Disposition::Retry);
    let (_, delay) = dispatcher.redelivery.delays.lock().unwrap()[0].clone();
    assert!(delay >= Duration::from_secs(59), "{delay:?}");
    assert_eq!(dispatcher.provider.sends(), 0);
    // The first attempt dies; its lease runs out; the next receive takes the delivery over.
    dispatcher.log.expire_leases();
    assert_eq!(dispatcher.receive_as(3).await, Disposition::Done);
    assert_eq!(dispatcher.status(), DeliveryStatus::Sent);
    // The first attempt was slow, not dead: its late outcome is not recorded over the second's.
    let late = AttemptOutcome::Retrying(failure(&crate::memory::transient("Publish")));
    assert!(!dispatcher.log.record(&ID.into(), &DELIVERY.into(), Channel::Sms, first, &late).await.unwrap());
    assert_eq!(dispatcher.status(), DeliveryStatus::Sent);
}

#[tokio::test]
async fn an_attempt_that_outlived_its_lease_records_nothing_over_the_attempt_that_took_over() {
    let dispatcher = dispatcher(10);
    let (now, lease) = (crate::time::now_epoch_millis(), Duration::from_secs(60));
    let Claim::Taken { lease: slow, .. } =
        dispatcher.log.claim(&ID.into(), &DELIVERY.into(), Channel::Sms, now, lease).await.unwrap()
    else {
        panic!("claimed")
    };
    dispatcher.log.expire_leases();
    let Claim::Taken { lease: taker, failures, .. } =
        dispatcher.log.claim(&ID.into(), &DELIVERY.into(), Channel::Sms, now + 1, lease).await.unwrap()
    else {
        panic!("taken over")
    };
    assert_eq!(failures, 1, "the attempt taken over counts as failed");
    // The slow attempt's outcome arrives while the one that took over is still sending.
    let late = AttemptOutcome::Retrying(failure(&crate::memory::transient("Publish")));
    assert!(!dispatcher.log.record(&ID.into(), &DELIVERY.into(), Channel::Sms, slow, &late).await.unwrap());
    let delivery = dispatcher.log.delivery(ID, DELIVERY).unwrap();
    assert_eq!((delivery.status, delivery.lease_until), (DeliveryStatus::Sending, Some(taker.until_ms())));
    let sent = AttemptOutcome::Sent { provider: "sns".into(), provider_message_id: "p".into() };
    assert!(dispatcher.log.record(&ID.into(), &DELIVERY.into(), Channel::Sms, taker, &sent).await.unwrap());
}

#[tokio::test]
async fn a_refused_sent_write_is_retried_and_the_message_is_sent_once() {
    let dispatcher = dispatcher(10);
    dispatcher.log.writes.push(1, None); // the claim
    dispatcher.log.writes.push(1, Some(Fault::Refused));
    dispatcher.log.writes.push(1, Some(Fault::AnswerLost)); // applied: the retry meets its own write
    assert_eq!(dispatcher.receive_as(1).await, Disposition::Done);
    assert_eq!(dispatcher.status(), DeliveryStatus::Sent);
    assert_eq!(dispatcher.provider.sends(), 1);
}

#[tokio::test]
async fn a_sent_write_refused_past_its_retries_keeps_the_lease_the_documented_window() {
    let dispatcher = dispatcher(10);
    dispatcher.log.writes.push(1, None); // the claim
    for _ in 0..5 {
        dispatcher.log.writes.push(1, Some(Fault::Refused));
    }
    assert_eq!(dispatcher.receive_as(1).await, Disposition::Retry);
    // Not released (that would hand the message to a second send at once): held until the lease ends.
    assert_eq!(dispatcher.status(), DeliveryStatus::Sending);
    let (_, delay) = dispatcher.redelivery.delays.lock().unwrap()[0].clone();
    assert!(delay >= Duration::from_secs(59), "{delay:?}");
    // Only when the lease has run out can a later receive send again: the one duplicate window.
    dispatcher.log.expire_leases();
    assert_eq!(dispatcher.receive_as(2).await, Disposition::Done);
    assert_eq!(dispatcher.provider.sends(), 2);
}

#[tokio::test]
async fn a_message_naming_no_logged_delivery_goes_to_the_dlq() {
    let dispatcher = dispatcher(10);
    let mut stranger = receive(1, false);
    stranger.body.notification_id = "n-unknown".into();
    stranger.raw_body = "the stranger".into();
    assert_eq!(dispatcher.deliver_as(1, stranger).await, Disposition::Done);
    assert_eq!(dispatcher.provider.sends(), 0);
    assert_eq!(*dispatcher.redelivery.dead_letters.lock().unwrap(), vec!["the stranger"]);
}

/// One run of the property: two receives of the same message at once (SQS delivers at least
/// once), with the provider's and the log's answers and their interleaving scripted, either
/// attempt possibly crashing after some steps, and the email-style feedback `delivered` arriving
/// in between; then SQS redelivers until the delivery has an outcome.
#[derive(Clone, Debug)]
struct Run {
    /// (yields before answering, the provider's answer) per send.
    provider: Vec<(u32, Option<FailureClass>)>,
    /// (yields, fault) per log write.
    writes: Vec<(u32, Option<Fault>)>,
    /// After how many polls each of the two first attempts crashes (none: it finishes).
    crashes: [Option<u32>; 2],
    /// Polls before the feedback arrives.
    feedback_after: u32,
}

fn runs() -> impl Strategy<Value = Run> {
    let answer = (
        0u32..4,
        prop_oneof![
            4 => Just(None),
            2 => Just(Some(FailureClass::Transient)),
            1 => Just(Some(FailureClass::Throttled)),
            1 => Just(Some(FailureClass::Permanent)),
        ],
    );
    let write =
        (0u32..4, prop_oneof![6 => Just(None), 1 => Just(Some(Fault::Refused)), 1 => Just(Some(Fault::AnswerLost))]);
    (
        proptest::collection::vec(answer, 0..6),
        proptest::collection::vec(write, 0..12),
        [proptest::option::of(1u32..40), proptest::option::of(1u32..40)],
        0u32..40,
    )
        .prop_map(|(provider, writes, crashes, feedback_after)| Run { provider, writes, crashes, feedback_after })
}

/// A future that stops being polled after `polls` polls, as a function that crashes does.
struct Crash<F> {
    future: std::pin::Pin<Box<F>>,
    polls: Option<u32>,
}

impl<F: std::future::Future> std::future::Future for Crash<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: std::pin::Pin<&mut Self>, context: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        if let Some(polls) = self.polls.as_mut() {
            if *polls == 0 {
                return std::task::Poll::Ready(None);
            }
            *polls -= 1;
        }
        self.future.as_mut().poll(context).map(Some)
    }
}

async fn feedback_after(log: &MemoryLog, polls: u32) {
    for _ in 0..polls {
        tokio::task::yield_now().await;
    }
    log.record_feedback(&ID.into(), &DELIVERY.into(), Channel::Sms, Event::Delivered, None).await.ok();
}

fn check(run: Run) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let dispatcher = dispatcher(10);
        for (yields, answer) in &run.provider {
            dispatcher.provider.answer(*yields, *answer);
        }
        for (yields, fault) in &run.writes {
            dispatcher.log.writes.push(*yields, *fault);
        }
        let first = Crash { future: Box::pin(dispatcher.receive_as(1)), polls: run.crashes[0] };
        let second = Crash { future: Box::pin(dispatcher.receive_as(2)), polls: run.crashes[1] };
        let (first, second, ()) = tokio::join!(first, second, feedback_after(&dispatcher.log, run.feedback_after));
        let crashed = [first.is_none(), second.is_none()];
        // SQS hands the message out again until it is deleted or parked (leases run out in
        // between: a visibility timeout is longer than a lease).
        let mut pending = [first, second].iter().any(|disposition| *disposition != Some(Disposition::Done));
        let mut receive = 3;
        while pending && receive <= RETRY_BUDGET + 3 {
            dispatcher.log.expire_leases();
            pending = dispatcher.receive_as(receive).await == Disposition::Retry
                && dispatcher.status() != DeliveryStatus::Parked;
            receive += 1;
        }

        let delivery = dispatcher.log.delivery(ID, DELIVERY).unwrap();
        let accepted = dispatcher.provider.accepted.lock().unwrap().clone();
        let applied = dispatcher.log.applied.lock().unwrap().clone();
        // The documented window: an attempt whose send the provider accepted but that never
        // recorded it (it crashed, or the write was refused past its retries). Each such
        // attempt may cost one more send; nothing else may.
        let recorded = |attempt: u32| applied.iter().any(|change| change.by == attempt && change.event == Event::Sent);
        let windows = accepted.iter().filter(|attempt| !recorded(**attempt)).count();
        prop_assert!(
            accepted.len() <= 1 + windows,
            "{} sends from attempts {accepted:?}, {windows} in the window; crashed {crashed:?}: {run:?} {applied:?}",
            accepted.len()
        );
        let recorded_sent = applied.iter().filter(|change| change.event == Event::Sent).count();
        // At most one `sent` is recorded, and never a step back from an outcome.
        prop_assert!(recorded_sent <= 1, "{applied:?}");
        let mut finished = false;
        for change in &applied {
            prop_assert!(
                !(finished
                    && matches!(
                        change.event,
                        Event::Claim | Event::ClaimAfterRedrive | Event::TakeOver | Event::Retrying | Event::Parked
                    )),
                "{applied:?}"
            );
            finished |= change.to.is_final();
        }
        // Feedback never moves a delivery that was not sent.
        if applied.iter().any(|change| change.event == Event::Delivered) {
            prop_assert!(recorded_sent == 1, "{applied:?}");
        }
        // Whatever happened, the delivery ends with an outcome, or parked for on-call.
        prop_assert!(delivery.status.is_final() || delivery.status == DeliveryStatus::Parked, "{delivery:?} {run:?}");
        if delivery.status == DeliveryStatus::Sent || delivery.status == DeliveryStatus::Delivered {
            prop_assert!(!accepted.is_empty());
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn duplicate_attempts_and_feedback_in_any_order_send_at_most_once_outside_the_window(run in runs()) {
        check(run)?;
    }
}

/// The message of a delivery scheduled for `due_ms`, as SQS hands it out.
fn scheduled_receive(receive: u32, due_ms: i64) -> SqsRecord<DeliveryMessage<SmsContent>> {
    let mut record = super::tests::receive(receive, false);
    record.body.deliver_after = Some(due_ms);
    record.raw_body = serde_json::to_string(&record.body).unwrap();
    record
}

/// A dispatcher whose delivery is logged `scheduled` for `due_ms`.
fn scheduled_dispatcher(due_ms: i64) -> TestDispatcher {
    let dispatcher = dispatcher(10);
    let mut record = crate::memory::logged(ID, DELIVERY, Channel::Sms, DeliveryStatus::Scheduled);
    record.deliveries.get_mut(DELIVERY).unwrap().deliver_after = Some(due_ms);
    dispatcher.log.insert(record);
    dispatcher
}

#[tokio::test]
async fn a_message_that_comes_before_its_time_waits_again_without_touching_the_log() {
    let due = crate::time::now_epoch_millis() + 3_600_000;
    let dispatcher = scheduled_dispatcher(due);
    let record = scheduled_receive(1, due);
    let raw = record.raw_body.clone();
    assert_eq!(dispatcher.deliver_as(1, record).await, Disposition::Done);
    assert_eq!(dispatcher.events(), [], "no claim, no write");
    assert_eq!(*dispatcher.redelivery.deferred.lock().unwrap(), [(raw, due)]);
    assert_eq!(dispatcher.provider.sends(), 0);
}

#[tokio::test]
async fn a_due_scheduled_delivery_is_released_and_sent_once() {
    let due = crate::time::now_epoch_millis() - 1;
    let dispatcher = scheduled_dispatcher(due);
    assert_eq!(dispatcher.deliver_as(1, scheduled_receive(1, due)).await, Disposition::Done);
    assert_eq!(dispatcher.events(), [Event::Release, Event::Sent]);
    // A second copy (a replay's, or a schedule that fired twice): acknowledged, not sent.
    assert_eq!(dispatcher.deliver_as(2, scheduled_receive(2, due)).await, Disposition::Done);
    assert_eq!(dispatcher.provider.sends(), 1);
}

#[tokio::test]
async fn a_stale_copy_of_a_delivery_held_until_later_is_acknowledged_unsent() {
    let later = crate::time::now_epoch_millis() + 3_600_000;
    let dispatcher = scheduled_dispatcher(later);
    let stale = scheduled_receive(1, crate::time::now_epoch_millis() - 1);
    assert_eq!(dispatcher.deliver_as(1, stale).await, Disposition::Done);
    assert_eq!((dispatcher.status(), dispatcher.provider.sends()), (DeliveryStatus::Scheduled, 0));
}

/// A user whose quiet hours (UTC) cover now, for about a minute or more.
fn in_quiet_hours() -> UserProfile {
    let now = time::OffsetDateTime::now_utc();
    let minutes = u16::from(now.hour()) * 60 + u16::from(now.minute());
    let at = |m: u16| format!("{:02}:{:02}", (m % 1440) / 60, m % 60);
    let window = serde_json::json!({"start": at(minutes), "end": at(minutes + 2)});
    let mut profile = profile();
    profile.preferences.quiet_hours = Some(serde_json::from_value(window).unwrap());
    profile
}

#[tokio::test]
async fn a_delivery_in_the_users_quiet_hours_is_held_until_they_end_and_then_sent() {
    let dispatcher = dispatcher(10);
    dispatcher.users.profiles.lock().unwrap().insert(user(), in_quiet_hours());
    assert_eq!(dispatcher.receive_as(1).await, Disposition::Done);
    assert_eq!(dispatcher.events(), [Event::Claim, Event::Hold]);
    let held = dispatcher.delivery();
    let until = held.deliver_after.unwrap();
    assert_eq!(held.status, DeliveryStatus::Scheduled);
    assert!(until > crate::time::now_epoch_millis() && until % 60_000 == 0, "{until}");
    let deferred = dispatcher.redelivery.deferred.lock().unwrap().clone();
    let copy: DeliveryMessage<SmsContent> = serde_json::from_str(&deferred[0].0).unwrap();
    assert_eq!((copy.deliver_after, deferred[0].1), (Some(until), until), "the copy says when it is due");
    assert_eq!(dispatcher.provider.sends(), 0);
    assert_eq!(dispatcher.allowance.taken(), 0, "holding spends none of the user's hourly allowance");
    // Once the window has ended (the user cleared it, here), the copy releases it.
    dispatcher.users.profiles.lock().unwrap().insert(user(), profile());
    let mut copy_record = scheduled_receive(2, until);
    copy_record.body.deliver_after = Some(crate::time::now_epoch_millis() - 1);
    let mut record = dispatcher.log.get(&ID.into()).await.unwrap().unwrap();
    record.deliveries.get_mut(DELIVERY).unwrap().deliver_after = Some(crate::time::now_epoch_millis() - 1);
    dispatcher.log.insert(record);
    assert_eq!(dispatcher.deliver_as(2, copy_record).await, Disposition::Done);
    assert_eq!(dispatcher.events(), [Event::Claim, Event::Hold, Event::Release, Event::Sent]);
}

#[tokio::test]
async fn transactional_messages_and_messages_that_do_not_ask_are_never_held() {
    for (transactional, quiet_hours) in [(true, true), (false, false)] {
        let dispatcher = dispatcher(10);
        dispatcher.users.profiles.lock().unwrap().insert(user(), in_quiet_hours());
        let mut record = receive(1, transactional);
        record.body.quiet_hours = quiet_hours;
        assert_eq!(dispatcher.deliver_as(1, record).await, Disposition::Done);
        assert_eq!(dispatcher.events(), [Event::Claim, Event::Sent], "transactional {transactional}");
    }
}

fn routed(route: Vec<&'static str>) -> TestDispatcher {
    let dispatcher = dispatcher(10);
    *dispatcher.provider.route.lock().unwrap() = route;
    dispatcher
}

#[tokio::test]
async fn a_transient_failure_moves_the_next_attempt_to_the_next_provider_of_the_route() {
    let dispatcher = routed(vec!["sns", "twilio"]);
    dispatcher.provider.answer(1, Some(FailureClass::Transient));
    assert_eq!(dispatcher.receive_as(1).await, Disposition::Retry);
    let failed = dispatcher.delivery();
    assert_eq!((failed.provider.as_deref(), failed.error.unwrap().provider.as_deref()), (Some("sns"), Some("sns")));
    assert_eq!(dispatcher.receive_as(2).await, Disposition::Done);
    assert_eq!(dispatcher.provider.calls(), ["sns", "twilio"]);
    let sent = dispatcher.delivery();
    assert_eq!((sent.status, sent.provider.as_deref(), sent.pinned), (DeliveryStatus::Sent, Some("twilio"), false));
    assert_eq!(dispatcher.events(), [Event::Claim, Event::Retrying, Event::Claim, Event::Reroute, Event::Sent]);
}

#[tokio::test]
async fn an_ambiguous_answer_keeps_every_later_attempt_on_the_same_provider() {
    let dispatcher = routed(vec!["twilio", "sns"]);
    dispatcher.provider.answer(1, Some(FailureClass::Ambiguous));
    dispatcher.provider.answer(1, Some(FailureClass::Transient));
    for receive in 1..=2 {
        assert_eq!(dispatcher.receive_as(receive).await, Disposition::Retry);
    }
    assert!(dispatcher.delivery().pinned);
    assert_eq!(dispatcher.receive_as(3).await, Disposition::Done);
    assert_eq!(dispatcher.provider.calls(), ["twilio", "twilio", "twilio"], "never another provider after a timeout");
    assert_eq!(dispatcher.delivery().status, DeliveryStatus::Sent);
}

#[tokio::test]
async fn an_attempt_that_died_pins_the_delivery_to_the_provider_it_was_calling() {
    let dispatcher = routed(vec!["sns", "twilio"]);
    let now = crate::time::now_epoch_millis();
    let (id, delivery_id) = (ID.into(), DELIVERY.into());
    let claim = dispatcher.log.claim(&id, &delivery_id, Channel::Sms, now - 120_000, Duration::from_secs(60)).await;
    assert!(matches!(claim.unwrap(), Claim::Taken { .. }));
    // Its lease has run out: this receive takes over, and sends through SNS alone.
    dispatcher.provider.answer(1, Some(FailureClass::Transient));
    assert_eq!(dispatcher.receive_as(2).await, Disposition::Retry);
    assert_eq!(dispatcher.receive_as(3).await, Disposition::Done);
    assert_eq!(dispatcher.provider.calls(), ["sns", "sns"]);
    assert!(dispatcher.delivery().pinned);
}

#[tokio::test]
async fn a_provider_that_does_not_serve_the_destination_hands_it_to_the_next_within_the_attempt() {
    let dispatcher = routed(vec!["twilio", "sns"]);
    dispatcher.provider.answer(1, Some(FailureClass::Unserved));
    assert_eq!(dispatcher.receive_as(1).await, Disposition::Done);
    assert_eq!(dispatcher.provider.calls(), ["twilio", "sns"]);
    let sent = dispatcher.delivery();
    assert_eq!((sent.status, sent.provider.as_deref(), sent.failures), (DeliveryStatus::Sent, Some("sns"), 0));

    let nowhere = routed(vec!["twilio", "sns"]);
    nowhere.provider.answer(1, Some(FailureClass::Unserved));
    nowhere.provider.answer(1, Some(FailureClass::Unserved));
    assert_eq!(nowhere.receive_as(1).await, Disposition::Done);
    let failed = nowhere.delivery();
    assert_eq!(failed.status, DeliveryStatus::Failed);
    let error = failed.error.unwrap();
    assert_eq!(error.class, FailureClass::Permanent);
    assert!(error.message.contains("twilio, sns"), "{}", error.message);
}
