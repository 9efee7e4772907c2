//! A channel's send timeline (`domain::send_rate`) in the rate-limits table: one item per
//! channel, key `send-rate/<channel>` (no user id has a `/`, so it meets no user's record), with
//! `next_us`, the first free slot (epoch µs). Taking slots is one UpdateItem in one of two forms,
//! each atomic under its condition: busy (`next_us` at or after now) adds the span to `next_us`
//! and returns the old value; idle (`next_us` before now, or absent) sets it to now plus the
//! span. An instance tries the form its last take predicts; a refused condition returns the
//! item (ALL_OLD), which says the form to use. Concurrent busy takes never refuse each other.
//!
//! The same write keeps what on-call reads of each lane (`notifyctl queues`):
//! `<lane>_slots` (slots taken since the item was created: a rate between two reads),
//! `<lane>_at_ms` (the last take) and `<lane>_oldest_ms` (when the oldest message of that
//! take's batch was enqueued), and `rate` (sends per second of the last take).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::{Item, string};
use crate::aws::classify;
use crate::domain::channel::Channel;
use crate::domain::send_rate::Lane;
use crate::error::{DependencyError, FailureClass};
use crate::ports::{FlowMark, SendTimeline};

/// Busy and idle forms alternate at most this often in one take (each refusal says which form
/// holds now; the timeline can only flip back if time passes a slot in between).
const TRIES: usize = 4;

/// The key of `channel`'s timeline.
pub fn timeline_key(channel: Channel) -> String {
    format!("send-rate/{channel}")
}

pub struct SendTimelineStore {
    client: Client,
    table: String,
    key: String,
    /// The `next_us` the last take left (what predicts the form of the next).
    last_next_us: AtomicI64,
}

/// What a lane's takes left on the item.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaneFlow {
    pub slots: u64,
    pub at_ms: Option<i64>,
    pub oldest_enqueued_ms: Option<i64>,
}

/// A channel's timeline as on-call reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Flow {
    pub next_us: Option<i64>,
    pub rate: Option<f64>,
    pub lanes: BTreeMap<Lane, LaneFlow>,
}

impl Flow {
    /// How many of `lane`'s slots had fallen due by `at_us`: a take reserves slots ahead of their
    /// time (a bulk batch's up to the timeline's end; a transactional one's from now).
    pub fn due_by(&self, lane: Lane, at_us: i64) -> f64 {
        let slots = self.lanes.get(&lane).map_or(0, |flow| flow.slots) as f64;
        let ahead = match (lane, self.next_us, self.rate) {
            (Lane::Bulk, Some(next_us), Some(rate)) => ((next_us - at_us).max(0) as f64 / 1e6 * rate).min(slots),
            _ => 0.0,
        };
        slots - ahead
    }
}

fn number(item: &Item, name: &str) -> Option<f64> {
    match item.get(name) {
        Some(AttributeValue::N(value)) => value.parse().ok(),
        _ => None,
    }
}

impl SendTimelineStore {
    pub fn new(client: Client, table: impl Into<String>, channel: Channel) -> Self {
        Self { client, table: table.into(), key: timeline_key(channel), last_next_us: AtomicI64::new(i64::MIN) }
    }

    /// The channel's timeline and its lanes' marks (strongly consistent).
    pub async fn flow(&self) -> Result<Flow, DependencyError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("key", string(&self.key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| classify("dynamodb", "GetItem", error, &[]))?;
        let item = output.item.unwrap_or_default();
        let lanes = Lane::ALL
            .into_iter()
            .map(|lane| {
                let flow = LaneFlow {
                    slots: number(&item, &format!("{lane}_slots")).unwrap_or(0.0) as u64,
                    at_ms: number(&item, &format!("{lane}_at_ms")).map(|at| at as i64),
                    oldest_enqueued_ms: number(&item, &format!("{lane}_oldest_ms")).map(|at| at as i64),
                };
                (lane, flow)
            })
            .collect();
        Ok(Flow { next_us: number(&item, "next_us").map(|next| next as i64), rate: number(&item, "rate"), lanes })
    }

    /// One take in the `busy` or idle form: the first slot taken, or the item that refused it.
    async fn take_in_form(
        &self,
        busy: bool,
        span_us: i64,
        now_us: i64,
        mark: &FlowMark,
    ) -> Result<Result<i64, Item>, DependencyError> {
        let lane = mark.lane;
        let mut names = HashMap::from([
            ("#next".to_string(), "next_us".to_string()),
            ("#rate".to_string(), "rate".to_string()),
            ("#slots".to_string(), format!("{lane}_slots")),
            ("#at".to_string(), format!("{lane}_at_ms")),
        ]);
        let mut values = HashMap::from([
            (":now".to_string(), AttributeValue::N(now_us.to_string())),
            (":rate".to_string(), AttributeValue::N(mark.rate.per_second().to_string())),
            (":count".to_string(), AttributeValue::N(mark.slots.to_string())),
            (":at".to_string(), AttributeValue::N((now_us / 1000).to_string())),
        ]);
        let mut sets = vec!["#rate = :rate".to_string(), "#at = :at".to_string()];
        if let Some(oldest) = mark.oldest_enqueued_ms {
            names.insert("#oldest".into(), format!("{lane}_oldest_ms"));
            values.insert(":oldest".into(), AttributeValue::N(oldest.to_string()));
            sets.push("#oldest = :oldest".into());
        }
        let condition = if busy {
            values.insert(":span".into(), AttributeValue::N(span_us.to_string()));
            sets.push("#next = #next + :span".into());
            "#next >= :now"
        } else {
            values.insert(":end".into(), AttributeValue::N((now_us + span_us).to_string()));
            sets.push("#next = :end".into());
            "attribute_not_exists(#next) OR #next < :now"
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("key", string(&self.key))
            .update_expression(format!("SET {} ADD #slots :count", sets.join(", ")))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::UpdatedOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(output) if busy => {
                let old = output.attributes.as_ref().and_then(|old| number(old, "next_us"));
                Ok(Ok(old.map_or(now_us, |old| old as i64)))
            }
            Ok(_) => Ok(Ok(now_us)),
            Err(error) => match error.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(refused)) => {
                    Ok(Err(refused.item.clone().unwrap_or_default()))
                }
                _ => Err(classify("dynamodb", "UpdateItem", error, &[])),
            },
        }
    }
}

impl SendTimeline for SendTimelineStore {
    async fn take(&self, span_us: i64, now_us: i64, mark: FlowMark) -> Result<i64, DependencyError> {
        let mut busy = self.last_next_us.load(Ordering::Relaxed) >= now_us;
        for _ in 0..TRIES {
            match self.take_in_form(busy, span_us, now_us, &mark).await? {
                Ok(first_free) => {
                    self.last_next_us.store(first_free + span_us, Ordering::Relaxed);
                    return Ok(first_free);
                }
                Err(found) => busy = number(&found, "next_us").is_some_and(|next| next as i64 >= now_us),
            }
        }
        Err(DependencyError {
            class: FailureClass::Transient,
            service: "dynamodb",
            operation: "UpdateItem",
            code: "SendTimelineContended".into(),
            message: format!("the send timeline {} refused {TRIES} takes in a row", self.key),
        })
    }
}
