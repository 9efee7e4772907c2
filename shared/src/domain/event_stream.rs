//! The event stream: what the stack publishes to its EventBridge bus, derived from committed
//! state. Every write to a notification's record that appends to its timeline shows up in the
//! table's stream with the record before and after; the events are the timeline entries the
//! write appended ([`changes`]), so there is an event for every change that happened and none
//! for a write that failed its condition. Schema: `schemas/notification-event.v1.json`.
//!
//! Published: what a caller's analytics or webhooks act on. Not published: the steps of an
//! attempt (`sending`, `retrying`, `waiting`, `released`, `rerouted`) and soft bounces, which
//! change nothing a caller can act on and would multiply the stream's cost.
//!
//! Never in an event: message content, addresses, numbers or device tokens, provider messages
//! (they can quote the address). Errors are their class and code.

use serde::{Deserialize, Serialize};

use super::channel::Channel;
use super::lifecycle::TimelineKind;
use super::notification::{DeliveryId, DeliveryStatus, NotificationRecord, SkipReason, TimelineEvent};
use crate::error::FailureClass;

/// The events' `source`, for rules to match.
pub const SOURCE: &str = "notify";
/// The version of the detail's schema: a change that could break a consumer gets a new one.
pub const SCHEMA_VERSION: &str = "1";

/// What happened, as the event's `type` and `detail-type` (`notification.sent`) name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Accepted,
    Scheduled,
    Sent,
    Failed,
    Skipped,
    Parked,
    Redriven,
    Delivered,
    Bounced,
    Complained,
    Opened,
    Clicked,
    Converted,
    Cancelled,
}

impl EventType {
    pub const ALL: [EventType; 14] = [
        EventType::Accepted,
        EventType::Scheduled,
        EventType::Sent,
        EventType::Failed,
        EventType::Skipped,
        EventType::Parked,
        EventType::Redriven,
        EventType::Delivered,
        EventType::Bounced,
        EventType::Complained,
        EventType::Opened,
        EventType::Clicked,
        EventType::Converted,
        EventType::Cancelled,
    ];

    /// The published type of a timeline entry, if it is published. A hold for quiet hours
    /// schedules the delivery again: `scheduled`, with reason `quiet_hours`.
    pub fn of(kind: TimelineKind) -> Option<Self> {
        Some(match kind {
            TimelineKind::Accepted => EventType::Accepted,
            TimelineKind::Scheduled | TimelineKind::HeldQuietHours => EventType::Scheduled,
            TimelineKind::Sent => EventType::Sent,
            TimelineKind::Failed => EventType::Failed,
            TimelineKind::Skipped => EventType::Skipped,
            TimelineKind::Parked => EventType::Parked,
            TimelineKind::Redriven => EventType::Redriven,
            TimelineKind::Delivered => EventType::Delivered,
            TimelineKind::Bounced => EventType::Bounced,
            TimelineKind::Complained => EventType::Complained,
            TimelineKind::Opened => EventType::Opened,
            TimelineKind::Clicked => EventType::Clicked,
            TimelineKind::Converted => EventType::Converted,
            TimelineKind::Cancelled => EventType::Cancelled,
            TimelineKind::Sending
            | TimelineKind::Retrying
            | TimelineKind::Waiting
            | TimelineKind::SoftBounced
            | TimelineKind::Released
            | TimelineKind::Rerouted => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Accepted => "accepted",
            EventType::Scheduled => "scheduled",
            EventType::Sent => "sent",
            EventType::Failed => "failed",
            EventType::Skipped => "skipped",
            EventType::Parked => "parked",
            EventType::Redriven => "redriven",
            EventType::Delivered => "delivered",
            EventType::Bounced => "bounced",
            EventType::Complained => "complained",
            EventType::Opened => "opened",
            EventType::Clicked => "clicked",
            EventType::Converted => "converted",
            EventType::Cancelled => "cancelled",
        }
    }

    /// The EventBridge `detail-type`.
    pub fn detail_type(self) -> String {
        format!("notification.{}", self.as_str())
    }
}

/// The event types a deployment publishes (`EventTypes`): each event is billed, so a team whose
/// rules use a few types publishes only those. `all` by default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedTypes(Vec<EventType>);

impl PublishedTypes {
    pub fn all() -> Self {
        Self(EventType::ALL.to_vec())
    }

    pub fn allows(&self, kind: EventType) -> bool {
        self.0.contains(&kind)
    }
}

impl std::str::FromStr for PublishedTypes {
    type Err = String;

