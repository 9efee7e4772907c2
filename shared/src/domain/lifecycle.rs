//! The delivery state machine, in one table: every event that moves a delivery, the statuses it
//! moves it from, the guard it checks beyond the status, the status it moves it to and the
//! event it appends to the notification's timeline. The DynamoDB log derives its condition
//! expressions from this table (`store::notifications`) and the in-memory log applies it
//! (`memory`), so the two cannot disagree with each other or with this file.
//!
//! ```text
//!   queued ──claim──▶ sending ──sent──▶ sent ──delivered──▶ delivered
//!     ▲ ▲               │ │ │ │            │  ╲                 │
//!     │ └──retrying─────┘ │ │ └─skipped▶ skipped   ╲─bounced/complained─┘
//!     └────waiting────────┤ └──failed──▶ failed   ◀──rejected── sent
//!   parked ◀──parked──────┘
//!     └───────claim after redrive──▶ sending
//!   sending (lease expired: its attempt died) ──take over──▶ sending
//!   queued, parked, scheduled ──cancel──▶ cancelled
//!   scheduled ──release (when due)──▶ sending ──held (quiet hours)──▶ scheduled
//!   sending ──rerouted (to another provider, within the attempt)──▶ sending
//!   queued, sending, parked ──receipt: sent──▶ sent
//!   queued, sending, parked, sent ──receipt: delivered / undelivered──▶ delivered / failed
//! ```
//!
//! Each row also says what it does to the delivery's retry budget (its `failures`: the failed
//! attempts since it was last redriven): an attempt that ended `retrying` or `parked`, or died
//! (taken over), spends one; one that ended `waiting` (held back by the channel's send rate,
//! or throttled by the provider) spends none and counts as a wait; a redrive starts afresh.
//!
//! A cancel moves only a delivery no attempt holds: one `sending` is never cancelled (its
//! attempt may be calling the provider), and a claim never takes a cancelled one, so a delivery
//! is sent or cancelled, never both. A scheduled delivery is released (claimed) only once it is
//! due, by whichever of its messages comes first: a second release finds it taken.
//!
//! A provider's delivery receipt (SMS) is the provider's word that it took the message, so it
//! moves the delivery from any status an attempt can leave it in: a receipt for a message whose
//! answer was lost (a timeout) finishes the delivery before its retry sends it again, and the
//! retry's claim finds it finished.

use serde::{Deserialize, Serialize};

use super::notification::DeliveryStatus;

/// What happens to a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// An attempt takes a queued delivery, with a lease.
    Claim,
    /// An attempt takes a parked delivery on-call redrove, with a fresh retry budget.
    ClaimAfterRedrive,
    /// An attempt takes over a delivery whose attempt died (its lease expired): that one failed.
    TakeOver,
    /// The provider accepted the message.
    Sent,
    /// A transient failure: the message comes back after a backoff.
    Retrying,
    /// Not a failure: the send waits for the channel's send rate (or the provider throttled
    /// it); the message comes back when there is room, and the attempt does not count.
    Waiting,
    /// A transient failure that spent the retry budget: the message goes to the DLQ.
    Parked,
    /// A permanent failure: never retried.
    Failed,
    /// Not sent, for a reason (opted out, rate-limited, …).
    Skipped,
    /// Email feedback: the receiving server accepted it.
    Delivered,
    /// Email feedback: a hard bounce.
    Bounced,
    /// Email feedback: the recipient marked it as spam.
    Complained,
    /// Email feedback: SES rejected what it had accepted.
    Rejected,
    /// The caller cancelled a delivery not yet sending (waiting in its queue, scheduled, or
    /// parked).
    Cancel,
    /// An attempt takes a scheduled delivery that is due, with a lease.
    Release,
    /// The attempt found the recipient in quiet hours: the delivery is scheduled for when they
    /// end (its message deferred until then). Not a failure, not a wait.
    Hold,
    /// The attempt moves to another provider (its first declined the destination, or the
    /// delivery fails over): recorded before calling it, so an attempt that dies calling it
    /// leaves its name for the one taking over.
    Reroute,
    /// The provider's receipt: it sent the message.
    ReceiptSent,
    /// The provider's receipt: the carrier delivered it.
    ReceiptDelivered,
    /// The provider's receipt: the carrier could not deliver it.
    ReceiptUndelivered,
}

