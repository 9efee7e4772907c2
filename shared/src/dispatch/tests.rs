//! The dispatch loop on the in-memory ports (`crate::memory`): every path of the lifecycle,
//! the lease takeover race, the retried `sent` write, parking on the last receive, and random
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
use crate::memory::{Fault, MemoryAllowance, MemoryCounters, MemoryLog, MemoryRedelivery, MemoryUsers};

const ID: &str = "n-1";
const DELIVERY: &str = "sms";
const MAX_RECEIVES: u32 = 8;

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
}

impl ScriptedSms {
    fn answer(&self, yields: u32, failure: Option<FailureClass>) {
        self.answers.lock().unwrap().push_back((yields, failure));
    }

    fn sends(&self) -> usize {
        self.accepted.lock().unwrap().len()
    }
}

impl Provider for ScriptedSms {
    type Content = SmsContent;
    const CHANNEL: Channel = Channel::Sms;

    async fn send(
        &self,
        _message: &DeliveryMessage<SmsContent>,
        _recipient: &UserProfile,
    ) -> Result<String, DependencyError> {
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
                code: if class == FailureClass::Permanent { "InvalidParameter".into() } else { "Throttling".into() },
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
    Dispatcher<ScriptedSms, MemoryLog, MemoryRedelivery, MemoryUsers, MemoryAllowance, MemoryCounters>;

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
    }
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
        MemoryRedelivery::new(Some(MAX_RECEIVES)),
        users,
        MemoryAllowance::new(transactional_limit),
        MemoryCounters::default(),
        settings(),
    )
}

fn message(transactional: bool) -> DeliveryMessage<SmsContent> {
    DeliveryMessage {
        notification_id: ID.into(),
        delivery_id: DELIVERY.into(),
        user_id: user(),
        app_key: "ak_0123456789abcdef0123".into(),
        template: TemplateName::parse("t").unwrap(),
        transactional,
        content: SmsContent { to: PhoneNumber::parse("+12015550123").unwrap(), body: "hi".into() },
    }
}

/// The message as SQS hands it out for the `receive`th time.
fn receive(receive: u32, transactional: bool) -> SqsRecord<DeliveryMessage<SmsContent>> {
    SqsRecord {
        message_id: "m-1".into(),
        receipt_handle: format!("r-{receive}"),
        receive_count: receive,
        body: message(transactional),
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
        ATTEMPT.scope(receive, self.deliver(super::tests::receive(receive, false))).await
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
    let delivery = dispatcher.log.delivery(ID, DELIVERY).unwrap();
    assert_eq!((delivery.status, delivery.error.unwrap().code.as_str()), (DeliveryStatus::Queued, "Throttling"));
    let delays = dispatcher.redelivery.delays.lock().unwrap().clone();
    assert!(delays[0].1 >= Duration::from_millis(7500) && delays[0].1 <= Duration::from_secs(15), "{delays:?}");
    assert_eq!(dispatcher.receive_as(2).await, Disposition::Done);
    assert_eq!(dispatcher.events(), [Event::Claim, Event::Retrying, Event::Claim, Event::Sent]);
}

#[tokio::test]
async fn a_transient_failure_on_the_last_receive_parks_the_delivery_and_a_redrive_sends_it() {
    let dispatcher = dispatcher(10);
    dispatcher.provider.answer(1, Some(FailureClass::Transient));
    assert_eq!(dispatcher.receive_as(MAX_RECEIVES).await, Disposition::Retry);
    assert_eq!(dispatcher.status(), DeliveryStatus::Parked);
    // On-call redrives the DLQ: the message comes back as a new one, claimed from `parked`.
    assert_eq!(dispatcher.receive_as(1).await, Disposition::Done);
    assert_eq!(dispatcher.events(), [Event::Claim, Event::Parked, Event::Claim, Event::Sent]);
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
    assert_eq!(ATTEMPT.scope(1, dispatcher.deliver(receive(1, false))).await, Disposition::Done);
    let delivery = dispatcher.log.delivery(ID, DELIVERY).unwrap();
    assert_eq!((delivery.status, delivery.skip_reason), (DeliveryStatus::Skipped, Some(SkipReason::RateLimited)));
    let dispatcher = super::tests::dispatcher(0);
    assert_eq!(ATTEMPT.scope(1, dispatcher.deliver(receive(1, true))).await, Disposition::Done);
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
async fn a_held_lease_sends_the_message_back_until_it_ends_and_an_expired_one_is_taken_over() {
    let dispatcher = dispatcher(10);
    let now = crate::time::now_epoch_millis();
    let Claim::Taken(first) =
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
    let Claim::Taken(slow) =
        dispatcher.log.claim(&ID.into(), &DELIVERY.into(), Channel::Sms, now, lease).await.unwrap()
    else {
        panic!("claimed")
    };
    dispatcher.log.expire_leases();
    let Claim::Taken(taker) =
        dispatcher.log.claim(&ID.into(), &DELIVERY.into(), Channel::Sms, now + 1, lease).await.unwrap()
    else {
        panic!("taken over")
    };
    // The slow attempt's outcome arrives while the one that took over is still sending.
    let late = AttemptOutcome::Retrying(failure(&crate::memory::transient("Publish")));
    assert!(!dispatcher.log.record(&ID.into(), &DELIVERY.into(), Channel::Sms, slow, &late).await.unwrap());
    let delivery = dispatcher.log.delivery(ID, DELIVERY).unwrap();
    assert_eq!((delivery.status, delivery.lease_until), (DeliveryStatus::Sending, Some(taker.until_ms())));
    let sent = AttemptOutcome::Sent { provider_message_id: "p".into() };
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
async fn a_message_naming_no_logged_delivery_is_left_for_the_dlq() {
    let dispatcher = dispatcher(10);
    let mut stranger = receive(1, false);
    stranger.body.notification_id = "n-unknown".into();
    assert_eq!(ATTEMPT.scope(1, dispatcher.deliver(stranger)).await, Disposition::Retry);
    assert_eq!(dispatcher.provider.sends(), 0);
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
        prop_oneof![4 => Just(None), 2 => Just(Some(FailureClass::Transient)), 1 => Just(Some(FailureClass::Permanent))],
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
        while pending && receive <= MAX_RECEIVES + 3 {
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
                !(finished && matches!(change.event, Event::Claim | Event::Retrying | Event::Parked)),
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
