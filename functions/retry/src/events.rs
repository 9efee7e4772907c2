//! The event-stream function (`publish-events`), two jobs:
//! - the notifications table's stream (its event-source mapping): publishes the events each
//!   write committed (`notify::event_stream`), reporting the first record not published so
//!   Lambda reads the stream again from there;
//! - `{"action": "redrive", "max": 500}` (on demand): puts the events parked in the events DLQ
//!   on the bus, once it is back.

use aws_config::SdkConfig;
use aws_lambda_events::dynamodb::{Event as StreamEvent, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use lambda_runtime::{Error, LambdaEvent};
use notify::config::{ConfigError, EnvSource, Settings};
use notify::domain::event_stream::{PublishedTypes, changes};
use notify::domain::notification::NotificationRecord;
use notify::event_stream::{
    BusEntry, EventBridgeBus, EventsDeadLetterQueue, EventsRedriveReport, Publisher, StreamChange,
};
use serde::{Deserialize, Serialize};

/// Most parked events one redrive puts back when `max` is not given.
pub const DEFAULT_REDRIVE_MAX: usize = 500;

#[derive(Debug, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    Redrive {
        #[serde(default)]
        max: Option<usize>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Request {
    Action(Action),
    Stream(StreamEvent),
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Report {
    Stream(DynamoDbEventResponse),
    Redrive(EventsRedriveReport),
}

pub struct PublishEvents {
    publisher: Publisher<EventBridgeBus, EventsDeadLetterQueue>,
    published: PublishedTypes,
}

impl PublishEvents {
    /// Settings: `EVENT_BUS_NAME`, `EVENTS_DLQ_URL`, `EVENTS_RETRY_WINDOW_SECONDS`, `EVENT_TYPES`.
    pub fn load(sdk: &SdkConfig, env: &dyn EnvSource) -> Result<Self, ConfigError> {
        let mut settings = Settings::new(env);
        let bus = settings.required("EVENT_BUS_NAME");
        let dead_letter_url = settings.required("EVENTS_DLQ_URL");
        let retry_window_seconds: i64 = settings.parsed_or("EVENTS_RETRY_WINDOW_SECONDS", 3_600);
        let published = settings.parsed_or("EVENT_TYPES", PublishedTypes::all());
        settings.finish()?;
        let bus = EventBridgeBus::new(aws_sdk_eventbridge::Client::new(sdk), bus);
        let dead_letters = EventsDeadLetterQueue::new(aws_sdk_sqs::Client::new(sdk), dead_letter_url);
        Ok(Self { publisher: Publisher::new(bus, dead_letters, retry_window_seconds * 1000), published })
    }
}

/// The events one stream record committed of the types published (none for a deletion: TTL
/// expiry), or why its images cannot be read as notification records (naming the notification).
fn change(record: &EventRecord, published: &PublishedTypes) -> StreamChange {
    let read = |image: &serde_dynamo::Item| -> Result<Option<NotificationRecord>, String> {
        if image.is_empty() {
            return Ok(None);
        }
        serde_dynamo::from_item(image.clone()).map(Some).map_err(|error| {
            let id = record.change.keys.get("id").map(|id| format!("{id:?}")).unwrap_or_default();
            format!("notification {id}: {error}")
        })
    };
    let entries = read(&record.change.new_image).and_then(|after| {
        let before = read(&record.change.old_image)?;
        let Some(after) = after else { return Ok(Vec::new()) };
        let events = changes(before.as_ref(), &after);
        Ok(events.iter().filter(|event| published.allows(event.kind)).map(BusEntry::of).collect())
    });
    StreamChange {
        sequence_number: record.change.sequence_number.clone().unwrap_or_default(),
        written_ms: record.change.approximate_creation_date_time.timestamp_millis(),
        entries,
    }
}

impl notify::function::Function for PublishEvents {
    type Event = Request;
    type Output = Report;

    async fn handle(&self, event: LambdaEvent<Request>) -> Result<Report, Error> {
        match event.payload {
            Request::Stream(stream) => {
                let records: Vec<StreamChange> =
                    stream.records.iter().map(|record| change(record, &self.published)).collect();
                let retry_from = self.publisher.publish(&records, notify::time::now_epoch_millis()).await;
                let mut response = DynamoDbEventResponse::default();
                if let Some(sequence) = retry_from {
                    let mut failure = DynamoDbBatchItemFailure::default();
                    failure.item_identifier = Some(sequence);
                    response.batch_item_failures.push(failure);
                }
                Ok(Report::Stream(response))
            }
            Request::Action(Action::Redrive { max }) => {
                let report =
                    self.publisher.parking().redrive(self.publisher.sink(), max.unwrap_or(DEFAULT_REDRIVE_MAX)).await;
                tracing::info!(report = ?report, "events redrive finished");
                Ok(Report::Redrive(report))
            }
        }
    }
}