/// What a transition checks beyond the delivery's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// Nothing more.
    None,
    /// The attempt recording it still holds the delivery: its lease is the delivery's (an attempt
    /// that outlived its lease, taken over by another, records nothing).
    OwnLease,
    /// The delivery's lease has expired (the attempt holding it died).
    ExpiredLease,
    /// The delivery is due: its `deliver_after` has passed.
    Due,
}

/// What a transition does to the delivery's retry budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Budget {
    /// Nothing.
    Keep,
    /// One more failed attempt (`failures`).
    Spend,
    /// One more wait (`waits`): not a failure.
    Wait,
    /// A fresh budget (`failures` back to 0).
    Renew,
}

/// A row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub event: Event,
    pub from: &'static [DeliveryStatus],
    pub guard: Guard,
    pub to: DeliveryStatus,
    pub timeline: TimelineKind,
    pub budget: Budget,
}

use DeliveryStatus as S;

const AFTER_SEND: &[DeliveryStatus] = &[S::Sent, S::Delivered];
/// Where an attempt can leave a delivery that its provider may have sent.
const MAYBE_SENT: &[DeliveryStatus] = &[S::Queued, S::Sending, S::Parked];
const MAYBE_SENT_OR_SENT: &[DeliveryStatus] = &[S::Queued, S::Sending, S::Parked, S::Sent];

/// The table.
pub const TRANSITIONS: [Transition; 20] = [
    row(Event::Claim, &[S::Queued], Guard::None, S::Sending, TimelineKind::Sending, Budget::Keep),
    row(Event::ClaimAfterRedrive, &[S::Parked], Guard::None, S::Sending, TimelineKind::Sending, Budget::Renew),
    row(Event::TakeOver, &[S::Sending], Guard::ExpiredLease, S::Sending, TimelineKind::Sending, Budget::Spend),
    row(Event::Sent, &[S::Sending], Guard::OwnLease, S::Sent, TimelineKind::Sent, Budget::Keep),
    row(Event::Retrying, &[S::Sending], Guard::OwnLease, S::Queued, TimelineKind::Retrying, Budget::Spend),
    row(Event::Waiting, &[S::Sending], Guard::OwnLease, S::Queued, TimelineKind::Waiting, Budget::Wait),
    row(Event::Parked, &[S::Sending], Guard::OwnLease, S::Parked, TimelineKind::Parked, Budget::Spend),
    row(Event::Failed, &[S::Sending], Guard::OwnLease, S::Failed, TimelineKind::Failed, Budget::Keep),
    row(Event::Skipped, &[S::Sending], Guard::OwnLease, S::Skipped, TimelineKind::Skipped, Budget::Keep),
    row(Event::Delivered, &[S::Sent], Guard::None, S::Delivered, TimelineKind::Delivered, Budget::Keep),
    row(Event::Bounced, AFTER_SEND, Guard::None, S::Bounced, TimelineKind::Bounced, Budget::Keep),
    row(Event::Complained, AFTER_SEND, Guard::None, S::Complained, TimelineKind::Complained, Budget::Keep),
    row(Event::Rejected, &[S::Sent], Guard::None, S::Failed, TimelineKind::Failed, Budget::Keep),
    row(
        Event::Cancel,
        &[S::Queued, S::Parked, S::Scheduled],
        Guard::None,
        S::Cancelled,
        TimelineKind::Cancelled,
        Budget::Keep,
    ),
    row(Event::Release, &[S::Scheduled], Guard::Due, S::Sending, TimelineKind::Released, Budget::Keep),
    row(Event::Hold, &[S::Sending], Guard::OwnLease, S::Scheduled, TimelineKind::HeldQuietHours, Budget::Keep),
    row(Event::Reroute, &[S::Sending], Guard::OwnLease, S::Sending, TimelineKind::Rerouted, Budget::Keep),
    row(Event::ReceiptSent, MAYBE_SENT, Guard::None, S::Sent, TimelineKind::Sent, Budget::Keep),
    row(Event::ReceiptDelivered, MAYBE_SENT_OR_SENT, Guard::None, S::Delivered, TimelineKind::Delivered, Budget::Keep),
    row(Event::ReceiptUndelivered, MAYBE_SENT_OR_SENT, Guard::None, S::Failed, TimelineKind::Failed, Budget::Keep),
];

