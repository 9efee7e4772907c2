//! Publishing the event stream (`domain::event_stream`): the notifications table's stream →
//! the stack's EventBridge bus, at least once, put in stream order (a notification's writes are
//! in one shard; consumers order by each event's `sequence`, as EventBridge does not promise
//! delivery order).
//!
//! A batch of stream records is published in order. When the bus refuses (an outage, a
//! throttle, a missing grant), the batch reports the first record not published as its failure
//! and Lambda reads the stream again from there: events wait, in order, and nothing that sends
//! waits for them. A record still unpublished after the retry window has its events parked in
//! the events DLQ (alarmed), and the stream moves on: the table's stream keeps a record 24 hours,
//! the DLQ 14 days, and `{"action": "redrive"}` puts them on the bus once it is back.

use std::future::Future;

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;

use crate::aws::classify;
use crate::domain::event_stream::{EventType, NotificationEvent, SOURCE};
use crate::error::{DependencyError, FailureClass};
use crate::metrics::{EventMetric, events};

/// Most entries one PutEvents takes.
const ENTRIES_PER_PUT: usize = 10;
/// Most messages one SendMessageBatch takes.
const MESSAGES_PER_BATCH: usize = 10;

/// One event as the bus takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct BusEntry {
    pub detail_type: String,
    /// The detail, as JSON text (a parked event's DLQ message body).
    pub detail: String,
}

impl BusEntry {
    pub fn of(event: &NotificationEvent) -> Self {
        Self { detail_type: event.detail_type(), detail: serde_json::to_string(event).expect("an event serializes") }
    }

    /// A parked event, from its DLQ message body (anything else, such as a note naming a record
    /// that could not be read, is not an event).
    pub fn parked(body: &str) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Typed {
            #[serde(rename = "type")]
            kind: EventType,
        }
        let typed: Typed = serde_json::from_str(body).map_err(|error| format!("not an event: {error}"))?;
        Ok(Self { detail_type: typed.kind.detail_type(), detail: body.to_string() })
    }
}

/// Entries the bus did not take: from `first` on (those before it were put).
#[derive(Debug)]
pub struct Unpublished {
    pub first: usize,
    pub error: DependencyError,
}

/// The bus (port).
pub trait EventSink: Send + Sync {
    /// Puts `entries` in order; stops at the first the bus does not take.
    fn put(&self, entries: &[BusEntry]) -> impl Future<Output = Result<(), Unpublished>> + Send;
}

/// Where events wait past the retry window (port).
pub trait EventParking: Send + Sync {
    fn park(&self, entries: &[BusEntry]) -> impl Future<Output = Result<(), DependencyError>> + Send;
}

/// One stream record: where it is in the stream, when it was written and what it published,
/// or why it cannot be read (naming the record).
#[derive(Clone, Debug)]
pub struct StreamChange {
    pub sequence_number: String,
    pub written_ms: i64,
    pub entries: Result<Vec<BusEntry>, String>,
}

pub struct Publisher<S, P> {
    sink: S,
    parking: P,
    retry_window_ms: i64,
}

