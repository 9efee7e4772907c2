//! The SQS event-source mapping, emulated with Lambda's semantics: gather up to `BatchSize`
//! messages within the batching window, invoke the function with the SQS event, then
//! - with `ReportBatchItemFailures`: delete every message except the reported ones; a response
//!   that is not a valid batch response, or names a message not in the batch, fails the batch;
//! - without it: delete the batch if the invocation succeeded;
//! - on an error, timeout or crash: delete nothing.
//!
//! Messages not deleted come back after the queue's visibility timeout; the emulator's own
//! redrive policy moves them to the DLQ after maxReceiveCount receives.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::functions::LocalFunction;
use crate::spec::SqsMapping;

/// Pollers per mapping: Lambda scales up to MaximumConcurrency; locally a few show the
/// concurrency (and its races) without flooding the emulator. A mapping without a maximum
/// gets one poller, which keeps batches deterministic for tests of the emulation itself.
const LOCAL_POLLERS_CAP: u32 = 3;

/// How long one receive waits for messages. A poller stopped mid-receive leaves the receive
/// running at the emulator this long: messages arriving meanwhile are taken and hidden for the
/// queue's visibility timeout, as a crashed consumer's would be.
pub const LONG_POLL: Duration = Duration::from_secs(1);

/// Where a mapping reads from.
#[derive(Clone, Debug)]
pub struct Source {
    pub queue_url: String,
    pub queue_arn: String,
    pub region: String,
}

pub fn pollers(mapping: &SqsMapping) -> u32 {
    mapping.maximum_concurrency.map_or(1, |maximum| maximum.clamp(1, LOCAL_POLLERS_CAP))
}

/// One poller: runs until its task is aborted.
pub async fn run(sqs: aws_sdk_sqs::Client, function: Arc<LocalFunction>, mapping: SqsMapping, source: Source) {
    loop {
        match gather(&sqs, &mapping, &source).await {
            Ok(batch) if batch.is_empty() => {}
            Ok(batch) => invoke(&sqs, &function, &mapping, &source, batch).await,
            Err(error) => {
                tracing::warn!(queue = %source.queue_url, error = %error, "receiving failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

async fn gather(sqs: &aws_sdk_sqs::Client, mapping: &SqsMapping, source: &Source) -> Result<Vec<Message>, String> {
    let mut batch = Vec::new();
    let window_ends = Instant::now() + mapping.batching.window;
    loop {
        let wanted = (mapping.batching.size as usize - batch.len()).min(10) as i32;
        // Long-poll briefly, so an ended window is noticed.
        let received = sqs
            .receive_message()
            .queue_url(&source.queue_url)
            .max_number_of_messages(wanted)
            .wait_time_seconds(LONG_POLL.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|error| aws_sdk_sqs::error::DisplayErrorContext(error).to_string())?;
        batch.extend(received.messages.unwrap_or_default());
        if batch.len() >= mapping.batching.size as usize || Instant::now() >= window_ends {
            return Ok(batch);
        }
    }
}

/// The SQS event Lambda sends for a batch.
pub fn event(batch: &[Message], source: &Source) -> Value {
    let records: Vec<Value> = batch
        .iter()
        .map(|message| {
            let attributes: HashMap<String, String> = message
                .attributes
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(name, value)| (name.as_str().to_string(), value))
                .collect();
            let message_attributes: serde_json::Map<String, Value> = message
                .message_attributes
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(name, value)| {
                    (
                        name,
                        json!({
                            "stringValue": value.string_value,
                            "binaryValue": value.binary_value.map(|blob| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, blob.as_ref())),
                            "stringListValues": [],
                            "binaryListValues": [],
                            "dataType": value.data_type,
                        }),
                    )
                })
                .collect();
            json!({
                "messageId": message.message_id,
                "receiptHandle": message.receipt_handle,
                "body": message.body,
                "attributes": attributes,
                "messageAttributes": message_attributes,
                "md5OfBody": message.md5_of_body,
                "eventSource": "aws:sqs",
                "eventSourceARN": source.queue_arn,
                "awsRegion": source.region,
            })
        })
        .collect();
    json!({ "Records": records })
}

/// Which messages of the batch to delete after an invocation's result.
pub fn to_delete<'a>(mapping: &SqsMapping, batch: &'a [Message], result: &Result<Value, String>) -> Vec<&'a Message> {
    let Ok(output) = result else { return Vec::new() };
    if !mapping.batching.report_batch_item_failures {
        return batch.iter().collect();
    }
    let ids: HashSet<&str> = batch.iter().filter_map(|message| message.message_id.as_deref()).collect();
    let failures = match output.get("batchItemFailures") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.clone(),
        Some(_) => return Vec::new(),
    };
    let mut failed = HashSet::new();
    for failure in &failures {
        match failure.get("itemIdentifier").and_then(Value::as_str) {
            Some(id) if ids.contains(id) => {
                failed.insert(id.to_string());
            }
            // An empty, missing or foreign identifier fails the whole batch.
            _ => return Vec::new(),
        }
    }
    batch.iter().filter(|message| !failed.contains(message.message_id.as_deref().unwrap_or_default())).collect()
}

