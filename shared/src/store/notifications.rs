//! The notifications table: key `id`; TTL attribute `expires_at`.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::{Item, from_item, string, to_item};
use crate::aws::classify;
use crate::domain::channel::Channel;
use crate::domain::notification::{
    ClaimDecision, DeliveryFailure, DeliveryStatus, NotificationRecord, SkipReason, TimelineEvent,
};
use crate::error::DependencyError;
use crate::queue::Outgoing;

/// What claiming a delivery for an attempt came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This attempt holds the delivery, with this lease.
    Taken(Lease),
    /// Another attempt holds it until then (epoch milliseconds).
    Held { until_ms: i64 },
    /// It has an outcome already.
    Finished(DeliveryStatus),
    /// No such notification or delivery (expired from the log, or never logged).
    Missing,
}

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
    /// When it ends, in epoch milliseconds.
    pub fn until_ms(&self) -> i64 {
        self.until_ms
    }
}

/// A status change the provider's feedback asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedbackTransition {
    pub to: DeliveryStatus,
    pub from: &'static [DeliveryStatus],
    pub event: &'static str,
    pub error: Option<DeliveryFailure>,
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

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    Sent {
        provider_message_id: String,
    },
    Failed(DeliveryFailure),
    Skipped(SkipReason),
    /// A transient failure: the delivery goes back to `queued` for the next receive.
    Retrying(DeliveryFailure),
    /// A transient failure on the queue's last receive: SQS moves the message to the DLQ.
    Parked(DeliveryFailure),
}

impl AttemptOutcome {
    fn status(&self) -> DeliveryStatus {
        match self {
            AttemptOutcome::Sent { .. } => DeliveryStatus::Sent,
            AttemptOutcome::Failed(_) => DeliveryStatus::Failed,
            AttemptOutcome::Skipped(_) => DeliveryStatus::Skipped,
            AttemptOutcome::Retrying(_) => DeliveryStatus::Queued,
            AttemptOutcome::Parked(_) => DeliveryStatus::Parked,
        }
    }

    fn event(&self) -> &'static str {
        match self {
            AttemptOutcome::Sent { .. } => "sent",
            AttemptOutcome::Failed(_) => "failed",
            AttemptOutcome::Skipped(_) => "skipped",
            AttemptOutcome::Retrying(_) => "retrying",
            AttemptOutcome::Parked(_) => "parked",
        }
    }
}

fn status_value(status: DeliveryStatus) -> AttributeValue {
    string(status.as_str())
}

/// Placeholders shared by the delivery transitions (`status` is a DynamoDB reserved word).
fn delivery_names(delivery_id: &str) -> HashMap<String, String> {
    [
        ("#deliveries", "deliveries"),
        ("#d", delivery_id),
        ("#status", "status"),
        ("#lease", "lease_until"),
        ("#updated", "updated_at"),
        ("#events", "events"),
    ]
    .into_iter()
    .map(|(placeholder, name)| (placeholder.to_string(), name.to_string()))
    .collect()
}

fn event(kind: &str, channel: Channel) -> Result<AttributeValue, DependencyError> {
    let event = TimelineEvent { at: crate::time::now_rfc3339(), kind: kind.to_string(), channel: Some(channel) };
    let item: Item = to_item("UpdateItem", &event)?;
    Ok(AttributeValue::L(vec![AttributeValue::M(item)]))
}

/// The update every status change of a delivery makes: its status and time set, an event
/// appended to the timeline, and what the change adds (an error, a provider id, …).
struct StatusChange {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    sets: Vec<String>,
}

impl StatusChange {
    fn new(delivery_id: &str, to: DeliveryStatus, kind: &str, channel: Channel) -> Result<Self, DependencyError> {
        let sets = vec![
            "#deliveries.#d.#status = :status".to_string(),
            "#deliveries.#d.#updated = :now_iso".to_string(),
            "#events = list_append(#events, :event)".to_string(),
        ];
        let values = HashMap::from([
            (":status".to_string(), status_value(to)),
            (":now_iso".to_string(), string(&crate::time::now_rfc3339())),
            (":event".to_string(), event(kind, channel)?),
        ]);
        let mut names = delivery_names(delivery_id);
        names.remove("#lease");
        Ok(Self { names, values, sets })
    }