impl<S: EventSink, P: EventParking> Publisher<S, P> {
    pub fn new(sink: S, parking: P, retry_window_ms: i64) -> Self {
        Self { sink, parking, retry_window_ms }
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn parking(&self) -> &P {
        &self.parking
    }

    fn expired(&self, change: &StreamChange, now_ms: i64) -> bool {
        now_ms - change.written_ms >= self.retry_window_ms
    }

    /// Publishes a batch of stream records in order. `Some(sequence number)`: the first record
    /// not (wholly) published nor parked, from which the stream is read again.
    ///
    /// A record this function cannot read (most likely written by a newer version of the
    /// writers, deployed before this function) waits like one the bus refused, so the function's
    /// update publishes it; past the retry window a note naming it is parked instead (it is not
    /// an event: a redrive leaves it for on-call, who rebuild its events from the record).
    pub async fn publish(&self, changes: &[StreamChange], now_ms: i64) -> Option<String> {
        let mut start = 0;
        loop {
            let end = changes[start..]
                .iter()
                .position(|change| change.entries.is_err())
                .map_or(changes.len(), |at| start + at);
            if let Some(retry_from) = self.publish_readable(&changes[start..end], now_ms).await {
                return Some(retry_from);
            }
            let unreadable = changes.get(end)?;
            let reason = unreadable.entries.as_ref().err().cloned().unwrap_or_default();
            tracing::error!(sequence_number = %unreadable.sequence_number, reason = %reason, "a stream record this function cannot read waits");
            events(EventMetric::PublishFailures, 1);
            let note = BusEntry {
                detail_type: "unreadable".into(),
                detail: serde_json::json!({"unreadable_record": {"sequence_number": unreadable.sequence_number, "reason": reason}}).to_string(),
            };
            if !self.expired(unreadable, now_ms) || self.parking.park(&[note]).await.is_err() {
                return Some(unreadable.sequence_number.clone());
            }
            start = end + 1;
        }
    }

    /// [`Self::publish`] for records that were all read.
    async fn publish_readable(&self, changes: &[StreamChange], now_ms: i64) -> Option<String> {
        // Every entry with the index of its record, in stream order.
        let entries: Vec<(usize, &BusEntry)> = changes
            .iter()
            .enumerate()
            .flat_map(|(record, change)| change.entries.iter().flatten().map(move |entry| (record, entry)))
            .collect();
        let flat: Vec<BusEntry> = entries.iter().map(|(_, entry)| (*entry).clone()).collect();
        let Err(unpublished) = self.sink.put(&flat).await else {
            events(EventMetric::Published, flat.len());
            return None;
        };
        events(EventMetric::Published, unpublished.first);
        events(EventMetric::PublishFailures, 1);
        let failed_record = entries[unpublished.first].0;
        // Records are in write order: the expired ones are the first few.
        let retried_from = (failed_record..changes.len())
            .find(|&record| !self.expired(&changes[record], now_ms))
            .unwrap_or(changes.len());
        tracing::warn!(
            error = %unpublished.error,
            published = unpublished.first,
            waiting = flat.len() - unpublished.first,
            "the bus did not take the events: they wait in the stream"
        );
        if retried_from > failed_record {
            let parked_end = entries.iter().position(|(record, _)| *record >= retried_from).unwrap_or(entries.len());
            let parked = &flat[unpublished.first..parked_end];
            if let Err(error) = self.parking.park(parked).await {
                tracing::error!(error = %error, "events past the retry window could not be parked: they wait in the stream");
                return Some(changes[failed_record].sequence_number.clone());
            }
            events(EventMetric::Parked, parked.len());
            tracing::error!(
                parked = parked.len(),
                retry_window_ms = self.retry_window_ms,
                "events unpublished past the retry window are parked in the events DLQ (redrive them once the bus is back)"
            );
        }
        changes.get(retried_from).map(|change| change.sequence_number.clone())
    }
}

/// The stack's EventBridge bus.
pub struct EventBridgeBus {
    client: aws_sdk_eventbridge::Client,
    bus_name: String,
}

impl EventBridgeBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus_name: impl Into<String>) -> Self {
        Self { client, bus_name: bus_name.into() }
    }
}

impl EventSink for EventBridgeBus {
    async fn put(&self, entries: &[BusEntry]) -> Result<(), Unpublished> {
        for (chunk_index, chunk) in entries.chunks(ENTRIES_PER_PUT).enumerate() {
            let offset = chunk_index * ENTRIES_PER_PUT;
            let request: Vec<PutEventsRequestEntry> = chunk
                .iter()
                .map(|entry| {
                    PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus_name)
                        .source(SOURCE)
                        .detail_type(&entry.detail_type)
                        .detail(&entry.detail)
                        .build()
                })
                .collect();
            let output =
                self.client.put_events().set_entries(Some(request)).send().await.map_err(|error| Unpublished {
                    first: offset,
                    error: classify("events", "PutEvents", error, &[]),
                })?;
            // Results are in the order of the entries; a failed one has an error code.
            if let Some((index, failed)) =
                output.entries().iter().enumerate().find(|(_, result)| result.error_code().is_some())
            {
                let code = failed.error_code().unwrap_or_default().to_string();
                let class = if code.contains("Throttl") { FailureClass::Throttled } else { FailureClass::Transient };
                let message = failed.error_message().unwrap_or_default().to_string();
                let error = DependencyError { class, service: "events", operation: "PutEvents", code, message };
                return Err(Unpublished { first: offset + index, error });
            }
        }
        Ok(())
    }
}