async fn invoke(
    sqs: &aws_sdk_sqs::Client,
    function: &LocalFunction,
    mapping: &SqsMapping,
    source: &Source,
    batch: Vec<Message>,
) {
    let result = function.invoke(event(&batch, source)).await.map_err(|error| error.to_string());
    if let Err(error) = &result {
        tracing::warn!(function = %function.logical_id, messages = batch.len(), error = %error, "batch failed; every message returns after the visibility timeout");
    }
    let receipts: Vec<String> =
        to_delete(mapping, &batch, &result).into_iter().filter_map(|message| message.receipt_handle.clone()).collect();
    if let Err(error) = notify::queue::delete_messages(sqs, &source.queue_url, &receipts).await {
        tracing::warn!(queue = %source.queue_url, error = %error, "deleting processed messages failed; they will be redelivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Batching;

    fn mapping(report: bool) -> SqsMapping {
        SqsMapping {
            event_name: "E".into(),
            queue: "Q".into(),
            batching: Batching { size: 10, window: Duration::ZERO, report_batch_item_failures: report },
            maximum_concurrency: None,
        }
    }

    fn batch() -> Vec<Message> {
        ["a", "b", "c"]
            .iter()
            .map(|id| Message::builder().message_id(*id).receipt_handle(format!("r-{id}")).build())
            .collect()
    }

    fn ids(messages: Vec<&Message>) -> Vec<&str> {
        messages.iter().filter_map(|message| message.message_id.as_deref()).collect()
    }

    #[test]
    fn reported_failures_are_kept_and_the_rest_deleted() {
        let batch = batch();
        let result = Ok(json!({"batchItemFailures": [{"itemIdentifier": "b"}]}));
        assert_eq!(ids(to_delete(&mapping(true), &batch, &result)), vec!["a", "c"]);
        assert_eq!(ids(to_delete(&mapping(true), &batch, &Ok(json!({"batchItemFailures": []})))), vec!["a", "b", "c"]);
        assert_eq!(ids(to_delete(&mapping(true), &batch, &Ok(Value::Null))), vec!["a", "b", "c"]);
    }

    #[test]
    fn errors_and_invalid_responses_keep_the_whole_batch() {
        let batch = batch();
        assert!(to_delete(&mapping(true), &batch, &Err("boom".into())).is_empty());
        assert!(
            to_delete(&mapping(true), &batch, &Ok(json!({"batchItemFailures": [{"itemIdentifier": "zzz"}]})))
                .is_empty()
        );
        assert!(
            to_delete(&mapping(true), &batch, &Ok(json!({"batchItemFailures": [{"itemIdentifier": ""}]}))).is_empty()
        );
        assert!(to_delete(&mapping(true), &batch, &Ok(json!({"batchItemFailures": "nope"}))).is_empty());
        assert!(to_delete(&mapping(false), &batch, &Err("boom".into())).is_empty());
    }

    #[test]
    fn without_partial_responses_success_deletes_everything() {
        let batch = batch();
        let result = Ok(json!({"batchItemFailures": [{"itemIdentifier": "b"}]}));
        assert_eq!(ids(to_delete(&mapping(false), &batch, &result)), vec!["a", "b", "c"]);
    }
}
