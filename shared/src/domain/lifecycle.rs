//! The delivery state machine, in one table: every event that moves a delivery, the statuses it
//! moves it from, the guard it checks beyond the status, the status it moves it to and the
//! event it appends to the notification's timeline. The DynamoDB log derives its condition
//! expressions from this table (`store::notifications`) and the in-memory log applies it
//! (`memory`), so the two cannot disagree with each other or with this file.
//!
//! ```text
//!   queued ──claim──▶ sending ──sent──▶ sent ──delivered──▶ delivered
//!     ▲                 │ │ │ │            │  ╲                 │
//!     └────retrying─────┘ │ │ └─skipped▶ skipped   ╲─bounced/complained─┘
//!   parked ◀──parked──────┘ └──failed──▶ failed   ◀──rejected── sent
//!     └───────claim (after a redrive)──▶ sending
//!   sending (lease expired: its attempt died) ──claim──▶ sending (taken over)
//! ```
//!
//! A new status (scheduled, cancelled, waiting for quota) is a variant of `DeliveryStatus` and
//! rows here; the adapters follow.

use serde::{Deserialize, Serialize};

use super::notification::DeliveryStatus;

/// What happens to a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Event {
    /// An attempt takes the delivery, with a lease.
    Claim,
    /// The provider accepted the message.
    Sent,
    /// A transient failure: the message comes back after a backoff.
    Retrying,
    /// A transient failure on the queue's last receive: SQS moves the message to the DLQ.
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
}

/// What a transition checks beyond the delivery's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// Nothing more.
    None,
    /// The attempt recording it still holds the delivery: its lease is the delivery's (an attempt
    /// that outlived its lease, taken over by another, records nothing).
    OwnLease,
    /// Also from `sending` when the lease has expired (the attempt holding it died).
    OrExpiredLease,
}

/// A row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub event: Event,
    pub from: &'static [DeliveryStatus],
    pub guard: Guard,
    pub to: DeliveryStatus,
    pub timeline: TimelineKind,
}

use DeliveryStatus as S;

const AFTER_SEND: &[DeliveryStatus] = &[S::Sent, S::Delivered];

/// The table.
pub const TRANSITIONS: [Transition; 10] = [
    Transition {
        event: Event::Claim,
        from: &[S::Queued, S::Parked],
        guard: Guard::OrExpiredLease,
        to: S::Sending,
        timeline: TimelineKind::Sending,
    },
    Transition {
        event: Event::Sent,
        from: &[S::Sending],
        guard: Guard::OwnLease,
        to: S::Sent,
        timeline: TimelineKind::Sent,
    },
    Transition {
        event: Event::Retrying,
        from: &[S::Sending],
        guard: Guard::OwnLease,
        to: S::Queued,
        timeline: TimelineKind::Retrying,
    },
    Transition {
        event: Event::Parked,
        from: &[S::Sending],
        guard: Guard::OwnLease,
        to: S::Parked,
        timeline: TimelineKind::Parked,
    },
    Transition {
        event: Event::Failed,
        from: &[S::Sending],
        guard: Guard::OwnLease,
        to: S::Failed,
        timeline: TimelineKind::Failed,
    },
    Transition {
        event: Event::Skipped,
        from: &[S::Sending],
        guard: Guard::OwnLease,
        to: S::Skipped,
        timeline: TimelineKind::Skipped,
    },
    Transition {
        event: Event::Delivered,
        from: &[S::Sent],
        guard: Guard::None,
        to: S::Delivered,
        timeline: TimelineKind::Delivered,
    },
    Transition {
        event: Event::Bounced,
        from: AFTER_SEND,
        guard: Guard::None,
        to: S::Bounced,
        timeline: TimelineKind::Bounced,
    },
    Transition {
        event: Event::Complained,
        from: AFTER_SEND,
        guard: Guard::None,
        to: S::Complained,
        timeline: TimelineKind::Complained,
    },
    Transition {
        event: Event::Rejected,
        from: &[S::Sent],
        guard: Guard::None,
        to: S::Failed,
        timeline: TimelineKind::Failed,
    },
];

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
}

impl Transition {
    /// Whether the transition may move a delivery that is `current` at `now_ms`, recorded by
    /// the attempt holding `lease` (for [`Guard::OwnLease`]).
    pub fn allows(&self, current: Current, now_ms: i64, lease: Option<i64>) -> bool {
        let from = self.from.contains(&current.status);
        match self.guard {
            Guard::None => from,
            Guard::OwnLease => from && lease.is_some() && current.lease_until == lease,
            Guard::OrExpiredLease => {
                from || (current.status == S::Sending && current.lease_until.is_none_or(|until| until < now_ms))
            }
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
}

impl TimelineKind {
    pub const ALL: [TimelineKind; 14] = [
        TimelineKind::Accepted,
        TimelineKind::Sending,
        TimelineKind::Sent,
        TimelineKind::Retrying,
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
    ];

    /// As the timeline spells it (the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            TimelineKind::Accepted => "accepted",
            TimelineKind::Sending => "sending",
            TimelineKind::Sent => "sent",
            TimelineKind::Retrying => "retrying",
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

    const ALL: [DeliveryStatus; 9] =
        [S::Queued, S::Sending, S::Parked, S::Sent, S::Delivered, S::Bounced, S::Complained, S::Failed, S::Skipped];
    const EVENTS: [Event; 10] = [
        Event::Claim,
        Event::Sent,
        Event::Retrying,
        Event::Parked,
        Event::Failed,
        Event::Skipped,
        Event::Delivered,
        Event::Bounced,
        Event::Complained,
        Event::Rejected,
    ];
    const NOW: i64 = 1_000;
    const LEASE: i64 = 5_000;

    fn current(status: DeliveryStatus, lease_until: Option<i64>) -> Current {
        Current { status, lease_until }
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
            (Claim, S::Parked),
            (Sent, S::Sending),
            (Retrying, S::Sending),
            (Parked, S::Sending),
            (Failed, S::Sending),
            (Skipped, S::Sending),
            (Delivered, S::Sent),
            (Bounced, S::Sent),
            (Bounced, S::Delivered),
            (Complained, S::Sent),
            (Complained, S::Delivered),
            (Rejected, S::Sent),
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
        let claim = Event::Claim.transition();
        assert!(!claim.allows(current(S::Sending, Some(LEASE)), NOW, None));
        assert!(claim.allows(current(S::Sending, Some(NOW - 1)), NOW, None));
        assert!(claim.allows(current(S::Sending, None), NOW, None));
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
