//! The notifications table: key `id`; TTL attribute `expires_at`. The [`DeliveryLog`] in
//! DynamoDB: each delivery's status change is one conditional update whose condition is the
//! lifecycle table's row for it (`domain::lifecycle`), so a duplicate or late change fails its
//! condition instead of overwriting what happened.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::{Item, from_item, string, to_item};
use crate::aws::classify;
use crate::domain::channel::Channel;
use crate::domain::lifecycle::{Budget, CLAIMS, Event, Guard, TimelineKind, Transition};
use crate::domain::notification::{
    Conversion, DeliveryFailure, DeliveryId, DeliveryStatus, NotificationId, NotificationRecord, SweepShard,
    TimelineEvent,
};
use crate::error::DependencyError;
use crate::ports::{
    AttemptOutcome, Claim, Claiming, DeliveryLog, Engaged, Engagement, FeedbackRecorded, Lease, Receipt,
};
use crate::queue::Outgoing;

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

fn event(kind: TimelineKind, channel: Channel, delivery_id: &str) -> Result<AttributeValue, DependencyError> {
    let event = TimelineEvent {
        at: crate::time::now_rfc3339(),
        kind,
        channel: Some(channel),
        delivery: Some(DeliveryId::from(delivery_id)),
    };
    let item: Item = to_item("UpdateItem", &event)?;
    Ok(AttributeValue::L(vec![AttributeValue::M(item)]))
}

/// One status change of a delivery, as the lifecycle table's row for it says: the status and
/// time set and the row's timeline event appended, if the delivery's status is one the row
/// moves from and the row's guard holds; plus what the change adds (an error, a provider id, a
/// lease, …).
struct StatusChange {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
    sets: Vec<String>,
    removes: Vec<String>,
    condition: String,
}

impl StatusChange {
    /// `lease`: the attempt's own, for a row guarded by [`Guard::OwnLease`]; `now_ms`: when a
    /// lease counts as expired, for [`Guard::ExpiredLease`].
    fn new(
        delivery_id: &str,
        transition: &Transition,
        channel: Channel,
        lease: Option<Lease>,
        now_ms: i64,
    ) -> Result<Self, DependencyError> {
        let mut change = Self {
            names: delivery_names(delivery_id),
            values: HashMap::from([
                (":status".to_string(), status_value(transition.to)),
                (":now_iso".to_string(), string(&crate::time::now_rfc3339())),
                (":event".to_string(), event(transition.timeline, channel, delivery_id)?),
            ]),
            sets: vec![
                "#deliveries.#d.#status = :status".to_string(),
                "#deliveries.#d.#updated = :now_iso".to_string(),
                "#events = list_append(#events, :event)".to_string(),
            ],
            removes: Vec::new(),
            condition: String::new(),
        };
        change.condition = change.guard(transition, lease, now_ms);
        change.budget(transition.budget);
        if !change.condition.contains("#lease") {
            // DynamoDB refuses a name placeholder no expression uses.
            change.names.remove("#lease");
        }
        Ok(change)
    }

    /// The row's condition: `#status IN (its from statuses)`, and its guard.
    fn guard(&mut self, transition: &Transition, lease: Option<Lease>, now_ms: i64) -> String {
        let mut from = Vec::new();
        for (index, status) in transition.from.iter().enumerate() {
            from.push(format!(":from{index}"));
            self.values.insert(format!(":from{index}"), status_value(*status));
        }
        let status_is_from = format!("#deliveries.#d.#status IN ({})", from.join(", "));
        match transition.guard {
            Guard::None => status_is_from,
            Guard::OwnLease => {
                let lease = lease.expect("a change guarded by the attempt's lease is recorded with it");
                self.values.insert(":lease".into(), AttributeValue::N(lease.until_ms().to_string()));
                if transition.ends_lease() {
                    self.removes.push("#deliveries.#d.#lease".into());
                }
                format!("{status_is_from} AND #deliveries.#d.#lease = :lease")
            }
            Guard::ExpiredLease => {
                self.values.insert(":now".into(), AttributeValue::N(now_ms.to_string()));
                format!(
                    "{status_is_from} AND (attribute_not_exists(#deliveries.#d.#lease) OR #deliveries.#d.#lease < :now)"
                )
            }
            Guard::Due => {
                self.values.insert(":now".into(), AttributeValue::N(now_ms.to_string()));
                self.names.insert("#due".into(), "deliver_after".into());
                format!(
                    "{status_is_from} AND (attribute_not_exists(#deliveries.#d.#due) OR #deliveries.#d.#due <= :now)"
                )
            }
        }
    }