    /// Also sets the delivery's `attribute` to `value`.
    fn set(&mut self, attribute: &str, value: AttributeValue) {
        // `error` is a reserved word: every attribute goes through a name placeholder.
        self.names.insert(format!("#{attribute}"), attribute.to_string());
        self.sets.push(format!("#deliveries.#d.#{attribute} = :{attribute}"));
        self.values.insert(format!(":{attribute}"), value);
    }

    fn set_error(&mut self, error: &impl serde::Serialize) -> Result<(), DependencyError> {
        self.set("error", AttributeValue::M(to_item("UpdateItem", error)?));
        Ok(())
    }

    /// The condition and clause of an attempt's own outcome: the delivery is still `sending`
    /// under `lease`, which the change ends.
    fn ending(&mut self, lease: Lease) -> (String, &'static str) {
        self.names.insert("#lease".into(), "lease_until".into());
        self.values.insert(":sending".into(), status_value(DeliveryStatus::Sending));
        self.values.insert(":lease".into(), AttributeValue::N(lease.until_ms.to_string()));
        ("#deliveries.#d.#status = :sending AND #deliveries.#d.#lease = :lease".into(), " REMOVE #deliveries.#d.#lease")
    }

    /// The UpdateItem of notification `id`, if the delivery meets `condition` (the statuses it
    /// may move from); `clauses` follow the SET (` REMOVE …`).
    fn update(
        self,
        store: &NotificationStore,
        id: &str,
        condition: String,
        clauses: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        store
            .client
            .update_item()
            .table_name(&store.table)
            .key("id", string(id))
            .update_expression(format!("SET {}{clauses}", self.sets.join(", ")))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(self.names))
            .set_expression_attribute_values(Some(self.values))
    }
}

/// What a conditional update of a delivery found instead of what it expected: the record as it
/// was (returned with the failure, ALL_OLD), or `None` when the notification or the delivery
/// does not exist.
fn found_instead(
    error: aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError>,
) -> Result<Option<NotificationRecord>, DependencyError> {
    let item = match error.as_service_error() {
        Some(aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(failed)) => {
            failed.item.clone().unwrap_or_default()
        }
        // A delivery id that is not in the record makes the document path invalid; any other
        // validation error is a real failure and must not drop the message.
        Some(service)
            if service.meta().code() == Some("ValidationException")
                && service.meta().message().is_some_and(|m| m.contains("document path")) =>
        {
            return Ok(None);
        }
        _ => return Err(classify("dynamodb", "UpdateItem", error, &[])),
    };
    if item.is_empty() {
        return Ok(None);
    }
    Ok(Some(from_item("UpdateItem", item)?))
}

#[derive(Clone)]
pub struct NotificationStore {
    client: Client,
    table: String,
}

/// The result of logging a notification.
#[derive(Debug)]
pub enum Logged {
    Created,
    /// A live record with the same id exists: the request is a duplicate of it.
    Duplicate(Box<NotificationRecord>),
}

/// The item the intake's log write puts (public for the CPU benchmark, which counts this
/// conversion as the intake's own work).
pub fn log_item(record: &NotificationRecord) -> Result<Item, DependencyError> {
    to_item("PutItem", record)
}

