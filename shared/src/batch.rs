//! The one SQS batch helper. Each record is parsed on its own, inside its own task and span,
//! so a malformed body fails only itself (its caller decides what becomes of it); records run
//! concurrently; the response lists only the records that should come back (Lambda deletes the
//! rest).

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use std::future::Future;
use tracing::Instrument;

/// A parsed record.
#[derive(Debug)]
pub struct SqsRecord<T> {
    pub message_id: String,
    pub receipt_handle: String,
    /// How many times SQS has handed this message out, this time included (≥ 1).
    pub receive_count: u32,
    /// The queue it came from (its ARN).
    pub source: String,
    /// The body as received (what a DLQ gets).
    pub raw_body: String,
    pub body: T,
}

/// A record whose body could not be read.
#[derive(Debug)]
pub struct Unreadable {
    pub message_id: String,
    pub raw_body: String,
    pub reason: String,
}

/// What becomes of one record's message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Finished (successfully or for good): the message is deleted.
    Done,
    /// Should be tried again: the message is reported as a batch item failure.
    Retry,
}

/// When the oldest message of `event` was enqueued (epoch ms, SQS's SentTimestamp).
pub fn oldest_enqueued_ms(event: &SqsEvent) -> Option<i64> {
    event.records.iter().filter_map(|record| record.attributes.get("SentTimestamp")?.parse().ok()).min()
}

/// Handles every record of `event` with at most `concurrency` in flight: `handle` the readable
/// ones, `unreadable` the others.
pub async fn process<T, F, Fut, U, UFut>(
    event: SqsEvent,
    concurrency: usize,
    handle: F,
    unreadable: U,
) -> SqsBatchResponse
where
    T: DeserializeOwned,
    F: Fn(SqsRecord<T>) -> Fut,
    Fut: Future<Output = Disposition>,
    U: Fn(Unreadable) -> UFut,
    UFut: Future<Output = Disposition>,
{
    let (handle, unreadable) = (&handle, &unreadable);
    let outcomes: Vec<(String, Disposition)> = futures::stream::iter(event.records)
        .map(|message| {
            let message_id = message.message_id.clone().unwrap_or_default();
            let span = tracing::info_span!("sqs_record", message_id = %message_id);
            async move {
                let outcome = match parse(message) {
                    Ok(record) => handle(record).await,
                    Err(record) => {
                        tracing::error!(reason = %record.reason, "unreadable message");
                        unreadable(record).await
                    }
                };
                (message_id, outcome)
            }
            .instrument(span)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;

    let mut response = SqsBatchResponse::default();
    for (message_id, outcome) in outcomes {
        if outcome == Disposition::Retry && !message_id.is_empty() {
            response.add_failure(message_id);
        }
    }
    response
}

fn parse<T: DeserializeOwned>(message: SqsMessage) -> Result<SqsRecord<T>, Unreadable> {
    let message_id = message.message_id.unwrap_or_default();
    let raw_body = message.body.unwrap_or_default();
    let parsed = match serde_json::from_str(&raw_body) {
        Ok(parsed) => parsed,
        Err(error) => {
            let reason = format!("the body is not a valid message: {error}");
            return Err(Unreadable { message_id, raw_body, reason });
        }
    };
    Ok(SqsRecord {
        message_id,
        receipt_handle: message.receipt_handle.unwrap_or_default(),
        receive_count: message
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|count| count.parse().ok())
            .unwrap_or(1),
        source: message.event_source_arn.unwrap_or_default(),
        raw_body,
        body: parsed,
    })
}

/// What the callers without a DLQ of their own do with an unreadable record: report it, so the
/// queue's redrive policy moves it to the DLQ after its receives, where on-call can read it.
pub async fn left_for_the_dlq(_: Unreadable) -> Disposition {
    Disposition::Retry
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Job {
        fail: bool,
    }

    fn event(bodies: &[&str]) -> SqsEvent {
        serde_json::from_value(serde_json::json!({
            "Records": bodies.iter().enumerate().map(|(index, body)| serde_json::json!({
                "messageId": format!("m{index}"),
                "receiptHandle": format!("r{index}"),
                "body": body,
                "attributes": {"ApproximateReceiveCount": "3"},
                "messageAttributes": {},
                "eventSource": "aws:sqs"
            })).collect::<Vec<_>>()
        }))
        .unwrap()
    }

    fn failed_ids(response: &SqsBatchResponse) -> Vec<String> {
        let mut ids: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        ids.sort();
        ids
    }

    #[tokio::test]
    async fn only_records_that_ask_for_a_retry_are_reported() {
        let response = process(
            event(&[r#"{"fail":false}"#, r#"{"fail":true}"#]),
            4,
            |record: SqsRecord<Job>| async move {
                assert_eq!(record.receive_count, 3);
                if record.body.fail { Disposition::Retry } else { Disposition::Done }
            },
            left_for_the_dlq,
        )
        .await;
        assert_eq!(failed_ids(&response), vec!["m1"]);
    }

    #[tokio::test]
    async fn a_malformed_body_fails_only_itself() {
        let response = process(
            event(&["not json", r#"{"fail":false}"#, r#"{"other":1}"#]),
            2,
            |_: SqsRecord<Job>| async { Disposition::Done },
            left_for_the_dlq,
        )
        .await;
        assert_eq!(failed_ids(&response), vec!["m0", "m2"]);

        let parked = std::sync::Mutex::new(Vec::new());
        let response = process(
            event(&["not json", r#"{"fail":false}"#]),
            2,
            |_: SqsRecord<Job>| async { Disposition::Done },
            |unreadable| {
                parked.lock().unwrap().push(unreadable.raw_body);
                async { Disposition::Done }
            },
        )
        .await;
        assert!(failed_ids(&response).is_empty());
        assert_eq!(*parked.lock().unwrap(), vec!["not json"], "the caller's own handling, with the body as received");
    }
}