    /// The row's effect on the retry budget.
    fn budget(&mut self, budget: Budget) {
        let counter = match budget {
            Budget::Keep => return,
            Budget::Renew => {
                self.names.insert("#failures".into(), "failures".into());
                self.sets.push("#deliveries.#d.#failures = :zero".into());
                self.values.insert(":zero".into(), AttributeValue::N("0".into()));
                return;
            }
            Budget::Spend => "failures",
            Budget::Wait => "waits",
        };
        // ADD works on top-level attributes only; a nested counter is SET.
        self.names.insert(format!("#{counter}"), counter.to_string());
        self.sets.push(format!(
            "#deliveries.#d.#{counter} = if_not_exists(#deliveries.#d.#{counter}, :zero) + :one_{counter}"
        ));
        self.values.insert(":zero".into(), AttributeValue::N("0".into()));
        self.values.insert(format!(":one_{counter}"), AttributeValue::N("1".into()));
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

    /// A claim names `provider` as the attempt's unless an earlier attempt named one (whose
    /// failover or pin the attempt then decides on, rerouting if it must).
    fn name_provider(&mut self, provider: &str) {
        self.names.insert("#provider".into(), "provider".into());
        self.sets.push("#deliveries.#d.#provider = if_not_exists(#deliveries.#d.#provider, :provider)".into());
        self.values.insert(":provider".into(), string(provider));
    }

    /// A claim's own additions: its lease, and one more attempt.
    fn take(&mut self, lease: Lease) {
        self.names.insert("#lease".into(), "lease_until".into());
        self.sets.push("#deliveries.#d.#lease = :lease".into());
        self.values.insert(":lease".into(), AttributeValue::N(lease.until_ms().to_string()));
        self.sets.push("#deliveries.#d.attempts = #deliveries.#d.attempts + :one".into());
        self.values.insert(":one".into(), AttributeValue::N("1".into()));
    }

    /// The UpdateItem of notification `id` (what it found instead comes back with a failure).
    fn update(
        self,
        store: &NotificationStore,
        id: &NotificationId,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        let mut expression = format!("SET {}", self.sets.join(", "));
        if !self.removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", self.removes.join(", ")));
        }
        store
            .client
            .update_item()
            .table_name(&store.table)
            .key("id", string(id.as_str()))
            .update_expression(expression)
            .condition_expression(self.condition)
            .set_expression_attribute_names(Some(self.names))
            .set_expression_attribute_values(Some(self.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
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

/// A cancel's write as the record after it, or the record found instead when its condition failed.
fn cancelled(
    result: Result<
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
        aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError>,
    >,
) -> Result<Result<NotificationRecord, Option<NotificationRecord>>, DependencyError> {
    match result {
        Ok(output) => Ok(Ok(from_item("UpdateItem", output.attributes.unwrap_or_default())?)),
        Err(error) => Ok(Err(found_instead(error)?)),
    }
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

/// The result of recording a conversion.
#[derive(Debug)]
pub enum Converted {
    /// Recorded: the record as it is now.
    Recorded(Box<NotificationRecord>),
    /// The notification had one already (this one is not recorded).
    Already(Conversion),
    /// No such notification of this app (or no longer logged).
    NotFound,
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

    /// Records notification `id`'s conversion, once: one conditional write that also appends
    /// `converted` to its timeline (the event stream's), for app `app_key` only (another app's
    /// notification is as good as none). A repeat finds the first in the record it read.
    pub async fn record_conversion(
        &self,
        id: &NotificationId,
        app_key: &str,
        conversion: &Conversion,
    ) -> Result<Converted, DependencyError> {
        let entry = TimelineEvent {
            at: crate::time::now_rfc3339(),
            kind: TimelineKind::Converted,
            channel: None,
            delivery: None,
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", string(id.as_str()))
            .update_expression("SET conversion = :conversion, #events = list_append(#events, :event)")
            .condition_expression("app_key = :app AND attribute_not_exists(conversion)")
            .expression_attribute_names("#events", "events")
            .expression_attribute_values(":conversion", AttributeValue::M(to_item("UpdateItem", conversion)?))
            .expression_attribute_values(
                ":event",
                AttributeValue::L(vec![AttributeValue::M(to_item("UpdateItem", &entry)?)]),
            )
            .expression_attribute_values(":app", string(app_key))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) => {
                Ok(Converted::Recorded(Box::new(from_item("UpdateItem", output.attributes.unwrap_or_default())?)))
            }
            Err(error) => Ok(match found_instead(error)? {
                Some(found) if found.app_key == app_key => {
                    found.conversion.map_or(Converted::NotFound, Converted::Already)
                }
                _ => Converted::NotFound,
            }),
        }
    }

    pub async fn get(&self, id: &NotificationId) -> Result<Option<NotificationRecord>, DependencyError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("id", string(id.as_str()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| classify("dynamodb", "GetItem", error, &[]))?;
        output.item.map(|item| from_item("GetItem", item)).transpose()
    }

    /// Puts a record in the sweep's index, due at `at` (epoch seconds), with the messages of
    /// its deliveries that may not be on a queue (`outbox`: the notification's own), which the
    /// sweep enqueues from there. The intake does this only for a notification some of whose
    /// messages SQS did not take, so only then does the record carry message bodies.
    pub async fn mark_for_sweep(
        &self,
        id: &NotificationId,
        at: i64,
        outbox: &[Outgoing],
    ) -> Result<(), DependencyError> {
        let shard = SweepShard(rand::random_range(0..crate::domain::notification::SWEEP_SHARDS)).to_string();
        let mut sets = vec!["sweep_shard = :shard".to_string(), "sweep_at = :at".to_string()];
        let mut names = HashMap::new();
        let mut values = HashMap::from([
            (":shard".to_string(), string(&shard)),
            (":at".to_string(), AttributeValue::N(at.to_string())),
        ]);
        for (index, message) in outbox.iter().filter(|message| message.notification_id == *id).enumerate() {
            names.insert("#deliveries".to_string(), "deliveries".to_string());
            names.insert(format!("#d{index}"), message.delivery_id.to_string());
            sets.push(format!("#deliveries.#d{index}.message = :m{index}"));
            values.insert(format!(":m{index}"), string(&message.body));
        }
        self.client
            .update_item()
            .table_name(&self.table)
            .key("id", string(id.as_str()))
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression("attribute_exists(id)")
            .set_expression_attribute_names((!names.is_empty()).then_some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(|error| classify("dynamodb", "UpdateItem", error, &[]))?;
        Ok(())
    }

    /// Whether a conditional update failed its condition, and the record it found instead.
    fn refused(
        result: Result<
            aws_sdk_dynamodb::operation::update_item::UpdateItemOutput,
            aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::update_item::UpdateItemError>,
        >,
    ) -> Result<Option<Option<NotificationRecord>>, DependencyError> {
        match result {
            Ok(_) => Ok(None),
            Err(error) => found_instead(error).map(Some),
        }
    }
}

impl DeliveryLog for NotificationStore {
    async fn get(&self, id: &NotificationId) -> Result<Option<NotificationRecord>, DependencyError> {
        NotificationStore::get(self, id).await
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
            let mut change = StatusChange::new(delivery_id.as_str(), claim.transition(), channel, None, now_ms)?;
            change.take(lease);
            change.name_provider(provider);
            // The record as the claim left it says the budget spent before (ALL_NEW costs no
            // read units).
            let output = match change.update(self, id).return_values(ReturnValue::AllNew).send().await {
                Ok(output) => output,
                Err(error) => match Claim::refused(found_instead(error)?.as_ref(), delivery_id, now_ms, claim) {
                    Ok(answer) => return Ok(answer),
                    Err(instead) => {
                        claim = instead;
                        continue;
                    }
                },
            };
            let record: NotificationRecord = from_item("UpdateItem", output.attributes.unwrap_or_default())?;
            let Some(delivery) = record.deliveries.get(delivery_id) else { return Ok(Claim::Missing) };
            return Ok(Claim::Taken {
                lease,
                failures: delivery.failures,
                waits: delivery.waits,
                trail: delivery.trail(),
                took_over: claim == Event::TakeOver,
            });
        }
        // Each refusal named the claim the delivery allowed then; it kept changing.
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
        let mut change =
            StatusChange::new(delivery_id.as_str(), Event::Reroute.transition(), channel, Some(lease), now_ms)?;
        change.set("provider", string(provider));
        if pinned {
            change.set("pinned", AttributeValue::Bool(true));
        }
        Ok(Self::refused(change.update(self, id).send().await)?.is_none())
    }

    async fn record_receipt(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        channel: Channel,
        receipt: &Receipt,
    ) -> Result<FeedbackRecorded, DependencyError> {
        let now_ms = crate::time::now_epoch_millis();
        let mut change = StatusChange::new(delivery_id.as_str(), receipt.event.transition(), channel, None, now_ms)?;
        change.names.insert("#provider".into(), "provider".into());
        change.values.insert(":provider".into(), string(&receipt.provider));
        // A delivery no attempt claimed names none (and has no message a receipt could be for).
        change
            .condition
            .push_str(" AND (attribute_not_exists(#deliveries.#d.#provider) OR #deliveries.#d.#provider = :provider)");
        // The first receipt names the message if the attempt's answer never did (it was lost).
        change.names.insert("#message_id".into(), "provider_message_id".into());
        change.values.insert(":message_id".into(), string(&receipt.provider_message_id));
        change.sets.push("#deliveries.#d.#message_id = if_not_exists(#deliveries.#d.#message_id, :message_id)".into());
        if let Some(error) = &receipt.error {
            change.set_error(error)?;
        }
        let Some(found) = Self::refused(change.update(self, id).send().await)? else {
            return Ok(FeedbackRecorded::Recorded);
        };
        Ok(FeedbackRecorded::refused_receipt(found.as_ref(), delivery_id, &receipt.provider))
    }

    async fn record(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        channel: Channel,
        lease: Lease,
        outcome: &AttemptOutcome,
    ) -> Result<bool, DependencyError> {
        let now_ms = crate::time::now_epoch_millis();
        let mut change =
            StatusChange::new(delivery_id.as_str(), outcome.event().transition(), channel, Some(lease), now_ms)?;
        match outcome {
            AttemptOutcome::Sent { provider, provider_message_id } => {
                change.set("provider", string(provider));
                change.set("provider_message_id", string(provider_message_id));
            }
            AttemptOutcome::Failed(failure) | AttemptOutcome::Retrying(failure) | AttemptOutcome::Parked(failure) => {
                change.set_error(failure)?;
                if failure.pins() {
                    change.set("pinned", AttributeValue::Bool(true));
                }
            }
            AttemptOutcome::Waiting(throttled) => {
                if let Some(failure) = throttled {
                    change.set_error(failure)?;
                }
            }
            AttemptOutcome::Skipped(reason) => change.set("skip_reason", string(reason.as_str())),
            AttemptOutcome::Held { until_ms } => change.set("deliver_after", AttributeValue::N(until_ms.to_string())),
        }
        if Self::refused(change.update(self, id).send().await)?.is_some() {
            tracing::info!(notification_id = %id, delivery_id = %delivery_id, "another attempt took the delivery over");
            return Ok(false);
        }
        Ok(true)
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
        let mut change = StatusChange::new(delivery_id.as_str(), event.transition(), channel, None, now_ms)?;
        if let Some(error) = error {
            change.set_error(error)?;
        }
        let Some(found) = Self::refused(change.update(self, id).send().await)? else {
            return Ok(FeedbackRecorded::Recorded);
        };
        Ok(FeedbackRecorded::refused(found.as_ref(), delivery_id))
    }

    /// Records an open (the first one only: later pixel loads change nothing) or a click (every
    /// one counted on the delivery; the first one also on the timeline). The public tracking
    /// routes can be hit any number of times (a forwarded email, a link-scanning bot), so only
    /// the first of each appends to the record: after it, the record keeps its size and each
    /// click costs one small write, however many there are.
    async fn record_engagement(
        &self,
        id: &NotificationId,
        delivery_id: &DeliveryId,
        channel: Channel,
        engagement: Engagement,
    ) -> Result<Engaged, DependencyError> {
        // DynamoDB refuses a name placeholder the expressions do not use.
        let used: &[&str] = match engagement {
            Engagement::Open => &["#deliveries", "#d", "#events"],
            Engagement::Click => &["#deliveries", "#d"],
        };
        let mut names = delivery_names(delivery_id.as_str());
        names.retain(|placeholder, _| used.contains(&placeholder.as_str()));
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", string(id.as_str()))
            .set_expression_attribute_names(Some(names));
        let update = match engagement {
            Engagement::Open => update
                .update_expression("SET #deliveries.#d.opened_at = :now_iso, #events = list_append(#events, :event)")
                .condition_expression(
                    "attribute_exists(#deliveries.#d) AND attribute_not_exists(#deliveries.#d.opened_at)",
                )
                .expression_attribute_values(":now_iso", string(&crate::time::now_rfc3339()))
                .expression_attribute_values(":event", event(TimelineKind::Opened, channel, delivery_id.as_str())?),
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
                .and_then(|m| m.get(delivery_id.as_str()))
                .and_then(|d| d.as_m().ok())
                .is_some_and(|d| d.contains_key("clicks"))
        });
        // Exactly one click finds no count before it: that one puts the click on the timeline
        // (a failure to is logged: the click is counted either way).
        if first && let Err(error) = self.append_event(id, delivery_id, TimelineKind::Clicked, channel).await {
            tracing::warn!(notification_id = %id, error = %error, "the first click is not on the timeline");
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
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", string(id.as_str()))
            .update_expression("SET #events = list_append(#events, :event)")
            .condition_expression("attribute_exists(id)")
            .expression_attribute_names("#events", "events")
            .expression_attribute_values(":event", event(kind, channel, delivery_id.as_str())?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if error.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => Ok(()),
            Err(error) => Err(classify("dynamodb", "UpdateItem", error, &[])),
        }
    }

    async fn cancel(
        &self,
        id: &NotificationId,
        cancelling: &[(DeliveryId, Channel)],
        nothing_left: bool,
    ) -> Result<Result<NotificationRecord, Option<NotificationRecord>>, DependencyError> {
        if cancelling.is_empty() {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("id", string(id.as_str()))
                .update_expression("REMOVE cancel_scope")
                .condition_expression("attribute_exists(id)")
                .return_values(ReturnValue::AllNew)
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .send()
                .await;
            return cancelled(result);
        }
        // The cancel row, for every delivery in one write: each must still be in a status the
        // row moves (it has no guard beyond that: nothing sending is ever cancelled).
        let cancel = Event::Cancel.transition();
        let mut names = delivery_names("");
        names.remove("#d");
        names.remove("#lease");
        let now = crate::time::now_rfc3339();
        let mut values =
            HashMap::from([(":to".to_string(), status_value(cancel.to)), (":now_iso".to_string(), string(&now))]);
        for (index, status) in cancel.from.iter().enumerate() {
            values.insert(format!(":from{index}"), status_value(*status));
        }
        let from: Vec<String> = (0..cancel.from.len()).map(|index| format!(":from{index}")).collect();
        let (mut sets, mut conditions, mut events) = (Vec::new(), Vec::new(), Vec::new());
        for (index, (delivery_id, channel)) in cancelling.iter().enumerate() {
            names.insert(format!("#d{index}"), delivery_id.to_string());
            sets.push(format!("#deliveries.#d{index}.#status = :to, #deliveries.#d{index}.#updated = :now_iso"));
            conditions.push(format!("#deliveries.#d{index}.#status IN ({})", from.join(", ")));
            let event = TimelineEvent {
                at: now.clone(),
                kind: cancel.timeline,
                channel: Some(*channel),
                delivery: Some(delivery_id.clone()),
            };
            events.push(AttributeValue::M(to_item("UpdateItem", &event)?));
        }
        sets.push("#events = list_append(#events, :events)".into());
        values.insert(":events".into(), AttributeValue::L(events));
        let mut expression = format!("SET {}", sets.join(", "));
        if nothing_left {
            expression.push_str(" REMOVE cancel_scope");
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", string(id.as_str()))
            .update_expression(expression)
            .condition_expression(conditions.join(" AND "))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        cancelled(result)
    }

    async fn with_cancel_scope(&self, scope: &str) -> Result<Vec<(NotificationId, String)>, DependencyError> {
        let mut found = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(CANCELLATION_INDEX)
                .key_condition_expression("cancel_scope = :scope")
                .expression_attribute_values(":scope", string(scope))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|error| classify("dynamodb", "Query", error, &[]))?;
            for item in output.items.unwrap_or_default() {
                let text = |name: &str| item.get(name).and_then(|value| value.as_s().ok()).cloned();
                if let (Some(id), Some(user)) = (text("id"), text("user_id")) {
                    found.push((NotificationId::from(id.as_str()), user));
                }
            }
            start = output.last_evaluated_key;
            if start.is_none() || found.len() > crate::cancel::MAX_PER_KEY_CALL {
                return Ok(found);
            }
        }
    }

    async fn due(&self, shard: u32, now_epoch: i64, limit: usize) -> Result<Vec<NotificationId>, DependencyError> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(PENDING_INDEX)
            .key_condition_expression("sweep_shard = :shard AND sweep_at <= :now")
            .expression_attribute_values(":shard", string(&SweepShard(shard).to_string()))
            .expression_attribute_values(":now", AttributeValue::N(now_epoch.to_string()))
            .limit(limit.clamp(1, 1000) as i32)
            .send()
            .await
            .map_err(|error| classify("dynamodb", "Query", error, &[]))?;
        Ok(output
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|item| Some(NotificationId::from(item.get("id")?.as_s().ok()?.as_str())))
            .collect())
    }

    async fn reschedule_sweep(
        &self,
        id: &NotificationId,
        seen: i64,
        next: Option<i64>,
    ) -> Result<bool, DependencyError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", string(id.as_str()))
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

/// The sparse index of notifications a cancel by key may find something to cancel in, by
/// `cancel_scope` (app, shard and key), with their users.
pub const CANCELLATION_INDEX: &str = "cancellation";