    /// `all`, or event types separated by commas (`sent,delivered,opened`).
    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim() == "all" {
            return Ok(Self::all());
        }
        let kinds = text
            .split(',')
            .map(|name| {
                let name = name.trim();
                EventType::ALL.into_iter().find(|kind| kind.as_str() == name).ok_or_else(|| {
                    let known: Vec<&str> = EventType::ALL.iter().map(|kind| kind.as_str()).collect();
                    format!("{name:?} is not an event type (all, or some of: {})", known.join(", "))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self(kinds))
    }
}

/// A failure, as an event carries it: never the provider's message.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventError {
    pub class: FailureClass,
    pub code: String,
}

/// An event's `detail` (schema version 1).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NotificationEvent {
    pub version: &'static str,
    /// Unique and stable: a consumer drops one it has seen (publication is at least once).
    pub id: String,
    /// Its place in the notification's timeline: events of one notification in this order.
    pub sequence: usize,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When it happened (RFC 3339, UTC).
    pub occurred_at: String,
    pub notification_id: String,
    pub app: String,
    pub user_id: String,
    pub template: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<DeliveryId>,
    /// The provider of the delivery's latest attempt (`sns`, `twilio`, `ses`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The delivery's status once this happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<DeliveryStatus>,
    /// Why a delivery was skipped (`opted_out`, …) or scheduled again (`quiet_hours`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<EventError>,
    /// A conversion's value, as the app reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Number>,
}

impl NotificationEvent {
    pub fn detail_type(&self) -> String {
        self.kind.detail_type()
    }
}

/// The events a write to a notification's record published: the timeline entries it appended
/// (`before` is the record before it, `None` for the write that created it). A record created
/// with channels skipped at intake also publishes one `skipped` per channel, after `accepted`,
/// except channels the template has no content for: nothing was ever to be sent there, and an
/// event for each would multiply the stream's cost for templates of one channel.
pub fn changes(before: Option<&NotificationRecord>, after: &NotificationRecord) -> Vec<NotificationEvent> {
    let from = before.map_or(0, |record| record.events.len());
    let mut events = Vec::new();
    for (sequence, entry) in after.events.iter().enumerate().skip(from) {
        let Some(kind) = EventType::of(entry.kind) else { continue };
        events.push(event(after, sequence, kind, entry));
        if before.is_none() && kind == EventType::Accepted {
            let decided = after.skipped.iter().filter(|skipped| skipped.reason != SkipReason::NoContent);
            events.extend(decided.map(|skipped| NotificationEvent {
                id: format!("{}:{sequence}:{}", after.id, skipped.channel),
                kind: EventType::Skipped,
                channel: Some(skipped.channel),
                reason: Some(skipped.reason.as_str().to_string()),
                status: Some(DeliveryStatus::Skipped),
                ..event(after, sequence, EventType::Skipped, entry)
            }));
        }
    }
    events
}

fn event(record: &NotificationRecord, sequence: usize, kind: EventType, entry: &TimelineEvent) -> NotificationEvent {
    let delivery = entry.delivery.as_ref().and_then(|id| record.deliveries.get(id));
    let conversion = record.conversion.as_ref().filter(|_| kind == EventType::Converted);
    let reason = match (entry.kind, delivery.and_then(|delivery| delivery.skip_reason)) {
        (TimelineKind::HeldQuietHours, _) => Some("quiet_hours".to_string()),
        (TimelineKind::Skipped, Some(reason)) => Some(reason.as_str().to_string()),
        _ => None,
    };
    let failed = matches!(kind, EventType::Failed | EventType::Parked | EventType::Bounced | EventType::Complained);
    NotificationEvent {
        version: SCHEMA_VERSION,
        id: format!("{}:{sequence}", record.id),
        sequence,
        kind,
        occurred_at: conversion.map_or_else(|| entry.at.clone(), |conversion| conversion.occurred_at.clone()),
        notification_id: record.id.to_string(),
        app: record.app_key.clone(),
        user_id: record.user_id.clone(),
        template: record.template.clone(),
        channel: entry.channel,
        delivery_id: entry.delivery.clone(),
        provider: delivery.and_then(|delivery| delivery.provider.clone()),
        status: delivery.map(|delivery| delivery.status),
        reason,
        error: delivery
            .and_then(|delivery| delivery.error.as_ref())
            .filter(|_| failed)
            .map(|error| EventError { class: error.class, code: error.code.clone() }),
        value: conversion.and_then(|conversion| conversion.value.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::notification::{Conversion, DeliveryFailure, SkippedChannel};

    fn entry(kind: TimelineKind, delivery: Option<&str>) -> TimelineEvent {
        TimelineEvent {
            at: format!("2026-12-05T10:00:0{}Z", kind as u8 % 10),
            kind,
            channel: delivery.map(|_| Channel::Sms),
            delivery: delivery.map(DeliveryId::from),
        }
    }

    fn record(kinds: &[TimelineKind]) -> NotificationRecord {
        let mut record = crate::memory::logged("n-1", "sms", Channel::Sms, DeliveryStatus::Sent);
        record.events =
            kinds.iter().map(|kind| entry(*kind, (*kind != TimelineKind::Accepted).then_some("sms"))).collect();
        record
    }

    #[test]
    fn a_write_publishes_the_entries_it_appended_and_only_those() {
        use TimelineKind::*;
        let before = record(&[Accepted, Sending]);
        let mut after = record(&[Accepted, Sending, Sent]);
        after.deliveries.get_mut("sms").unwrap().provider = Some("twilio".into());
        let events = changes(Some(&before), &after);
        assert_eq!(events.len(), 1);
        let sent = &events[0];
        assert_eq!((sent.kind, sent.sequence, sent.id.as_str()), (EventType::Sent, 2, "n-1:2"));
        assert_eq!(sent.provider.as_deref(), Some("twilio"));
        assert_eq!(sent.status, Some(DeliveryStatus::Sent));
        assert_eq!(sent.delivery_id, Some(DeliveryId::from("sms")));
        assert!(changes(Some(&after), &after).is_empty(), "a write that appended nothing publishes nothing");
    }

    #[test]
    fn the_steps_of_an_attempt_are_not_published() {
        use TimelineKind::*;
        let after = record(&[Accepted, Sending, Retrying, Waiting, Released, Rerouted, SoftBounced]);
        let kinds: Vec<EventType> = changes(None, &after).iter().map(|event| event.kind).collect();
        assert_eq!(kinds, [EventType::Accepted]);
    }

    #[test]
    fn a_new_record_publishes_acceptance_then_the_channels_skipped_at_intake() {
        let mut after = record(&[TimelineKind::Accepted]);
        after.skipped = vec![
            SkippedChannel { channel: Channel::Email, reason: SkipReason::OptedOut },
            SkippedChannel { channel: Channel::Push, reason: SkipReason::NoContent },
        ];
        let events = changes(None, &after);
        assert_eq!(
            events.iter().map(|event| event.kind).collect::<Vec<_>>(),
            [EventType::Accepted, EventType::Skipped]
        );
        assert_eq!(events[1].reason.as_deref(), Some("opted_out"));
        assert_eq!(events[1].channel, Some(Channel::Email));
        assert_ne!(events[0].id, events[1].id);
    }

    #[test]
    fn failures_carry_their_class_and_code_never_the_providers_message() {
        use TimelineKind::*;
        let before = record(&[Accepted, Sending]);
        let mut after = record(&[Accepted, Sending, Failed]);
        after.deliveries.get_mut("sms").unwrap().error = Some(DeliveryFailure {
            class: FailureClass::Permanent,
            code: "21211".into(),
            message: "The 'To' number +12015550123 is not a valid phone number".into(),
            provider: Some("twilio".into()),
        });
        let event = &changes(Some(&before), &after)[0];
        assert_eq!(event.error, Some(EventError { class: FailureClass::Permanent, code: "21211".into() }));
        let json = serde_json::to_string(event).unwrap();
        assert!(!json.contains("+1201"), "{json}");
        assert!(!json.contains("message"), "{json}");
    }

    #[test]
    fn a_conversion_carries_its_value_and_when_it_happened() {
        use TimelineKind::*;
        let before = record(&[Accepted, Sending, Sent]);
        let mut after = before.clone();
        after.events.push(TimelineEvent {
            at: "2026-12-05T11:00:00Z".into(),
            kind: Converted,
            channel: None,
            delivery: None,
        });
        after.conversion =
            Some(Conversion { occurred_at: "2026-12-05T10:30:00Z".into(), value: Some(serde_json::Number::from(42)) });
        let event = &changes(Some(&before), &after)[0];
        assert_eq!(event.kind, EventType::Converted);
        assert_eq!(event.occurred_at, "2026-12-05T10:30:00Z");
        assert_eq!(event.value, Some(serde_json::Number::from(42)));
        assert_eq!(event.detail_type(), "notification.converted");
    }

    #[test]
    fn a_deployment_publishes_the_types_it_names_and_a_name_that_is_no_type_is_refused() {
        let some: PublishedTypes = "sent, delivered,opened".parse().unwrap();
        assert!(some.allows(EventType::Delivered) && !some.allows(EventType::Accepted));
        assert!("all".parse::<PublishedTypes>().unwrap().allows(EventType::Accepted));
        let refused = "sent,opens".parse::<PublishedTypes>().unwrap_err();
        assert!(refused.contains("\"opens\" is not an event type"), "{refused}");
        assert!("".parse::<PublishedTypes>().is_err());
    }

    #[test]
    fn every_published_type_has_its_timeline_entry() {
        for kind in EventType::ALL {
            assert!(TimelineKind::ALL.iter().any(|entry| EventType::of(*entry) == Some(kind)), "{kind:?}");
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }
}