impl NotificationStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// Writes the record unless a live one with the same id exists. One conditional put is
    /// both the log write and the idempotency check; on a duplicate the existing record comes
    /// back with the failure (ALL_OLD), so no second read is needed. An expired record (TTL
    /// deletion lags) counts as absent.
    pub async fn create(&self, record: &NotificationRecord, now_epoch: i64) -> Result<Logged, DependencyError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(log_item(record)?))
            .condition_expression("attribute_not_exists(id) OR expires_at < :now")
            .expression_attribute_values(":now", AttributeValue::N(now_epoch.to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Logged::Created),
            Err(error) => match error.as_service_error() {
                Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(failed)) => {
                    let existing = failed.item.clone().unwrap_or_default();
                    Ok(Logged::Duplicate(Box::new(from_item("PutItem", existing)?)))
                }
                _ => Err(classify("dynamodb", "PutItem", error, &[])),
            },
        }
    }

    pub async fn get(&self, id: &str) -> Result<Option<NotificationRecord>, DependencyError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", string(id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| classify("dynamodb", "GetItem", error, &[]))?;
        output.item.map(|item| from_item("GetItem", item)).transpose()
    }

    /// Claims a delivery for an attempt: `queued`, or `sending` with an expired lease, becomes
    /// `sending` with a lease until `now + lease`, in one conditional update.
    pub async fn claim(
        &self,
        id: &str,
        delivery_id: &str,
        channel: Channel,
        now_ms: i64,
        lease: Duration,
    ) -> Result<Claim, DependencyError> {
        let lease = Lease { until_ms: now_ms + lease.as_millis() as i64 };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", string(id))
            .update_expression(
                "SET #deliveries.#d.#status = :sending, #deliveries.#d.#lease = :lease, \
                 #deliveries.#d.attempts = #deliveries.#d.attempts + :one, #deliveries.#d.#updated = :now_iso, \
                 #events = list_append(#events, :event)",
            )
            .condition_expression(
                "#deliveries.#d.#status IN (:queued, :parked) OR (#deliveries.#d.#status = :sending AND \
                 (attribute_not_exists(#deliveries.#d.#lease) OR #deliveries.#d.#lease < :now))",
            )
            .set_expression_attribute_names(Some(delivery_names(delivery_id)))
            .expression_attribute_values(":queued", status_value(DeliveryStatus::Queued))
            .expression_attribute_values(":parked", status_value(DeliveryStatus::Parked))
            .expression_attribute_values(":sending", status_value(DeliveryStatus::Sending))
            .expression_attribute_values(":now", AttributeValue::N(now_ms.to_string()))
            .expression_attribute_values(":lease", AttributeValue::N(lease.until_ms.to_string()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":now_iso", string(&crate::time::now_rfc3339()))
            .expression_attribute_values(":event", event("sending", channel)?)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let record = match result {
            Ok(_) => return Ok(Claim::Taken(lease)),
            Err(error) => found_instead(error)?,
        };
        let Some(delivery) = record.as_ref().and_then(|record| record.deliveries.get(delivery_id)) else {
            return Ok(Claim::Missing);
        };
        Ok(match delivery.claim_decision(now_ms) {
            ClaimDecision::Finished(status) => Claim::Finished(status),
            ClaimDecision::HeldUntil(until_ms) => Claim::Held { until_ms },
            // The lease ran out between the write and now: come straight back.
            ClaimDecision::Take => Claim::Held { until_ms: now_ms },
        })
    }

    /// Records how an attempt ended, if the delivery is still `sending` under the attempt's
    /// `lease` (else another attempt took over, and records its own outcome): whether this write
    /// recorded it.
    pub async fn record(
        &self,
        id: &str,
        delivery_id: &str,
        channel: Channel,
        lease: Lease,
        outcome: &AttemptOutcome,
    ) -> Result<bool, DependencyError> {
        let mut change = StatusChange::new(delivery_id, outcome.status(), outcome.event(), channel)?;
        match outcome {
            AttemptOutcome::Sent { provider_message_id } => {
                change.set("provider_message_id", string(provider_message_id));
            }
            AttemptOutcome::Failed(failure) | AttemptOutcome::Retrying(failure) | AttemptOutcome::Parked(failure) => {
                change.set_error(failure)?
            }
            AttemptOutcome::Skipped(reason) => change.set("skip_reason", string(reason.as_str())),
        }
        let (condition, clauses) = change.ending(lease);
        let result = change.update(self, id, condition, clauses).send().await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                tracing::info!(notification_id = %id, delivery_id = %delivery_id, "another attempt took the delivery over");
                Ok(false)
            }
            Err(error) => Err(classify("dynamodb", "UpdateItem", error, &[])),
        }
    }

    /// Records the provider's feedback on a sent delivery: moves it to `to` (with `error`, the
    /// bounce or rejection detail) if its status is one of `from`, appending `event` in the same
    /// write, so a duplicate event changes nothing.
    pub async fn record_feedback(
        &self,
        id: &str,
        delivery_id: &str,
        channel: Channel,
        transition: &FeedbackTransition,
    ) -> Result<FeedbackRecorded, DependencyError> {
        let mut change = StatusChange::new(delivery_id, transition.to, transition.event, channel)?;
        let mut allowed = Vec::new();
        for (index, status) in transition.from.iter().enumerate() {
            allowed.push(format!(":from{index}"));
            change.values.insert(format!(":from{index}"), status_value(*status));
        }
        if let Some(error) = &transition.error {
            change.set_error(error)?;
        }
        let condition = format!("#deliveries.#d.#status IN ({})", allowed.join(", "));
        let result = change
            .update(self, id, condition, "")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let record = match result {
            Ok(_) => return Ok(FeedbackRecorded::Recorded),
            Err(error) => found_instead(error)?,
        };
        Ok(
            match record.as_ref().and_then(|record| record.deliveries.get(delivery_id)).map(|delivery| delivery.status)
            {
                None => FeedbackRecorded::Missing,
                Some(status) if !status.is_final() => FeedbackRecorded::NotYetSent,
                Some(status) => FeedbackRecorded::Unchanged(status),
            },
        )
    }

    /// Records an open (the first one only: later pixel loads change nothing) or a click (every
    /// one counted on the delivery; the first one also on the timeline). The public tracking
    /// routes can be hit any number of times (a forwarded email, a link-scanning bot), so only
    /// the first of each appends to the record: after it, the record keeps its size and each
    /// click costs one small write, however many there are.
    pub async fn record_engagement(
        &self,
        id: &str,
        delivery_id: &str,
        channel: Channel,
        engagement: Engagement,
    ) -> Result<Engaged, DependencyError> {
        // DynamoDB refuses a name placeholder the expressions do not use.
        let used: &[&str] = match engagement {
            Engagement::Open => &["#deliveries", "#d", "#events"],
            Engagement::Click => &["#deliveries", "#d"],
        };
        let mut names = delivery_names(delivery_id);
        names.retain(|placeholder, _| used.contains(&placeholder.as_str()));
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", string(id))
            .set_expression_attribute_names(Some(names));
        let update = match engagement {
            Engagement::Open => update
                .update_expression("SET #deliveries.#d.opened_at = :now_iso, #events = list_append(#events, :event)")
                .condition_expression(
                    "attribute_exists(#deliveries.#d) AND attribute_not_exists(#deliveries.#d.opened_at)",
                )
                .expression_attribute_values(":now_iso", string(&crate::time::now_rfc3339()))
                .expression_attribute_values(":event", event("opened", channel)?),
            Engagement::Click => update
                // ADD works on top-level attributes only; a nested counter is SET.
                .update_expression("SET #deliveries.#d.clicks = if_not_exists(#deliveries.#d.clicks, :zero) + :one")
                .condition_expression("attribute_exists(#deliveries.#d)")
                .expression_attribute_values(":zero", AttributeValue::N("0".into()))
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                // The old count tells a first click from a later one.
                .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedOld),
        };
        let output = match update.send().await {
            Ok(output) => output,
            Err(error) => return found_instead(error).map(|_| Engaged::NotRecorded),
        };
        if engagement == Engagement::Open {
            return Ok(Engaged::Recorded { first: true });
        }
        // The old click count is returned only if there was one: its absence means a first click.
        let first = !output.attributes.unwrap_or_default().get("deliveries").is_some_and(|old| {
            old.as_m()
                .ok()
                .and_then(|m| m.get(delivery_id))
                .and_then(|d| d.as_m().ok())
                .is_some_and(|d| d.contains_key("clicks"))
        });
        // Exactly one click finds no count before it: that one puts the click on the timeline
        // (a failure to is logged: the click is counted either way).
        if first && let Err(error) = self.append_event(id, "clicked", channel).await {
            tracing::warn!(notification_id = %id, error = %error, "the first click is not on the timeline");
        }
        Ok(Engaged::Recorded { first })
    }

    /// Appends an event to a notification's timeline (no-op for a notification that is gone).
    pub async fn append_event(&self, id: &str, kind: &str, channel: Channel) -> Result<(), DependencyError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", string(id))
            .update_expression("SET #events = list_append(#events, :event)")
            .condition_expression("attribute_exists(id)")
            .expression_attribute_names("#events", "events")
            .expression_attribute_values(":event", event(kind, channel)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            Err(error) => Err(classify("dynamodb", "UpdateItem", error, &[])),
        }
    }

    /// Ids of notifications in a shard of the `pending` index that are due (`sweep_at <= now`).
    pub async fn due(&self, shard: &str, now_epoch: i64, limit: usize) -> Result<Vec<String>, DependencyError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(PENDING_INDEX)
            .key_condition_expression("sweep_shard = :shard AND sweep_at <= :now")
            .expression_attribute_values(":shard", string(shard))
            .expression_attribute_values(":now", AttributeValue::N(now_epoch.to_string()))
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|error| classify("dynamodb", "Query", error, &[]))?;
        Ok(output
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|item| item.get("id")?.as_s().ok().cloned())
            .collect())
    }

    /// Puts a record in the sweep's index, due at `at` (epoch seconds), with the messages of
    /// its deliveries that may not be on a queue (`outbox`: the notification's own), which the
    /// sweep enqueues from there. The intake does this only for a notification some of whose
    /// messages SQS did not take, so only then does the record carry message bodies.
    pub async fn mark_for_sweep(&self, id: &str, at: i64, outbox: &[Outgoing]) -> Result<(), DependencyError> {
        let shard = format!("pending#{}", rand::random_range(0..crate::domain::notification::SWEEP_SHARDS));
        let mut sets = vec!["sweep_shard = :shard".to_string(), "sweep_at = :at".to_string()];
        let mut names = HashMap::new();
        let mut values = HashMap::from([
            (":shard".to_string(), string(&shard)),
            (":at".to_string(), AttributeValue::N(at.to_string())),
        ]);
        for (index, message) in outbox.iter().filter(|message| message.notification_id == id).enumerate() {
            names.insert("#deliveries".to_string(), "deliveries".to_string());
            names.insert(format!("#d{index}"), message.delivery_id.clone());
            sets.push(format!("#deliveries.#d{index}.message = :m{index}"));
            values.insert(format!(":m{index}"), string(&message.body));
        }
        self.client
            .update_item()
            .table_name(&self.table)
            .key("id", string(id))
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression("attribute_exists(id)")
            .set_expression_attribute_names((!names.is_empty()).then_some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(|error| classify("dynamodb", "UpdateItem", error, &[]))?;
        Ok(())
    }

    /// Moves a record's next sweep from `seen` to `next` (or out of the index with `None`), if
    /// no other sweep moved it first: the winner alone acts on the record.
    pub async fn reschedule_sweep(&self, id: &str, seen: i64, next: Option<i64>) -> Result<bool, DependencyError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", string(id))
            .condition_expression("sweep_at = :seen")
            .expression_attribute_values(":seen", AttributeValue::N(seen.to_string()));
        let update = match next {
            Some(next) => update
                .update_expression("SET sweep_at = :next")
                .expression_attribute_values(":next", AttributeValue::N(next.to_string())),
            None => update.update_expression("REMOVE sweep_shard, sweep_at"),
        };
        match update.send().await {
            Ok(_) => Ok(true),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                Ok(false)
            }
            Err(error) => Err(classify("dynamodb", "UpdateItem", error, &[])),
        }
    }
}

/// The sparse index of notifications the recovery sweep may have to finish.
pub const PENDING_INDEX: &str = "pending";