const fn row(
    event: Event,
    from: &'static [DeliveryStatus],
    guard: Guard,
    to: DeliveryStatus,
    timeline: TimelineKind,
    budget: Budget,
) -> Transition {
    Transition { event, from, guard, to, timeline, budget }
}

/// The claims: whichever row's status and guard the delivery meets takes it for an attempt.
pub const CLAIMS: [Event; 4] = [Event::Claim, Event::ClaimAfterRedrive, Event::TakeOver, Event::Release];

impl Event {
    /// This event's row.
    pub fn transition(self) -> &'static Transition {
        TRANSITIONS.iter().find(|transition| transition.event == self).expect("every event has its row")
    }
}

/// What the guard of a transition is checked against: the delivery as it is now.
#[derive(Clone, Copy, Debug)]
pub struct Current {
    pub status: DeliveryStatus,
    /// Until when (epoch ms) an attempt holds it, while `sending`.
    pub lease_until: Option<i64>,
    /// When (epoch ms) a scheduled delivery is due.
    pub deliver_after: Option<i64>,
}

impl Transition {
    /// Whether recording it ends the attempt's lease: an outcome does; a reroute, which the
    /// attempt records on its way on, does not.
    pub fn ends_lease(&self) -> bool {
        self.guard == Guard::OwnLease && self.to != DeliveryStatus::Sending
    }

    /// Whether the transition may move a delivery that is `current` at `now_ms`, recorded by
    /// the attempt holding `lease` (for [`Guard::OwnLease`]).
    pub fn allows(&self, current: Current, now_ms: i64, lease: Option<i64>) -> bool {
        let from = self.from.contains(&current.status);
        match self.guard {
            Guard::None => from,
            Guard::OwnLease => from && lease.is_some() && current.lease_until == lease,
            Guard::ExpiredLease => from && current.lease_until.is_none_or(|until| until < now_ms),
            Guard::Due => from && current.deliver_after.is_none_or(|due| due <= now_ms),
        }
    }
}

/// What happened, as a notification's timeline names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimelineKind {
    Accepted,
    Sending,
    Sent,
    Retrying,
    /// Held back by the channel's send rate or throttled by the provider: not a failure.
    Waiting,
    Parked,
    Failed,
    Skipped,
    Delivered,
    Bounced,
    Complained,
    /// Email feedback that changes no status: a soft bounce.
    SoftBounced,
    /// On-call redrove the delivery's message from the DLQ.
    Redriven,
    Opened,
    Clicked,
    Cancelled,
    /// Logged with a `send_at` in the future: released when due.
    Scheduled,
    /// A scheduled delivery fell due and was taken for sending.
    Released,
    /// Held until the recipient's quiet hours end.
    HeldQuietHours,
    /// The attempt moved to another provider.
    Rerouted,
    /// The calling app reported that the notification led to what it was for (a purchase, a
    /// session): once per notification.
    Converted,
}

impl TimelineKind {
    pub const ALL: [TimelineKind; 21] = [
        TimelineKind::Accepted,
        TimelineKind::Sending,
        TimelineKind::Sent,
        TimelineKind::Retrying,
        TimelineKind::Waiting,
        TimelineKind::Parked,
        TimelineKind::Failed,
        TimelineKind::Skipped,
        TimelineKind::Delivered,
        TimelineKind::Bounced,
        TimelineKind::Complained,
        TimelineKind::SoftBounced,
        TimelineKind::Redriven,
        TimelineKind::Opened,
        TimelineKind::Clicked,
        TimelineKind::Cancelled,
        TimelineKind::Scheduled,
        TimelineKind::Released,
        TimelineKind::HeldQuietHours,
        TimelineKind::Rerouted,
        TimelineKind::Converted,
    ];

    /// As the timeline spells it (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            TimelineKind::Accepted => "accepted",
            TimelineKind::Sending => "sending",
            TimelineKind::Sent => "sent",
            TimelineKind::Retrying => "retrying",
            TimelineKind::Waiting => "waiting",
            TimelineKind::Parked => "parked",
            TimelineKind::Failed => "failed",
            TimelineKind::Skipped => "skipped",
            TimelineKind::Delivered => "delivered",
            TimelineKind::Bounced => "bounced",
            TimelineKind::Complained => "complained",
            TimelineKind::SoftBounced => "soft_bounced",
            TimelineKind::Redriven => "redriven",
            TimelineKind::Opened => "opened",
            TimelineKind::Clicked => "clicked",
            TimelineKind::Cancelled => "cancelled",
            TimelineKind::Scheduled => "scheduled",
            TimelineKind::Released => "released",
            TimelineKind::HeldQuietHours => "held_quiet_hours",
            TimelineKind::Rerouted => "rerouted",
            TimelineKind::Converted => "converted",
        }
    }
}