/// The events DLQ: events unpublished past the retry window, one message each (the detail).
pub struct EventsDeadLetterQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

/// What a redrive of the events DLQ did.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct EventsRedriveReport {
    pub published: usize,
    /// Messages that are not events (left in the DLQ).
    pub unreadable: usize,
    /// Why it stopped before the DLQ was empty or `max` was reached (what it did stands).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
}

impl EventsDeadLetterQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Self { client, url: url.into() }
    }

    /// Puts up to `max` parked events on the bus, deleting each once the bus took it; stops
    /// at the first the bus refuses (it stays parked) or the first SQS error.
    pub async fn redrive(&self, sink: &impl EventSink, max: usize) -> EventsRedriveReport {
        let mut report = EventsRedriveReport::default();
        if let Err(error) = self.redrive_into(sink, max, &mut report).await {
            report.stopped = Some(error.to_string());
        }
        events(EventMetric::Published, report.published);
        report
    }

    async fn redrive_into(
        &self,
        sink: &impl EventSink,
        max: usize,
        report: &mut EventsRedriveReport,
    ) -> Result<(), DependencyError> {
        while report.published + report.unreadable < max {
            let wanted = (max - report.published - report.unreadable).min(MESSAGES_PER_BATCH) as i32;
            let received = self
                .client
                .receive_message()
                .queue_url(&self.url)
                .max_number_of_messages(wanted)
                // A short poll can answer empty while messages remain.
                .wait_time_seconds(1)
                .send()
                .await
                .map_err(|error| classify("sqs", "ReceiveMessage", error, &[]))?;
            let messages = received.messages.unwrap_or_default();
            if messages.is_empty() {
                return Ok(());
            }
            let mut readable = Vec::new();
            for message in &messages {
                match BusEntry::parked(message.body().unwrap_or_default()) {
                    Ok(entry) => readable.push((entry, message.receipt_handle().unwrap_or_default().to_string())),
                    Err(reason) => {
                        tracing::error!(reason = %reason, "a message in the events DLQ is not an event: left there");
                        report.unreadable += 1;
                    }
                }
            }
            let entries: Vec<BusEntry> = readable.iter().map(|(entry, _)| entry.clone()).collect();
            let put = sink.put(&entries).await;
            let published = put.as_ref().err().map_or(readable.len(), |unpublished| unpublished.first);
            let handles: Vec<String> = readable[..published].iter().map(|(_, handle)| handle.clone()).collect();
            crate::queue::delete_messages(&self.client, &self.url, &handles).await?;
            report.published += published;
            put.map_err(|unpublished| unpublished.error)?;
        }
        Ok(())
    }
}