impl std::fmt::Display for TimelineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [DeliveryStatus; 11] = [
        S::Queued,
        S::Sending,
        S::Parked,
        S::Sent,
        S::Delivered,
        S::Bounced,
        S::Complained,
        S::Failed,
        S::Skipped,
        S::Cancelled,
        S::Scheduled,
    ];
    const EVENTS: [Event; 20] = [
        Event::Claim,
        Event::ClaimAfterRedrive,
        Event::TakeOver,
        Event::Sent,
        Event::Retrying,
        Event::Waiting,
        Event::Parked,
        Event::Failed,
        Event::Skipped,
        Event::Delivered,
        Event::Bounced,
        Event::Complained,
        Event::Rejected,
        Event::Cancel,
        Event::Release,
        Event::Hold,
        Event::Reroute,
        Event::ReceiptSent,
        Event::ReceiptDelivered,
        Event::ReceiptUndelivered,
    ];
    const NOW: i64 = 1_000;
    const LEASE: i64 = 5_000;

    fn current(status: DeliveryStatus, lease_until: Option<i64>) -> Current {
        Current { status, lease_until, deliver_after: None }
    }

    /// Every (event, status) pair the machine allows, for a delivery holding `LEASE` when it is
    /// `sending`, recorded by the attempt holding `LEASE`.
    fn allowed() -> Vec<(Event, DeliveryStatus)> {
        let mut allowed = Vec::new();
        for event in EVENTS {
            for status in ALL {
                let lease = (status == S::Sending).then_some(LEASE);
                if event.transition().allows(current(status, lease), NOW, Some(LEASE)) {
                    allowed.push((event, status));
                }
            }
        }
        allowed
    }

    #[test]
    fn exactly_these_transitions_are_allowed() {
        use Event::*;
        let expected = vec![
            (Claim, S::Queued),
            (ClaimAfterRedrive, S::Parked),
            (Sent, S::Sending),
            (Retrying, S::Sending),
            (Waiting, S::Sending),
            (Parked, S::Sending),
            (Failed, S::Sending),
            (Skipped, S::Sending),
            (Delivered, S::Sent),
            (Bounced, S::Sent),
            (Bounced, S::Delivered),
            (Complained, S::Sent),
            (Complained, S::Delivered),
            (Rejected, S::Sent),
            (Cancel, S::Queued),
            (Cancel, S::Parked),
            (Cancel, S::Scheduled),
            (Release, S::Scheduled),
            (Hold, S::Sending),
            (Reroute, S::Sending),
            (ReceiptSent, S::Queued),
            (ReceiptSent, S::Sending),
            (ReceiptSent, S::Parked),
            (ReceiptDelivered, S::Queued),
            (ReceiptDelivered, S::Sending),
            (ReceiptDelivered, S::Parked),
            (ReceiptDelivered, S::Sent),
            (ReceiptUndelivered, S::Queued),
            (ReceiptUndelivered, S::Sending),
            (ReceiptUndelivered, S::Parked),
            (ReceiptUndelivered, S::Sent),
        ];
        assert_eq!(allowed(), expected);
    }

    #[test]
    fn a_final_status_never_goes_back_to_sending_or_queued() {
        for status in ALL.into_iter().filter(|status| status.is_final()) {
            for event in EVENTS {
                let transition = event.transition();
                if transition.allows(current(status, None), NOW, Some(LEASE)) {
                    assert!(transition.to.is_final(), "{event:?} moves {status:?} back to {:?}", transition.to);
                }
            }
        }
    }

    #[test]
    fn an_outcome_is_recorded_only_under_the_attempts_own_lease() {
        let sending = current(S::Sending, Some(LEASE));
        assert!(Event::Sent.transition().allows(sending, NOW, Some(LEASE)));
        assert!(!Event::Sent.transition().allows(sending, NOW, Some(LEASE + 1)), "another attempt's lease");
        assert!(!Event::Sent.transition().allows(sending, NOW, None));
    }

    #[test]
    fn a_held_lease_is_not_claimed_and_an_expired_one_is_taken_over() {
        let (claim, take_over) = (Event::Claim.transition(), Event::TakeOver.transition());
        assert!(!claim.allows(current(S::Sending, Some(LEASE)), NOW, None));
        assert!(!take_over.allows(current(S::Sending, Some(LEASE)), NOW, None));
        assert!(take_over.allows(current(S::Sending, Some(NOW - 1)), NOW, None));
        assert!(take_over.allows(current(S::Sending, None), NOW, None));
        assert!(!take_over.allows(current(S::Queued, None), NOW, None));
    }

    #[test]
    fn failures_and_deaths_spend_the_budget_waits_do_not_and_a_redrive_renews_it() {
        let spending: Vec<Event> =
            TRANSITIONS.iter().filter(|row| row.budget == Budget::Spend).map(|row| row.event).collect();
        assert_eq!(spending, [Event::TakeOver, Event::Retrying, Event::Parked]);
        assert_eq!(Event::Waiting.transition().budget, Budget::Wait);
        assert_eq!(Event::ClaimAfterRedrive.transition().budget, Budget::Renew);
    }

    #[test]
    fn exactly_one_claim_takes_any_delivery_that_can_be_taken() {
        for status in ALL {
            for lease in [None, Some(NOW - 1), Some(LEASE)] {
                let taking = CLAIMS.iter().filter(|claim| claim.transition().allows(current(status, lease), NOW, None));
                assert!(taking.count() <= 1, "{status:?} {lease:?}");
            }
        }
    }

    #[test]
    fn nothing_sending_or_finished_is_cancelled_and_nothing_cancelled_is_claimed() {
        let cancel = Event::Cancel.transition();
        for status in ALL {
            for lease in [None, Some(NOW - 1), Some(LEASE)] {
                let cancellable = cancel.allows(current(status, lease), NOW, None);
                assert_eq!(cancellable, matches!(status, S::Queued | S::Parked | S::Scheduled), "{status:?} {lease:?}");
            }
        }
        for claim in CLAIMS {
            assert!(!claim.transition().allows(current(S::Cancelled, None), NOW, None), "{claim:?}");
        }
    }

    #[test]
    fn a_scheduled_delivery_is_released_only_when_due_and_a_hold_needs_the_lease() {
        let release = Event::Release.transition();
        let scheduled = |due| Current { status: S::Scheduled, lease_until: None, deliver_after: Some(due) };
        assert!(!release.allows(scheduled(NOW + 1), NOW, None), "not yet due");
        assert!(release.allows(scheduled(NOW), NOW, None));
        assert!(!Event::Claim.transition().allows(scheduled(NOW - 1), NOW, None), "only the release takes it");
        let hold = Event::Hold.transition();
        assert!(hold.allows(current(S::Sending, Some(LEASE)), NOW, Some(LEASE)));
        assert!(!hold.allows(current(S::Sending, Some(LEASE)), NOW, Some(LEASE + 1)));
        assert_eq!((hold.to, hold.budget), (S::Scheduled, Budget::Keep));
    }

    #[test]
    fn a_receipt_finishes_a_delivery_whose_answer_was_lost_and_never_reopens_one() {
        for receipt in [Event::ReceiptSent, Event::ReceiptDelivered, Event::ReceiptUndelivered] {
            let transition = receipt.transition();
            assert!(transition.allows(current(S::Queued, None), NOW, None), "{receipt:?}: a retry is pending");
            assert!(!transition.allows(current(S::Cancelled, None), NOW, None), "{receipt:?}: never sent");
            assert!(!transition.allows(current(S::Scheduled, None), NOW, None), "{receipt:?}: never sent");
            assert!(transition.to.is_final());
        }
        let reroute = Event::Reroute.transition();
        assert!(!reroute.allows(current(S::Sending, Some(LEASE)), NOW, Some(LEASE + 1)), "another attempt's lease");
    }

    #[test]
    fn timeline_kinds_are_spelled_as_serde_spells_them() {
        for kind in TimelineKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }

    #[test]
    fn every_event_has_one_row() {
        for event in EVENTS {
            assert_eq!(TRANSITIONS.iter().filter(|transition| transition.event == event).count(), 1, "{event:?}");
        }
    }
}