impl EventParking for EventsDeadLetterQueue {
    async fn park(&self, entries: &[BusEntry]) -> Result<(), DependencyError> {
        for chunk in entries.chunks(MESSAGES_PER_BATCH) {
            let batch: Vec<SendMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .map(|(index, entry)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .message_body(&entry.detail)
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            let output = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(batch))
                .send()
                .await
                .map_err(|error| classify("sqs", "SendMessageBatch", error, &[]))?;
            if let Some(failed) = output.failed.first() {
                return Err(DependencyError {
                    class: FailureClass::Transient,
                    service: "sqs",
                    operation: "SendMessageBatch",
                    code: failed.code.clone(),
                    message: failed.message.clone().unwrap_or_default(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A bus that takes `takes` entries, then refuses until told otherwise.
    struct Bus {
        takes: Mutex<usize>,
        taken: Mutex<Vec<BusEntry>>,
    }

    impl Bus {
        fn taking(takes: usize) -> Self {
            Self { takes: Mutex::new(takes), taken: Mutex::new(Vec::new()) }
        }
    }

    impl EventSink for Bus {
        async fn put(&self, entries: &[BusEntry]) -> Result<(), Unpublished> {
            let mut takes = self.takes.lock().unwrap();
            let taking = entries.len().min(*takes);
            *takes -= taking;
            self.taken.lock().unwrap().extend_from_slice(&entries[..taking]);
            if taking == entries.len() {
                return Ok(());
            }
            let error = DependencyError {
                class: FailureClass::Transient,
                service: "events",
                operation: "PutEvents",
                code: "InternalException".into(),
                message: "down".into(),
            };
            Err(Unpublished { first: taking, error })
        }
    }

    #[derive(Default)]
    struct Parking {
        parked: Mutex<Vec<BusEntry>>,
    }

    impl EventParking for Parking {
        async fn park(&self, entries: &[BusEntry]) -> Result<(), DependencyError> {
            self.parked.lock().unwrap().extend_from_slice(entries);
            Ok(())
        }
    }

    fn entry(name: &str) -> BusEntry {
        BusEntry { detail_type: "notification.sent".into(), detail: format!(r#"{{"type":"sent","id":"{name}"}}"#) }
    }

    fn change(sequence: &str, written_ms: i64, names: &[&str]) -> StreamChange {
        StreamChange {
            sequence_number: sequence.into(),
            written_ms,
            entries: Ok(names.iter().map(|name| entry(name)).collect()),
        }
    }

    const WINDOW: i64 = 60_000;
    const NOW: i64 = 1_000_000;

    #[tokio::test]
    async fn a_batch_the_bus_takes_is_done() {
        let publisher = Publisher::new(Bus::taking(usize::MAX), Parking::default(), WINDOW);
        let changes = [change("1", NOW, &["a", "b"]), change("2", NOW, &["c"])];
        assert_eq!(publisher.publish(&changes, NOW).await, None);
        assert_eq!(publisher.sink.taken.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn a_refusal_within_the_window_is_read_again_from_the_first_record_not_published() {
        let publisher = Publisher::new(Bus::taking(2), Parking::default(), WINDOW);
        let changes = [change("1", NOW, &["a"]), change("2", NOW, &["b", "c"]), change("3", NOW, &["d"])];
        assert_eq!(publisher.publish(&changes, NOW).await.as_deref(), Some("2"));
        assert!(publisher.parking.parked.lock().unwrap().is_empty(), "nothing parked within the window");
    }

    #[tokio::test]
    async fn records_past_the_window_are_parked_and_the_stream_moves_on_to_the_rest() {
        let publisher = Publisher::new(Bus::taking(1), Parking::default(), WINDOW);
        let old = NOW - WINDOW;
        let changes = [change("1", old, &["a", "b"]), change("2", old, &["c"]), change("3", NOW, &["d"])];
        assert_eq!(publisher.publish(&changes, NOW).await.as_deref(), Some("3"), "the fresh record waits");
        let parked: Vec<BusEntry> = publisher.parking.parked.lock().unwrap().clone();
        assert_eq!(parked, [entry("b"), entry("c")]);
        let all_old = [change("1", old, &["a"]), change("2", old, &["b"])];
        let publisher = Publisher::new(Bus::taking(0), Parking::default(), WINDOW);
        assert_eq!(publisher.publish(&all_old, NOW).await, None, "all parked: nothing to read again");
    }

    #[tokio::test]
    async fn an_unreadable_record_waits_then_a_note_naming_it_is_parked_and_the_rest_goes_on() {
        let unreadable = |written_ms| StreamChange {
            sequence_number: "2".into(),
            written_ms,
            entries: Err("notification n-2: unknown variant `new_kind`".into()),
        };
        let publisher = Publisher::new(Bus::taking(usize::MAX), Parking::default(), WINDOW);
        let fresh = [change("1", NOW, &["a"]), unreadable(NOW), change("3", NOW, &["c"])];
        assert_eq!(publisher.publish(&fresh, NOW).await.as_deref(), Some("2"), "it waits for a function that reads it");
        assert_eq!(publisher.sink.taken.lock().unwrap().clone(), [entry("a")]);
        let old = [unreadable(NOW - WINDOW), change("3", NOW, &["c"])];
        assert_eq!(publisher.publish(&old, NOW).await, None);
        assert_eq!(publisher.sink.taken.lock().unwrap().clone(), [entry("a"), entry("c")]);
        let parked = publisher.parking.parked.lock().unwrap().clone();
        assert_eq!(parked.len(), 1);
        assert!(parked[0].detail.contains("n-2"), "{parked:?}");
        assert!(BusEntry::parked(&parked[0].detail).is_err(), "a note is not an event: a redrive leaves it");
    }

    #[test]
    fn a_parked_event_reads_back_as_the_entry_it_was() {
        let entry = entry("a");
        assert_eq!(BusEntry::parked(&entry.detail).unwrap(), entry);
        assert!(BusEntry::parked("not json").is_err());
    }
}
